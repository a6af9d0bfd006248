"""``impl="c"``: the compiled kernels, their hand-written adjoint, and autograd.

Forward (``fwi::forward_steps``, in chunks of steps): the wavefield advances on the storage
grid (padded grid plus a zero halo of N cells, so stencils never test bounds), the record is
sampled every step, and what the gradient needs is kept:

* strategy "boundary": ring(u^n) every step, into a :class:`~fwi_cli.storage.base.RingStore`
  (tier and dtype from :class:`BoundaryOptions`), plus the final two interior frames in fp32;
* strategy "full": the interior L^n of every step (area x nt).

Backward (``fwi::backward_steps``, chunks in reverse): the exact transpose of the forward
runs through the whole padded grid, while (boundary strategy) the interior is rebuilt in
reverse time, u^{n-1} = 2u^n + V L^n + V f^n delta_src - u^{n+1}, from the seed frames and
the ring; dJ/dV = sum_n lam^{n+1} (L^n + f^n delta_src) on interior cells, V = (v dt)^2.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fwi_cli.errors import FwiError
from fwi_cli.propagator import backend, grid
from fwi_cli.propagator.grid import scaled_weights

GPU_CHUNK = 64  # steps per kernel call when the ring stays on the device
HOST_CHUNK = 64  # steps per kernel call for the cpu/disk tiers (they move K-step blocks inside)
GROUP_ENV = "FWI_SHOT_GROUP"  # "auto" (default), "off", or the most shots per group
L2_SHARE = 0.5  # on CUDA, a group's forward fields should fit in this share of the L2 cache
LANES = 4  # shots per float4 in the CUDA kernels (fwi_cuda.cu, "Shots in lanes")


class _Problem:
    """Device tensors and sizes shared by the forward and backward of one call."""

    def __init__(self, prop, v2dt2: torch.Tensor, w: torch.Tensor, src_flat: torch.Tensor,
                 rec_flat: torch.Tensor, cpml, lanes: bool | None = None) -> None:
        # lanes: the CUDA kernels' layout (default: on a CUDA device); tests force it on CPU
        g = prop.geometry
        self.n = g.n_half
        self.g = g
        self.nt = prop.nt
        self.dev = v2dt2.device
        n = self.n
        self.c2, self.c1 = scaled_weights(prop.spatial_order, prop.dh)
        self.c1 = [0.0] + self.c1
        # ax, bx (nxs), az, bz (nzs): the 1D profiles with n zeros each side, in one host array
        sizes = [len(a) + 2 * n for a in cpml]
        host = np.zeros(sum(sizes), np.float32)
        start = 0
        for a, size in zip(cpml, sizes, strict=True):
            host[start + n:start + size - n] = a
            start += size
        flat = torch.from_numpy(host).to(self.dev, non_blocking=True)  # one copy, no sync
        self.ax, self.bx, self.az, self.bz = torch.split(flat, sizes)
        self.w = w.to(torch.float32).contiguous()  # (B, nt)
        self.src = src_flat[:, 0].contiguous()  # (B,)
        self.rec = rec_flat.contiguous()  # (B, R)
        self.batch = int(w.shape[0])
        self.lanes = self.dev.type == "cuda" if lanes is None else bool(lanes)
        self.quads = -(-self.batch // LANES)
        self.nzs, self.nxs = g.nzp + 2 * n, g.nxp + 2 * n
        self.pml = g.pml

    # On CUDA the kernels keep four shots per float4 ("lanes", fwi_cuda.cu): every per-shot
    # field is (Q, rows, cols, LANES) with Q = ceil(B / LANES); on the CPU it is (B, rows, cols).

    def shot_field(self, rows: int, cols: int) -> torch.Tensor:
        """Zeros for one per-shot field of (rows, cols) cells, in the device's layout."""
        if self.lanes:
            shape = (self.quads, rows, cols, LANES)
        else:
            shape = (self.batch, rows, cols)
        return torch.zeros(shape, device=self.dev, dtype=torch.float32)

    def zeros_state(self) -> torch.Tensor:
        """Zeros for a wavefield or adjoint field on the storage grid (nzs, nxs)."""
        return self.shot_field(self.nzs, self.nxs)

    def zeros_strips(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeros for one x-strip field (nzs, 2W) and one z-strip field (2W, nxs) per shot.

        CPML auxiliary fields live only in their strips of width W = pml + 2N on each side
        (``fwi_common.h``), a fraction of the full grid.
        """
        w2 = 2 * (self.pml + 2 * self.n)
        return self.shot_field(self.nzs, w2), self.shot_field(w2, self.nxs)

    def per_shot(self, f: torch.Tensor) -> torch.Tensor:
        """(B, rows, cols) view (lanes: a copy) of a per-shot field in the device's layout."""
        if not self.lanes:
            return f
        q, rows, cols, _ = f.shape
        return f.permute(0, 3, 1, 2).reshape(LANES * q, rows, cols)[:self.batch]

    def set_per_shot(self, f: torch.Tensor, rows: slice, cols: slice, value: torch.Tensor) -> None:
        """Copy (B, r, c) ``value`` into the (rows, cols) window of per-shot field ``f``.

        ``value`` may be in (pinned) host memory: it crosses to the device in one contiguous,
        non-blocking copy, then spreads into the lanes there.
        """
        if not self.lanes:
            f[:, rows, cols].copy_(value, non_blocking=True)
            return
        value = value.to(f.device, non_blocking=True)
        for lane in range(LANES):
            part = value[lane::LANES]  # shots lane, lane + LANES, ...
            f[:part.shape[0], rows, cols, lane].copy_(part)

    def interior(self, f: torch.Tensor) -> torch.Tensor:
        """(B, nz, nx) interior of a storage-grid field (a view on the CPU, a copy with lanes)."""
        o = self.pml + self.n
        rows, cols = slice(o, o + self.g.nz), slice(o, o + self.g.nx)
        if self.lanes:
            return self.per_shot(f[:, rows, cols, :])
        return f[:, rows, cols]

    def chunk_steps(self, memory) -> int:
        if memory.strategy == "boundary" and memory.boundary.storage != "gpu":
            k = int(memory.boundary.transfer_interval)  # whole blocks: the store loads them ahead
            return k * -(-HOST_CHUNK // k)
        return GPU_CHUNK


def _empty(dev) -> torch.Tensor:
    return torch.empty(0, device=dev, dtype=torch.float32)


def _to_host(t: torch.Tensor, pinned: bool) -> torch.Tensor:
    """A host copy of device tensor ``t``; asynchronous (ordered on the current stream) when pinned."""
    h = torch.empty(t.shape, dtype=t.dtype, pin_memory=pinned)
    h.copy_(t, non_blocking=pinned)
    return h


def forward(lib, pb: _Problem, v2s: torch.Tensor, strategy: str | None, store=None, chunk: int = GPU_CHUNK,
            host_frames: bool = False, pinned: bool = True):
    """Run the forward pass.

    Args:
        lib: ``torch.ops.fwi``.
        pb: the problem.
        v2s: (nzs, nxs) (v dt)^2 on the storage grid (zero halo).
        strategy: None (no gradient), "boundary" or "full".
        store: the ring store (boundary strategy).
        chunk: steps per kernel call.
        host_frames: keep the seed frames in host memory (pinned when ``pinned``) instead of
            on the device (the cpu and disk tiers on a CUDA device).

    Returns:
        (record (B, nt, R), saved) where saved is the seed frames (boundary), the
        (nt, B, nz, nx) interior L (full) or None.
    """
    u, up = pb.zeros_state(), pb.zeros_state()
    psix, psiz = pb.zeros_strips()
    zx, zz = pb.zeros_strips()
    record = torch.empty(pb.batch, pb.nt, pb.rec.shape[1], device=pb.dev, dtype=torch.float32)
    ring = _empty(pb.dev)
    lap_all = _empty(pb.dev)
    # the kernels write the ring straight into the store when it keeps rings as they come
    direct = strategy == "boundary" and store.writable(0, min(chunk, pb.nt)) is not None
    if strategy == "boundary" and not direct:
        ring = torch.empty(chunk, pb.batch, pb.g.ring_cells, device=pb.dev, dtype=torch.float32)
    elif strategy == "full":
        lap_all = torch.empty(pb.nt, pb.batch, pb.g.nz, pb.g.nx, device=pb.dev, dtype=torch.float32)
    for n0 in range(0, pb.nt, chunk):
        t = min(chunk, pb.nt - n0)
        lap = lap_all[n0:n0 + t] if strategy == "full" else lap_all
        if direct:
            ring = store.writable(n0, t)  # (t, B, C)
        lib.forward_steps(v2s, pb.ax, pb.bx, pb.az, pb.bz, pb.w, pb.src, pb.rec, u, up, psix, psiz,
                          zx, zz, record, ring, lap, n0, t, pb.pml, pb.c2, pb.c1)
        if t % 2:
            u, up = up, u
        if strategy == "boundary" and not direct:
            store.put(n0, ring[:t])
    if strategy == "boundary":
        store.finish_forward()
        top = (pb.nt - 1) // chunk * chunk
        store.prefetch(top, pb.nt - top)  # the backward's first range: loads while the loss is formed
        frames = (pb.interior(u).contiguous(), pb.interior(up).contiguous())  # u^nt, u^{nt-1}
        if host_frames:
            frames = tuple(_to_host(f, pinned) for f in frames)
        return record, frames
    if strategy == "full":
        return record, lap_all
    return record, None


def backward(lib, pb: _Problem, v2s: torch.Tensor, grad_record: torch.Tensor, strategy: str, saved,
             store=None, chunk: int = GPU_CHUNK) -> torch.Tensor:
    """Run the adjoint; returns dJ/dV on the interior (nz, nx), summed over the shots.

    Args:
        grad_record: (B, nt, R) dJ/drecord.
        saved: a one-element list holding the seed frames (boundary) or the interior L
            history (full); emptied here so the seed frames are freed once copied.
    """
    n, nz, nx = pb.n, pb.g.nz, pb.g.nx
    lam, lp = pb.zeros_state(), pb.zeros_state()
    px, pz = pb.zeros_strips()
    zx, zz = pb.zeros_strips()
    # per shot on the CPU; on CUDA one plane per quad of shots (the kernels sum a quad's four)
    grad = torch.zeros((pb.quads if pb.lanes else pb.batch, nz, nx), device=pb.dev, dtype=torch.float32)
    gr = grad_record.to(torch.float32).contiguous()
    empty = _empty(pb.dev)
    saved = saved.pop()
    if strategy == "boundary":
        ua, ub = pb.shot_field(nz + 2 * n, nx + 2 * n), pb.shot_field(nz + 2 * n, nx + 2 * n)
        inner = slice(n, n + nz), slice(n, n + nx)
        pb.set_per_shot(ua, *inner, saved[0])  # the frames may be in host memory
        pb.set_per_shot(ub, *inner, saved[1])
        saved = None  # the frames now live in ua/ub
    else:
        ua = ub = empty
    starts = list(range(0, pb.nt, chunk))
    for n0 in reversed(starts):
        t = min(chunk, pb.nt - n0)
        if strategy == "boundary":
            ring, lap = store.get(n0, t).contiguous(), empty
        else:
            ring, lap = empty, saved[n0:n0 + t]
        lib.backward_steps(v2s, pb.ax, pb.bx, pb.az, pb.bz, pb.w, pb.src, pb.rec, gr, lam, lp, px, pz,
                           zx, zz, grad, ua, ub, ring, lap, n0, t, pb.pml, strategy == "boundary",
                           pb.c2, pb.c1)
        if strategy == "boundary" and n0 > 0:  # the next range loads while this one computes
            store.prefetch(n0 - chunk, chunk)
        if t % 2:
            lam, lp = lp, lam
            ua, ub = ub, ua
    return grad.sum(0)


def storage_v2(v: torch.Tensor, prop, n: int) -> torch.Tensor:
    """(nzs, nxs) (v dt)^2 on the storage grid (PML edge copies, zero halo), without autograd.

    The same operations as ``Propagator._prepare`` then the halo pad, so the same values.
    """
    with torch.no_grad():
        v2dt2 = (grid.pad_model(v.detach(), prop.geometry.pml) * prop.dt) ** 2
        return F.pad(v2dt2, (n, n, n, n)).contiguous()


class _CompiledFunction(torch.autograd.Function):
    """Autograd node of the compiled propagator: v (nz, nx) m/s -> record (B, nt, R).

    It saves only ``v`` (which the caller holds anyway): the backward rebuilds V = (v dt)^2 on
    the storage grid and applies the chain rule itself, dJ/dv = (dJ/dV (2 v dt)) dt on the
    interior (the PML holds constant copies of the edge), the products autograd would form.
    """

    @staticmethod
    def forward(ctx, v, v2s, prop, pb):  # noqa: D401 - autograd signature
        # v2s: (nzs, nxs) (v dt)^2 on the storage grid, detached (storage_v2)
        lib = backend.load(pb.dev)
        strategy = prop.memory.strategy
        chunk = pb.chunk_steps(prop.memory)
        store = None
        host_frames, pinned = False, True
        if strategy == "boundary":
            from fwi_cli.storage import make_ring_store

            bo = prop.memory.boundary
            store = make_ring_store(pb.nt, pb.batch, pb.g.ring_cells, pb.dev, bo, kernels=lib)
            # off-device tiers keep the seed frames off the device too
            host_frames, pinned = bo.storage != "gpu" and pb.dev.type == "cuda", bool(bo.pinned_memory)
        try:
            record, saved = forward(lib, pb, v2s, strategy, store, chunk, host_frames, pinned)
        except BaseException:
            if store is not None:
                store.close()
            raise
        ctx.lib, ctx.pb, ctx.strategy, ctx.saved, ctx.store, ctx.chunk = lib, pb, strategy, saved, store, chunk
        ctx.prop = prop
        ctx.save_for_backward(v)
        _report(prop, pb, strategy, store, saved)
        return record

    @staticmethod
    def backward(ctx, grad_record):
        (v,) = ctx.saved_tensors
        if ctx.saved is None:
            raise FwiError(
                "impl='c' computes the gradient of a forward call once (its saved state is freed "
                "by the first backward); call the propagator again instead of retain_graph=True"
            )
        box, ctx.saved = [ctx.saved], None
        dt = ctx.prop.dt
        try:
            v2s = storage_v2(v, ctx.prop, ctx.pb.n)
            g = backward(ctx.lib, ctx.pb, v2s, grad_record, ctx.strategy, box, ctx.store, ctx.chunk)
            with torch.no_grad():  # queued before the store's clean-up, which may take the host a while
                gv = (g * (2 * (v.detach() * dt))) * dt  # (nz, nx)
        finally:
            if ctx.store is not None:
                ctx.store.close()
        return gv, None, None, None


def _report(prop, pb: _Problem, strategy: str, store, saved) -> None:
    from fwi_cli.propagator.api import MemoryReport

    rep = MemoryReport(strategy=strategy)
    if strategy == "boundary":
        rep.storage = prop.memory.boundary.storage
        rep.storage_dtype = prop.memory.boundary.storage_dtype
        rep.ring_bytes = int(store.nbytes)
        rep.device_ring_bytes = int(store.device_nbytes)
        rep.frame_bytes = sum(f.element_size() * f.nelement() for f in saved)
        rep.device_frame_bytes = sum(f.element_size() * f.nelement() for f in saved if f.device == pb.dev)
    elif strategy == "full":
        rep.snapshot_bytes = saved.element_size() * saved.nelement()
    prop.last_memory = rep


def forward_bytes_per_shot(geometry) -> int:
    """Bytes one shot's forward state occupies: u^n and u^{n-1} on the storage grid plus
    the four CPML strip fields (see :meth:`_Problem.zeros_strips`)."""
    n = geometry.n_half
    nzs, nxs = geometry.nzp + 2 * n, geometry.nxp + 2 * n
    w2 = 2 * (geometry.pml + 2 * n)
    return 4 * (2 * nzs * nxs + 2 * (nzs + nxs) * w2)


def shot_group_size(prop, batch: int, device: torch.device, env=None) -> int:
    """The most shots one pass of the kernels steps together.

    A batch whose forward state overflows the GPU's L2 cache is stepped in groups, one
    forward (and later one backward) per group, because every time step streams the whole
    state: on an H200 (60 MB L2) the seed problem's 20 shots took 0.306 s per forward +
    gradient in one pass and 0.230 s as 10 + 10; the big case's 8 shots 0.620 s per iteration
    in one pass and 0.526 s as 4 + 4 (docs/benchmarks.md). The record is that of one pass, bit
    for bit; the gradient equals it up to the order of the fp32 sum over shots.

    ``FWI_SHOT_GROUP`` overrides the choice: ``auto`` (default: on CUDA, as many shots as fit
    in ``L2_SHARE`` of the L2 cache, rounded down to whole quads of four shots, at least one
    quad; on CPU, the whole batch), ``off`` (the
    whole batch), or a positive integer (at most that many shots per group, on any device).

    Raises:
        FwiArgumentError: ``FWI_SHOT_GROUP`` is none of these.
    """
    import os

    from fwi_cli.errors import FwiArgumentError

    value = (os.environ if env is None else env).get(GROUP_ENV, "auto").strip().lower()
    if value in ("", "auto"):
        if device.type != "cuda":
            return batch
        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
        if l2 <= 0:
            return batch
        size = max(1, min(batch, int(L2_SHARE * l2) // forward_bytes_per_shot(prop.geometry)))
        # whole quads of shots: the kernels step four at a time, so a smaller group holds (and
        # streams) a whole quad's state anyway
        return min(batch, max(LANES, size - size % LANES))
    if value == "off":
        return batch
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise FwiArgumentError(f"environment variable {GROUP_ENV}={value!r} must be 'auto', "
                               "'off' or a positive number of shots per group")
    return min(batch, size)


def group_slices(batch: int, size: int, multiple: int = 1) -> list[slice]:
    """``ceil(batch / size)`` contiguous groups of nearly equal sizes (the larger first).

    With ``multiple`` > 1 (a divisor of ``size``) every group but the last holds a multiple of
    that many shots: on CUDA the kernels step shots four at a time, so 20 shots in groups of
    at most 12 go as 12 + 8 rather than 10 + 10 (3 + 2 quads of shots instead of 3 + 3).
    """
    count = -(-batch // size)
    units = -(-batch // multiple)
    base, extra = divmod(units, count)
    out, start = [], 0
    for k in range(count):
        stop = min(batch, start + multiple * (base + (1 if k < extra else 0)))
        out.append(slice(start, stop))
        start = stop
    return out


def _merged_report(reports: list, sizes: list[int]):
    """One :class:`MemoryReport` for a call made of groups: byte counts add up."""
    merged = reports[0]
    for rep in reports[1:]:
        for name in ("ring_bytes", "frame_bytes", "snapshot_bytes", "device_ring_bytes",
                     "device_frame_bytes"):
            setattr(merged, name, getattr(merged, name) + getattr(rep, name))
    merged.extra = {**merged.extra, "shot_groups": sizes}
    return merged


def run(prop, v: torch.Tensor, v2dt2: torch.Tensor, w: torch.Tensor, src_flat: torch.Tensor,
        rec_flat: torch.Tensor, cpml, needs_grad: bool) -> torch.Tensor:
    """Run ``impl="c"``; returns the (B, nt, R) record, differentiable in ``v`` when asked.

    The shots are stepped in groups when :func:`shot_group_size` asks for it.

    Args:
        v: (nz, nx) velocity (m/s) the record is differentiated in.
        v2dt2: (nzp, nxp) (v dt)^2 on the padded grid (used detached).
        w: (B, nt) wavelet; src_flat (B, 1), rec_flat (B, R) flat padded indices.
        cpml: (ax, bx, az, bz) 1D numpy CPML coefficients.
    """
    if v2dt2.dtype != torch.float32:
        raise ValueError("impl='c' computes in float32: pass a float32 velocity model")
    batch = int(src_flat.shape[0])
    size = shot_group_size(prop, batch, v2dt2.device)
    if size >= batch:
        return _run_pass(prop, v, v2dt2, w, src_flat, rec_flat, cpml, needs_grad)
    records, reports, sizes = [], [], []
    lanes = LANES if v2dt2.device.type == "cuda" and size % LANES == 0 else 1
    for sl in group_slices(batch, size, lanes):
        records.append(_run_pass(prop, v, v2dt2, w[sl], src_flat[sl], rec_flat[sl], cpml,
                                 needs_grad))
        reports.append(prop.last_memory)
        sizes.append(sl.stop - sl.start)
    prop.last_memory = _merged_report(reports, sizes)
    return torch.cat(records, 0)


def _run_pass(prop, v: torch.Tensor, v2dt2: torch.Tensor, w: torch.Tensor, src_flat: torch.Tensor,
              rec_flat: torch.Tensor, cpml, needs_grad: bool) -> torch.Tensor:
    """One pass of the kernels over all the shots given (arguments as :func:`run`)."""
    pb = _Problem(prop, v2dt2, w, src_flat, rec_flat, cpml)
    n = pb.n
    v2s = F.pad(v2dt2.detach(), (n, n, n, n)).contiguous()
    if not needs_grad:
        from fwi_cli.propagator.api import MemoryReport

        lib = backend.load(pb.dev)
        with torch.no_grad():
            record, _ = forward(lib, pb, v2s, None)
        prop.last_memory = MemoryReport(strategy="none")
        return record
    return _CompiledFunction.apply(v, v2s, prop, pb)
