"""The inversion problem an experiment file defines: models, acquisition, wavelet, device.

Exactly as the seed page builds it (DESIGN §6):

* models: a Marmousi2 preset (``load_marmousi(name)[::k, ::k]``) or a .npy file, decimated
  by ``k = model.decimate`` and optionally cropped to ``[z0:z1, x0:x1]``; dh = dh0 * k with
  dh0 = ``model.dh`` or 12.5 m;
* sources at x = ``linspace(nx*a, nx*b, nshots).astype(int64)`` (``[a, b] = src_span``),
  z = ``src_z``; receivers at x = ``linspace(0, nx-1, nrec).astype(int64)``, z = ``rec_z``,
  the same spread for every shot;
* wavelet ``ricker(t - delay, freq)`` with ``t = arange(nt, float32) * dt``.

Everything that depends on the model size (crop, depths, source span, CFL), the .npy files
(missing, unreadable, not a 2D numeric array, NaN/Inf or non-positive velocities), the
wavelet (peak frequency above Nyquist, delay past the record) and the size of the observed
record (more than the host's memory) is checked here and reported as a
:class:`~fwi_cli.errors.ConfigError` naming the file and key. Too few grid points per
wavelength is a :class:`~fwi_cli.errors.FwiWarning` (also kept in ``Problem.warnings``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fwi_cli.datasets import MARMOUSI_DH, load_marmousi
from fwi_cli.equations import Acoustic
from fwi_cli.errors import ConfigError, FwiWarning
from fwi_cli.experiment.config import ExperimentConfig
from fwi_cli.experiment.matrix import Job
from fwi_cli.propagator import BoundaryOptions, MemoryOptions, Propagator
from fwi_cli.propagator import grid as fd_grid
from fwi_cli.signal import ricker


@dataclass
class Problem:
    """Arrays of one experiment (numpy, host memory).

    Attributes:
        vp_true: (nz, nx) float32 true velocity, m/s.
        vp_init: (nz, nx) float32 starting velocity, m/s.
        dh: grid spacing, m.  dt: time step, s.  nt: steps.
        spatial_order, pml_width: stencil order and CPML cells.
        sources: (nshots, 2) int64 [x, z].  receivers: (nshots, nrec, 2) int64 [x, z].
        wavelet: (nt,) float32.
        device: compute device.
        warnings: messages of the FwiWarnings raised while building it.
    """

    vp_true: np.ndarray
    vp_init: np.ndarray
    dh: float
    dt: float
    nt: int
    spatial_order: int
    pml_width: int
    sources: np.ndarray
    receivers: np.ndarray
    wavelet: np.ndarray
    device: torch.device
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.vp_true.shape)  # type: ignore[return-value]

    def rmse(self, vp: np.ndarray) -> float:
        """Model RMSE against the true model, m/s: sqrt(mean((vp - vp_true)^2))."""
        return float(np.sqrt(np.mean((vp - self.vp_true) ** 2)))


def resolve_device(spec: str, where: str = "<config>") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda[:N]`` must exist.

    Raises:
        ConfigError: CUDA asked for but not available (or index out of range).
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: device: {spec} asked for but CUDA is not available; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{where}: device: {spec} asked for but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return dev


def _find_file(cfg: ExperimentConfig, key: str, value: str) -> Path:
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [p, Path(cfg.path).parent / p]
    for c in candidates:
        if c.is_file():
            return c
    raise cfg.error(f"model.{key}", f"no such .npy file: {value} (relative paths are tried "
                    "from the working directory, then from the experiment file's folder)")


def _load_one(cfg: ExperimentConfig, key: str) -> np.ndarray:
    m = cfg.model
    value = getattr(m, key)
    if m.dataset == "marmousi":
        arr = load_marmousi(value)
    else:
        path = _find_file(cfg, key, value)
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # not .npy, truncated, pickled objects, unreadable
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise cfg.error(f"model.{key}", f"cannot read {path} as a .npy array ({why}); "
                            "save the model with numpy.save") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            if hasattr(arr, "close"):
                arr.close()
            raise cfg.error(f"model.{key}", f"{path} is an .npz archive, not one .npy array; "
                            "save the (nz, nx) model with numpy.save")
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise cfg.error(f"model.{key}", f"{path} must hold a 2D (nz, nx) real numeric array, "
                            f"got shape {arr.shape} dtype {arr.dtype}")
        if min(arr.shape) < 1:
            raise cfg.error(f"model.{key}", f"{path} holds an empty array of shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float32)[:: m.decimate, :: m.decimate]
    if m.crop is not None:
        z0, z1, x0, x1 = m.crop
        nz, nx = arr.shape
        if z1 > nz or x1 > nx:
            raise cfg.error("model.crop", f"{list(m.crop)} reaches outside the decimated model "
                            f"of (nz, nx) = ({nz}, {nx})")
        arr = arr[z0:z1, x0:x1]
    arr = arr.copy()
    bad = ~np.isfinite(arr)
    if bad.any():
        z, x = (int(i) for i in np.argwhere(bad)[0])
        raise cfg.error(f"model.{key}", f"velocities must be finite (m/s): {int(bad.sum())} "
                        f"NaN/Inf value(s), the first at [z, x] = [{z}, {x}]")
    if float(arr.min()) <= 0:
        z, x = (int(i) for i in np.unravel_index(int(np.argmin(arr)), arr.shape))
        raise cfg.error(f"model.{key}", f"velocities must be positive (m/s): min "
                        f"{float(arr.min()):g} at [z, x] = [{z}, {x}]")
    return arr


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_sizes(cfg: ExperimentConfig) -> None:
    """Refuse an observed record larger than the host's memory (before allocating it)."""
    acq, g = cfg.acquisition, cfg.grid
    need = acq.nshots * acq.nrec * (4 * g.nt + 16)  # the record and the receiver indices
    have = _host_memory_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"{cfg.path}: acquisition.nshots x grid.nt x acquisition.nrec = {acq.nshots} x "
            f"{g.nt} x {acq.nrec}: the observed record needs {need / 2**30:.3g} GiB, more than "
            f"this machine's {have / 2**30:.3g} GiB of memory; use fewer shots, steps or receivers"
        )


