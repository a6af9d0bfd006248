"""The public propagator: ``Propagator(equation, shape, dh, dt, nt, ...)(wavelet, sources, receivers, models)``.

It validates every argument before any work, pads the model into the CPML, builds the
coefficients of :mod:`fwi_cli.propagator.grid`, and hands the time stepping to an
implementation: ``impl="eager"`` (pure PyTorch, autograd) or ``impl="c"`` (compiled C++/CUDA
kernels with a hand-written adjoint, built on first use).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from fwi_cli.equations import Acoustic
from fwi_cli.errors import DeviceMemoryError, FwiArgumentError, FwiWarning
from fwi_cli.propagator import grid
from fwi_cli.propagator.options import EagerOptions, MemoryOptions
from fwi_cli.signal import dominant_frequency

IMPLS = ("c", "eager")
#: float32 fields of the padded grid alive per shot while stepping (u^{n+1}, u^n, u^{n-1},
#: psi_x, psi_z, zeta_x, zeta_z and stencil temporaries); the adjoint holds as many again.
STATE_FIELDS = 8


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device or host allocation failure (CUDA OOM, MemoryError, torch's CPU
    allocator message)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def memory_estimate(prop: Propagator, batch: int, nrec: int, needs_grad: bool = True) -> dict:
    """Rough bytes one call of ``prop`` needs on its compute device (for error messages).

    Args:
        prop: the propagator.  batch: shots B.  nrec: receivers per shot R.
        needs_grad: whether the gradient is computed.

    Returns:
        dict of bytes: ``state`` (STATE_FIELDS padded float32 fields per shot, twice with a
        gradient), ``saved`` (what the gradient keeps on the device: the boundary ring in the
        gpu tier, two staging blocks in the cpu/disk tiers, nt interior frames for strategy
        full), ``record`` (record, residual and its gradient), ``total``, ``per_shot`` and
        ``ring_int8`` (the saved ring in int8, for advice).
    """
    from fwi_cli.storage import ring_nbytes

    g = prop.geometry
    cells = g.nzp * g.nxp
    from fwi_cli.propagator.compiled import LANES

    # impl="c" on CUDA holds the state of whole quads of shots (fwi_cuda.cu, "Shots in lanes")
    lanes = LANES * -(-batch // LANES) if prop.impl == "c" and prop.device.type == "cuda" else batch
    state = 4 * STATE_FIELDS * cells * lanes * (2 if needs_grad else 1)
    saved, ring_int8 = 0, 0
    if needs_grad and prop.memory.strategy == "full":
        saved = 4 * prop.nt * batch * cells
    elif needs_grad:
        opts = prop.memory.boundary
        ring_int8 = ring_nbytes(prop.nt, batch, g.ring_cells, "int8")
        if opts.storage == "gpu":
            saved = ring_nbytes(prop.nt, batch, g.ring_cells, opts.storage_dtype)
        else:
            saved = 2 * ring_nbytes(min(opts.transfer_interval, prop.nt), batch, g.ring_cells,
                                    opts.storage_dtype)
        saved += 2 * 4 * batch * g.nz * g.nx  # the two seed frames
    record = 4 * batch * prop.nt * nrec * (3 if needs_grad else 1)
    total = state + saved + record
    return {"state": state, "saved": saved, "record": record, "total": total,
            "per_shot": total // max(batch, 1), "ring_int8": ring_int8}


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def out_of_memory_message(prop: Propagator, batch: int, nrec: int, cause: str = "",
                          extra_bytes: int = 0, needs_grad: bool = True) -> str:
    """The text of a :class:`~fwi_cli.errors.DeviceMemoryError`: the estimated need, what the
    device has, and what to change.

    Args:
        prop: the propagator.  batch, nrec: shots and receivers per shot of the call.
        cause: first line of the allocator's message.
        extra_bytes: other bytes the caller keeps on the device (e.g. observed data).
        needs_grad: whether the gradient was being computed.
    """
    est = memory_estimate(prop, batch, nrec, needs_grad)
    need = est["total"] + extra_bytes
    where = str(prop.device)
    have = ""
    if prop.device.type == "cuda":
        try:
            free, total = torch.cuda.mem_get_info(prop.device)
            have = f"; the device has {_gib(free)} free of {_gib(total)}"
        except RuntimeError:
            have = ""
    opts = prop.memory.boundary if prop.memory.strategy == "boundary" else None
    advice = [f"a smaller batch (about {_gib(est['per_shot'])} per shot)"]
    if opts is None:
        advice.append("strategy 'boundary' (keeps a boundary ring, not every frame)")
    else:
        if opts.storage == "gpu":
            advice.append("storage 'cpu' or 'disk' (keeps the boundary ring off the device)")
        if opts.storage_dtype != "int8":
            advice.append(f"storage dtype 'int8' (ring {_gib(est['ring_int8'])})")
    parts = (f"wavefields {_gib(est['state'])}, saved for the gradient {_gib(est['saved'])}, "
             f"records {_gib(est['record'])}"
             + (f", other {_gib(extra_bytes)}" if extra_bytes else ""))
    head = f"out of memory on {where}" + (f" ({cause})" if cause else "")
    return (f"{head}: {batch} shot(s) of a {prop.geometry.nzp} x {prop.geometry.nxp} padded "
            f"grid, nt = {prop.nt}, need about {_gib(need)} ({parts}){have}; try "
            + ", ".join(advice))


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
        device_frame_bytes: the part of ``frame_bytes`` held in compute-device memory (impl
            "c" keeps the frames in host memory with the cpu and disk tiers on CUDA).
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
    device_frame_bytes: int = 0
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

    Warns:
        FwiWarning: at the first call, when the grid has fewer points per shortest
            wavelength than the stencil needs (:func:`~fwi_cli.propagator.grid.dispersion_warning`).
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
        if impl == "c" and min(int(s) for s in shape) < 2 * n_half:
            raise FwiArgumentError(
                f"shape {tuple(shape)} is too small for impl='c' with spatial_order "
                f"{equation.spatial_order}: nz and nx must be at least {2 * n_half} cells"
            )
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
        self._dispersion_checked = False

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
        vmin, vmax = grid.check_model(v, self.shape)  # the one device-to-host sync of a call
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
        if not self._dispersion_checked:  # once: the figure depends on the first call's inputs
            self._dispersion_checked = True
            msg = grid.dispersion_warning(self.spatial_order, self.dh, vmin,
                                          grid.useful_max_frequency(w[0], self.dt))
            if msg is not None:
                warnings.warn(msg, FwiWarning, stacklevel=3)
        if self.pml_freq is None:
            # Frozen at the first call, so the operator stays linear in the wavelet and a
            # shot's record does not depend on the batch it is in.
            self.pml_freq = dominant_frequency(w[0], self.dt) or 1.0 / (self.nt * self.dt)
        f_pml = self.pml_freq

        g = self.geometry
        ax, bx = grid.cpml_profile(nx, g.pml, self.dh, self.dt, vmax, f_pml)
        az, bz = grid.cpml_profile(nz, g.pml, self.dh, self.dt, vmax, f_pml)
        # non-blocking: a copy from pageable host memory is staged before the call returns, and
        # the host need not wait for the device here (docs/internals.md, "Host syncs")
        src_flat = torch.from_numpy(grid.flat_index(src, g.pml, g.nxp)).to(self.device, non_blocking=True)[:, None]
        rec_flat = torch.from_numpy(grid.flat_index(rec, g.pml, g.nxp)).to(self.device, non_blocking=True)
        w_t = torch.from_numpy(w.astype(np.float32 if v.dtype == torch.float32 else np.float64)).to(
            self.device, non_blocking=True)
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

        Raises:
            FwiArgumentError: a bad argument (see the checks of each).
            DeviceMemoryError: the device (or host) ran out of memory in the forward pass;
                the message gives the estimated need and what to change.
        """
        v, v2dt2, w, src_flat, rec_flat, cpml = self._prepare(wavelet, sources, receivers, models)
        needs_grad = torch.is_grad_enabled() and v.requires_grad
        batch, nrec = int(src_flat.shape[0]), int(rec_flat.shape[1])
        oom = None
        try:
            if self.impl == "eager":
                from fwi_cli.propagator import eager_impl

                rec = eager_impl.run(self, v2dt2, w, src_flat, rec_flat, cpml, needs_grad)
            else:
                from fwi_cli.propagator import compiled

                rec = compiled.run(self, v, v2dt2, w, src_flat, rec_flat, cpml, needs_grad)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            oom = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if oom is not None:  # raised here, outside the handler, so the failed call's frames
            # (and the device memory they hold) are released first
            del v2dt2, w, src_flat, rec_flat, cpml
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise DeviceMemoryError(out_of_memory_message(
                self, batch, nrec, oom, needs_grad=needs_grad))
        self.last_memory.record_bytes = rec.element_size() * rec.nelement()
        return rec[..., None]

    def memory_report(self) -> MemoryReport:
        """Bytes held for the gradient of the last call (see :class:`MemoryReport`)."""
        return self.last_memory
