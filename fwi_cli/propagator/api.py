"""The public propagator: ``Propagator(equation, shape, dh, dt, nt, ...)(wavelet, sources, receivers, models)``.

It validates every argument before any work, pads the model into the CPML, builds the
coefficients of :mod:`fwi_cli.propagator.grid`, and hands the time stepping to an
implementation: ``impl="eager"`` (pure PyTorch, autograd) or ``impl="c"`` (compiled C++/CUDA
kernels with a hand-written adjoint, built on first use).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fwi_cli.equations import Acoustic
from fwi_cli.errors import FwiArgumentError
from fwi_cli.propagator import grid
from fwi_cli.propagator.options import EagerOptions, MemoryOptions
from fwi_cli.signal import dominant_frequency

IMPLS = ("c", "eager")


@dataclass
class MemoryReport:
    """Bytes held for the gradient of the last call (filled by the implementation).

    Attributes:
        strategy: "full" or "boundary".
        storage, storage_dtype: the ring's tier and dtype (boundary strategy).
        ring_bytes: bytes of the saved boundary ring (codes plus scales).
        frame_bytes: bytes of the saved seed frames (fp32).
        snapshot_bytes: bytes of saved interior history (full strategy).
        record_bytes: bytes of the returned record.
        device_ring_bytes: the part of ``ring_bytes`` held in compute-device memory.
        extra: implementation-specific figures.
    """

    strategy: str = "full"
    storage: str | None = None
    storage_dtype: str | None = None
    ring_bytes: int = 0
    frame_bytes: int = 0
    snapshot_bytes: int = 0
    record_bytes: int = 0
    device_ring_bytes: int = 0
    extra: dict = field(default_factory=dict)


class Propagator:
    """2D acoustic finite-difference propagator with CPML, differentiable in the velocity.

    Args:
        equation: an :class:`~fwi_cli.equations.Acoustic` (device, spatial order).
        shape: (nz, nx) interior grid.
        dh: grid spacing (m).
        dt: time step (s); checked against the CFL limit at each call.
        nt: number of time steps.
        pml_width: CPML cells on each side (default 50); at least spatial_order / 2.
        impl: "c" (compiled kernels) or "eager" (pure PyTorch).
        memory: how the gradient's state is kept (default: boundary saving, gpu, fp32).
        eager_options: options of the eager implementation.
        pml_freq: frequency (Hz) of the CPML frequency shift alpha = pi f; None takes the
            dominant frequency of the first call's (first shot's) wavelet and keeps it.
    """

    def __init__(
        self,
        equation: Acoustic,
        shape: tuple[int, int],
        dh: float,
        dt: float,
        nt: int,
        pml_width: int = 50,
        impl: str = "c",
        memory: MemoryOptions | None = None,
        eager_options: EagerOptions | None = None,
        pml_freq: float | None = None,
    ) -> None:
        if not isinstance(equation, Acoustic):
            raise FwiArgumentError(f"equation must be an Acoustic(...), got {type(equation).__name__}")
        if len(tuple(shape)) != 2 or min(int(s) for s in shape) < 1:
            raise FwiArgumentError(f"shape must be (nz, nx) with positive sizes, got {shape!r}")
        if not (np.isfinite(dh) and dh > 0):
            raise FwiArgumentError(f"dh must be a positive grid spacing in metres, got {dh!r}")
        if not (np.isfinite(dt) and dt > 0):
            raise FwiArgumentError(f"dt must be a positive time step in seconds, got {dt!r}")
        if int(nt) != nt or nt < 1:
            raise FwiArgumentError(f"nt must be a positive number of time steps, got {nt!r}")
        n_half = grid.half_width(equation.spatial_order)
        if int(pml_width) != pml_width or pml_width < n_half:
            raise FwiArgumentError(
                f"pml_width must be an integer >= spatial_order/2 = {n_half}, got {pml_width!r}"
            )
        if impl not in IMPLS:
            raise FwiArgumentError(f"impl must be one of {IMPLS}, got {impl!r}")
        if memory is not None and not isinstance(memory, MemoryOptions):
            raise FwiArgumentError("memory must be a MemoryOptions(...)")
        self.equation = equation
        self.device = torch.device(equation.device)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dh, self.dt, self.nt = float(dh), float(dt), int(nt)
        self.pml_width = int(pml_width)
        self.impl = impl
        self.memory = memory if memory is not None else MemoryOptions()
        self.eager_options = eager_options if eager_options is not None else EagerOptions()
        self.pml_freq = pml_freq
        self.geometry = grid.Geometry(self.shape[0], self.shape[1], self.pml_width, n_half)
        self.last_memory = MemoryReport(strategy=self.memory.strategy)

    @property
    def spatial_order(self) -> int:
        return self.equation.spatial_order

    def cfl_limit(self, vmax: float) -> float:
        """Largest stable dt (s) for a model whose maximum velocity is ``vmax``."""
        return grid.cfl_limit(self.spatial_order, self.dh, vmax)

    # ------------------------------------------------------------------ inputs
    def _prepare(self, wavelet, sources, receivers, models):
        if not isinstance(models, (list, tuple)) or len(models) != 1:
            raise FwiArgumentError("models must be a list holding one velocity tensor: models=[vp]")
        v = models[0]
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(np.asarray(v, dtype=np.float32), device=self.device)
        if v.device != self.device and not (v.device.type == self.device.type == "cuda" and self.device.index is None):
            raise FwiArgumentError(
                f"velocity model is on {v.device} but the equation's device is {self.device}; "
                "move the model or build Acoustic(device=...) to match"
            )
        if v.dtype not in (torch.float32, torch.float64):
            raise FwiArgumentError(f"velocity model must be float32 (or float64 for eager), got {v.dtype}")
        if v.dtype == torch.float64 and self.impl != "eager":
            raise FwiArgumentError("float64 velocity models are supported by impl='eager' only")
        grid.check_model(v, self.shape)
        vmax = float(v.detach().max())
        grid.check_cfl(self.dt, self.spatial_order, self.dh, vmax)

        src = grid.as_index_array(sources, "source", 2)
        rec = grid.as_index_array(receivers, "receiver", 3)
        nz, nx = self.shape
        grid.check_inside(src, "source", nz, nx)
        grid.check_inside(rec, "receiver", nz, nx)
        b = src.shape[0]
        if rec.shape[0] != b:
            raise FwiArgumentError(
                f"receiver batch size {rec.shape[0]} does not match source batch size {b}: "
                "receivers must be (B, R, 2) with one row of receivers per shot"
            )
        if b < 1 or rec.shape[1] < 1:
            raise FwiArgumentError("need at least one source and one receiver per shot")

        w = wavelet.detach().cpu().numpy() if isinstance(wavelet, torch.Tensor) else np.asarray(wavelet)
        if w.ndim == 1:
            w = np.broadcast_to(w, (b, w.shape[0]))
        if w.ndim != 2 or w.shape[0] != b:
            raise FwiArgumentError(f"wavelet must be (nt,) or (B, nt) with B = {b}, got shape {w.shape}")
        if w.shape[1] < self.nt:
            raise FwiArgumentError(f"wavelet has {w.shape[1]} samples but nt = {self.nt}; give at least nt samples")
        if not np.all(np.isfinite(w)):
            raise FwiArgumentError("wavelet contains NaN or Inf values")
        w = np.array(w[:, : self.nt], dtype=np.float64, copy=True)
        if self.pml_freq is None:
            # Frozen at the first call, so the operator stays linear in the wavelet and a
            # shot's record does not depend on the batch it is in.
            self.pml_freq = dominant_frequency(w[0], self.dt) or 1.0 / (self.nt * self.dt)
        f_pml = self.pml_freq

        g = self.geometry
        ax, bx = grid.cpml_profile(nx, g.pml, self.dh, self.dt, vmax, f_pml)
        az, bz = grid.cpml_profile(nz, g.pml, self.dh, self.dt, vmax, f_pml)
        src_flat = torch.from_numpy(grid.flat_index(src, g.pml, g.nxp)).to(self.device)[:, None]
        rec_flat = torch.from_numpy(grid.flat_index(rec, g.pml, g.nxp)).to(self.device)
        w_t = torch.from_numpy(w).to(device=self.device, dtype=v.dtype)
        v_pad = grid.pad_model(v, g.pml)
        v2dt2 = (v_pad * self.dt) ** 2
        return v, v2dt2, w_t, src_flat, rec_flat, (ax, bx, az, bz)

    # ------------------------------------------------------------------ call
    def __call__(self, wavelet, sources, receivers, models) -> torch.Tensor:
        """Model the data of a batch of shots.

        Args:
            wavelet: (nt,) or (B, nt) source time function (same for every shot if 1D).
            sources: (B, 2) int grid indices [x, z].
            receivers: (B, R, 2) int grid indices [x, z].
            models: [vp] with vp (nz, nx) m/s on the equation's device.

        Returns:
            (B, nt, R, 1) float32 record on the model's device, differentiable in vp.
        """
        v, v2dt2, w, src_flat, rec_flat, cpml = self._prepare(wavelet, sources, receivers, models)
        needs_grad = torch.is_grad_enabled() and v.requires_grad
        if self.impl == "eager":
            from fwi_cli.propagator import eager_impl

            rec = eager_impl.run(self, v2dt2, w, src_flat, rec_flat, cpml, needs_grad)
        else:
            from fwi_cli.propagator import compiled

            rec = compiled.run(self, v, v2dt2, w, src_flat, rec_flat, cpml, needs_grad)
        self.last_memory.record_bytes = rec.element_size() * rec.nelement()
        return rec[..., None]

    def memory_report(self) -> MemoryReport:
        """Bytes held for the gradient of the last call (see :class:`MemoryReport`)."""
        return self.last_memory