def _check_wavelet(cfg: ExperimentConfig) -> None:
    g, src = cfg.grid, cfg.source
    nyquist = 0.5 / g.dt
    bad = []
    if src.freq >= nyquist:
        bad.append(f"source.freq: {src.freq:g} Hz is at or above the Nyquist frequency "
                   f"1/(2 grid.dt) = {nyquist:g} Hz; lower it or lower grid.dt")
    if src.delay >= g.nt * g.dt:
        bad.append(f"source.delay: {src.delay:g} s is past the end of the record "
                   f"(grid.nt x grid.dt = {g.nt * g.dt:g} s)")
    if bad:
        raise ConfigError(f"{cfg.path}: " + "; ".join(bad))


def build_problem(cfg: ExperimentConfig, device: torch.device | None = None) -> Problem:
    """Build the problem of an experiment file.

    Args:
        cfg: a validated configuration.
        device: overrides ``cfg.device`` when given.

    Raises:
        ConfigError: a file is missing or not a 2D array of finite positive velocities,
            the crop or a depth lies outside the model, sources fall outside it, the models
            differ in shape, dt violates the CFL limit, the wavelet is above Nyquist or
            delayed past the record, or the observed record would not fit in memory.

    Warns:
        FwiWarning: too few grid points per wavelength (the message gives the figure).
    """
    _check_sizes(cfg)
    _check_wavelet(cfg)
    vp_true = _load_one(cfg, "true")
    vp_init = _load_one(cfg, "init")
    if vp_true.shape != vp_init.shape:
        raise cfg.error("model.init", f"shape {vp_init.shape} differs from the true model's "
                        f"{vp_true.shape}")
    nz, nx = vp_true.shape
    acq, g = cfg.acquisition, cfg.grid
    bad = []
    if acq.src_z >= nz:
        bad.append(f"acquisition.src_z: {acq.src_z} lies below the model (nz = {nz})")
    if acq.rec_z >= nz:
        bad.append(f"acquisition.rec_z: {acq.rec_z} lies below the model (nz = {nz})")
    src_x = np.linspace(nx * acq.src_span[0], nx * acq.src_span[1], acq.nshots).astype(np.int64)
    if src_x.max() >= nx:
        bad.append(f"acquisition.src_span: {list(acq.src_span)} puts a source at x = "
                   f"{int(src_x.max())}, outside the model (nx = {nx}); use b < 1")
    if bad:
        raise ConfigError(f"{cfg.path}: " + "; ".join(bad))
    dh = (cfg.model.dh or MARMOUSI_DH) * cfg.model.decimate
    if not np.isfinite(dh):
        raise cfg.error("model.dh", f"model.dh x model.decimate = {dh:g} m is not a usable spacing")
    vmax = float(max(vp_true.max(), vp_init.max()))
    limit = fd_grid.cfl_limit(g.spatial_order, dh, vmax)
    if g.dt > limit:
        raise cfg.error("grid.dt", f"{g.dt:g} s is above the CFL limit {limit:.4g} s "
                        f"(vmax {vmax:.0f} m/s, dh {dh:g} m, order {g.spatial_order}); lower dt")
    rec_x = np.linspace(0, nx - 1, acq.nrec).astype(np.int64)
    sources = np.stack([src_x, np.full(acq.nshots, acq.src_z, dtype=np.int64)], 1)
    receivers = np.repeat(
        np.stack([rec_x, np.full(acq.nrec, acq.rec_z, dtype=np.int64)], 1)[None], acq.nshots, 0
    )
    t = np.arange(g.nt, dtype=np.float32) * g.dt
    wavelet = ricker(t - cfg.source.delay, f=cfg.source.freq)
    if not np.all(np.isfinite(wavelet)) or not np.any(wavelet):
        raise cfg.error("source", f"the Ricker wavelet (freq {cfg.source.freq:g} Hz, delay "
                        f"{cfg.source.delay:g} s) is zero or not finite on this time axis")
    vmin = float(min(vp_true.min(), vp_init.min()))
    notes = []
    msg = fd_grid.dispersion_warning(g.spatial_order, dh, vmin,
                                     fd_grid.useful_max_frequency(wavelet, g.dt))
    if msg is not None:
        notes.append(f"{cfg.path}: {msg}")
        warnings.warn(notes[-1], FwiWarning, stacklevel=2)
    return Problem(
        vp_true=vp_true, vp_init=vp_init, dh=float(dh), dt=g.dt, nt=g.nt,
        spatial_order=g.spatial_order, pml_width=g.pml_width, sources=sources,
        receivers=receivers, wavelet=wavelet,
        device=device if device is not None else resolve_device(cfg.device, cfg.path),
        warnings=notes,
    )


