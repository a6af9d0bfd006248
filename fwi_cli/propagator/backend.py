"""Lazy loader of the compiled kernels (``kernels/*.cpp``, ``kernels/*.cu``).

The extension is built on first use with ``torch.utils.cpp_extension.load`` (ninja, cached
under ``TORCH_EXTENSIONS_DIR``, keyed by torch/CUDA version and a hash of the sources).
Importing fwi never needs a compiler; asking for ``impl="c"`` without one raises
:class:`~fwi_cli.errors.BackendUnavailableError` with the reason.

``python -m fwi_cli.propagator.backend --cuda-check`` compiles the CUDA sources with nvcc
(no GPU needed): the compile check CI runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import torch

from fwi_cli.errors import BackendUnavailableError

_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}


def kernel_dir() -> Path:
    """Directory holding the C++/CUDA sources."""
    here = Path(__file__).resolve()
    shared = Path(sys.prefix) / "share" / "fwi" / "kernels"  # non-editable installs
    for cand in (here.parents[2] / "kernels", here.parents[1] / "kernels", shared):
        if (cand / "fwi_ops.cpp").exists():
            return cand
    raise BackendUnavailableError(
        "compiled kernels not found (expected kernels/ next to the fwi_cli package); "
        "install fwi from a source checkout (pip install -e .) or use impl='eager'"
    )


def _sources(with_cuda: bool) -> list[Path]:
    d = kernel_dir()
    src = [d / "fwi_ops.cpp", d / "fwi_cpu.cpp", d / "fwi_codec.cpp"]
    if with_cuda:
        src += [d / "fwi_cuda_ops.cpp"] + sorted(d.glob("*.cu"))
    return src


def _digest(paths: list[Path], flags: list[str] | None = None) -> str:
    h = hashlib.sha1()
    for p in sorted(paths) + sorted(kernel_dir().glob("*.h")):
        h.update(p.read_bytes())
    h.update(torch.__version__.encode())
    h.update(" ".join(flags or []).encode())
    return h.hexdigest()[:10]


def _cuda_defines() -> list[str]:
    """Extra nvcc flags from ``FWI_CUDA_DEFINES`` (space-separated, e.g. ``-DFWI_MINB_MAIN=6``):
    a developer knob to build and measure kernel variants; part of the build's name."""
    return os.environ.get("FWI_CUDA_DEFINES", "").split()


def _cflags() -> list[str]:
    flags = ["-O3", "-fopenmp", "-std=c++17"]
    if os.environ.get("FWI_NATIVE", "1") == "1":
        flags.append("-march=native")
    return flags


def load(device: torch.device | str = "cpu"):
    """Build (once) and load the kernels for ``device``; returns ``torch.ops.fwi``.

    Raises:
        BackendUnavailableError: no C++ compiler / nvcc, or the build failed.
    """
    dev = torch.device(device)
    with_cuda = dev.type == "cuda"
    key = "cuda" if with_cuda else "cpu"
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if "cuda" in _LOADED:  # the CUDA build holds the CPU kernels too
            _LOADED[key] = _LOADED["cuda"]
            return _LOADED[key]
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            raise BackendUnavailableError(
                "impl='c' needs a C++ compiler to build its kernels, and none was found "
                "(install g++ or set CXX), or use impl='eager'"
            )
        if with_cuda and not torch.cuda.is_available():
            raise BackendUnavailableError("impl='c' on a CUDA device, but torch sees no CUDA device")
        try:
            from torch.utils import cpp_extension
        except Exception as exc:  # pragma: no cover - torch without cpp_extension
            raise BackendUnavailableError(f"torch.utils.cpp_extension unavailable: {exc}") from exc
        sources = _sources(with_cuda)
        name = f"fwi_kernels_{key}_{_digest(sources, _cuda_defines() if with_cuda else [])}"
        kwargs = dict(
            name=name,
            sources=[str(s) for s in sources],
            extra_cflags=_cflags() + (["-DFWI_WITH_CUDA"] if with_cuda else []),
            extra_ldflags=["-fopenmp"],
            extra_include_paths=[str(kernel_dir())],
            is_python_module=False,
            verbose=os.environ.get("FWI_BUILD_VERBOSE") == "1",
        )
        if with_cuda:
            kwargs["extra_cuda_cflags"] = ["-O3", "-DFWI_WITH_CUDA", "-lineinfo", "-std=c++17"] + _cuda_defines()
        try:
            cpp_extension.load(**kwargs)
        except Exception as exc:
            raise BackendUnavailableError(
                f"building the compiled kernels failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); "
                "set FWI_BUILD_VERBOSE=1 for the compiler log, or use impl='eager'"
            ) from exc
        _LOADED[key] = torch.ops.fwi
        return _LOADED[key]


def cuda_compile_check(out_dir: str | None = None) -> list[Path]:
    """Compile every ``kernels/*.cu`` file to an object file with nvcc (no GPU needed).

    Returns:
        Paths of the object files. Raises BackendUnavailableError when nvcc is missing or fails.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise BackendUnavailableError("nvcc not found: cannot compile-check the CUDA sources")
    d = kernel_dir()
    outs = []
    for src in sorted(d.glob("*.cu")):
        out = Path(out_dir or os.environ.get("TMPDIR", "/tmp")) / f"{src.stem}_check.o"
        cmd = [nvcc, "-c", str(src), "-o", str(out), "-std=c++17", "-O3",
               "-gencode=arch=compute_90,code=sm_90", "-Xcompiler", "-fPIC", f"-I{d}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BackendUnavailableError(f"nvcc failed on {src.name}:\n" + proc.stderr[-4000:])
        outs.append(out)
    return outs


if __name__ == "__main__":  # pragma: no cover - CLI helper
    if "--cuda-check" in sys.argv:
        print("compiled " + ", ".join(str(p) for p in cuda_compile_check()))
    else:
        load("cuda" if torch.cuda.is_available() else "cpu")
        print("kernels loaded")