def memory_options(cfg: ExperimentConfig, job: Job, disk_dir: str | None = None) -> MemoryOptions:
    """The MemoryOptions of a job (the seed's ``mem_cfg``; strategy from ``memory.strategy``).

    Args:
        cfg: the experiment.
        job: which storage tier and dtype.
        disk_dir: directory for the disk tier when ``memory.disk_dir`` is null.
    """
    m = cfg.memory
    if m.strategy == "full":
        return MemoryOptions(strategy="full")
    return MemoryOptions(
        strategy="boundary",
        boundary=BoundaryOptions(
            storage=job.storage, storage_dtype=job.dtype, transfer_interval=m.transfer_interval,
            pinned_memory=m.pinned_memory, disk_dir=m.disk_dir if m.disk_dir else disk_dir,
        ),
    )


def make_propagator(problem: Problem, impl: str, memory: MemoryOptions | None = None) -> Propagator:
    """A fresh Propagator for the problem (one per job, as in the seed)."""
    return Propagator(
        Acoustic(device=problem.device, spatial_order=problem.spatial_order),
        shape=problem.shape, dh=problem.dh, dt=problem.dt, nt=problem.nt,
        pml_width=problem.pml_width, impl=impl, memory=memory,
    )


def observed_hash(cfg: ExperimentConfig, problem: Problem) -> str:
    """Hash of everything that defines the observed data.

    The model/grid/source/acquisition sections of the config and the true model's bytes
    (so an edited .npy file also counts); not the inversion, memory, matrix or device.
    """
    parts = {
        "model": {k: v for k, v in cfg.model.model_dump(mode="json").items() if k != "init"},
        "grid": cfg.grid.model_dump(mode="json"),
        "source": cfg.source.model_dump(mode="json"),
        "acquisition": cfg.acquisition.model_dump(mode="json"),
        "vp_true_sha256": hashlib.sha256(np.ascontiguousarray(problem.vp_true).tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def job_hash(cfg: ExperimentConfig, job: Job, obs_hash: str) -> str:
    """Hash of everything that defines a job's result.

    The whole config except its name, output folder, matrix and the memory options that
    change only speed (transfer interval, pinning, disk folder), plus the job and the
    observed data's hash. A complete store with another hash is redone by a sweep.
    """
    d = cfg.resolved()
    for k in ("name", "output_dir", "matrix"):
        d.pop(k, None)
    d["memory"] = {"strategy": d["memory"]["strategy"]}  # the rest changes speed, not results
    d["job"] = [job.impl, job.storage, job.dtype]
    d["observed"] = obs_hash
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
