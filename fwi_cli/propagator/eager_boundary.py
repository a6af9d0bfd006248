"""Boundary-saving gradient for ``impl="eager"`` (pure PyTorch, no autograd graph in time).

The operator is the one of :mod:`fwi_cli.propagator.grid`; notation: u^0 = u^{-1} = 0, step n
(n = 0..nt-1) maps (u^n, u^{n-1}, psi^{n-1}, zeta^{n-1}) to u^{n+1} plus v2dt2[s] f^n at the
source cell s, and record[:, n] = u^{n+1}[receivers].

Forward (no graph): before step n the ring of u^n (the N = spatial_order/2 innermost PML
layers around the interior, :meth:`Geometry.ring_index` order) is written to a
:class:`~fwi_cli.storage.base.RingStore`, in chunks of ``transfer_interval`` steps. After the
last step the interiors of u^{nt} and u^{nt-1} are kept (the seed frames, in the compute
dtype: float32, or float64 for a float64 model).

Backward, n = nt-1 .. 0, holding the interiors of u^{n+1} and u^n:

* u^n is assembled on the interior plus an N-cell halo from its interior and its stored
  ring (the halo corners are never read by the cross-shaped stencil), and
  L^n = Dzz u^n + Dxx u^n on the interior (a = 0 there, so no CPML term);
* the adjoint lambda lives on the whole padded grid (PML included):
  lambda^{n+1} += R^T grad_record[:, n], then
  grad v2dt2 += lambda^{n+1} L^n on the interior and grad v2dt2[s] += lambda^{n+1}[s] f^n;
* u^{n-1} = 2 u^n + v2dt2 L^n + v2dt2[s] f^n delta_s - u^{n+1} on the interior;
* lambda steps back through the transpose of step n (:func:`adjoint_step`): the step is
  linear in its state, Dxx/Dzz are symmetric and Dx/Dz antisymmetric on the zero-padded
  grid, so with gL = v2dt2 lambda^{n+1} and the cotangents g_psi, g_zeta of psi^n, zeta^n:

      t_x = g_zeta_x + gL,   g_Ax = gL + a_x t_x,   s_x = g_psi_x - Dx(m_x g_Ax)   (same in z)
      lambda^n = 2 lambda^{n+1} - lambda^{n+2} + Dxx g_Ax + Dzz g_Az - Dx(a_x s_x) - Dz(a_z s_z)
      g_psi_x <- b_x s_x,   g_zeta_x <- b_x t_x

  which is the exact discrete adjoint (the autograd VJP of :func:`eager.step`, checked by
  the tests). The gradient equals the full-storage one up to float rounding.

Saved state: the ring, 2N(nz + nx) cells per shot and step (float32 codes of the store's
dtype; a float64 model with fp32 storage keeps a hi/lo float32 pair, so the ring stays
exact), plus the two seed frames. Nothing else grows with nt. The gradient with respect to
v2dt2 is zero on PML cells (``pad_model`` discards them anyway).

Speed: both passes run in chunks of ``transfer_interval`` steps on preallocated static
tensors, with no host synchronisation inside a chunk. ``EagerOptions.use_compile`` compiles
the per-step functions (default: on for CUDA, off on CPU; a compile failure falls back to
eager). On CUDA each full chunk is captured once as a CUDA graph and replayed
(``EagerOptions(extra={"cuda_graphs": False})`` turns that off); replaying is bit-identical
to running the steps.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from fwi_cli.errors import FwiError
from fwi_cli.propagator import eager
from fwi_cli.propagator.grid import Geometry
from fwi_cli.storage import make_ring_store


# ----------------------------------------------------------------------------- stencils
def _dxx(f: torch.Tensor, c2: tuple[float, ...]) -> torch.Tensor:
    """Dxx f of a (B, nzp, nxp) field, zero outside the grid (same sums as ``eager``)."""
    n = len(c2) - 1
    fp, nz, nx = F.pad(f, (n, n, n, n)), f.shape[-2], f.shape[-1]
    out = c2[0] * f
    for k in range(1, n + 1):
        out = out + c2[k] * (fp[:, n:n + nz, n + k:n + k + nx] + fp[:, n:n + nz, n - k:n - k + nx])
    return out


def _dzz(f: torch.Tensor, c2: tuple[float, ...]) -> torch.Tensor:
    """Dzz f of a (B, nzp, nxp) field, zero outside the grid."""
    n = len(c2) - 1
    fp, nz, nx = F.pad(f, (n, n, n, n)), f.shape[-2], f.shape[-1]
    out = c2[0] * f
    for k in range(1, n + 1):
        out = out + c2[k] * (fp[:, n + k:n + k + nz, n:n + nx] + fp[:, n - k:n - k + nz, n:n + nx])
    return out


def interior_laplacian(h: torch.Tensor, c2: tuple[float, ...]) -> torch.Tensor:
    """L = Dzz u + Dxx u on the interior of a haloed field.

    Args:
        h: (B, nz + 2N, nx + 2N) the wavefield on the interior plus an N-cell halo.
        c2: second-derivative weights c_0..c_N divided by dh^2.

    Returns:
        (B, nz, nx) Laplacian, summed in the same order as :func:`eager.step` so that it is
        bit-identical to the forward's L^n on interior cells (eager mode).
    """
    n = len(c2) - 1
    nz, nx = h.shape[-2] - 2 * n, h.shape[-1] - 2 * n
    c = h[:, n:n + nz, n:n + nx]
    dzz = c2[0] * c
    dxx = c2[0] * c
    for k in range(1, n + 1):
        dzz = dzz + c2[k] * (h[:, n + k:n + k + nz, n:n + nx] + h[:, n - k:n - k + nz, n:n + nx])
        dxx = dxx + c2[k] * (h[:, n:n + nz, n + k:n + k + nx] + h[:, n:n + nz, n - k:n - k + nx])
    return dxx + dzz


def adjoint_step(lam, lam_old, g_px, g_pz, g_zx, g_zz, k: eager.StepCoefficients):
    """Transpose of one :func:`eager.step` applied to the adjoint state.

    Args:
        lam: (B, nzp, nxp) lambda^{n+1}, the cotangent of u^{n+1} (receivers injected).
        lam_old: (B, nzp, nxp) lambda^{n+2} (minus the cotangent of the u^n passed on).
        g_px, g_pz, g_zx, g_zz: (B, nzp, nxp) cotangents of psi_x^n, psi_z^n, zeta_x^n, zeta_z^n.
        k: the step coefficients.

    Returns:
        (lam_new, g_px, g_pz, g_zx, g_zz): lambda^n (cotangent of u^n, before the receivers
        of step n-1 are injected) and the cotangents of the auxiliary fields at n-1.
    """
    c2, c1 = tuple(k.c2), tuple(k.c1)
    g_l = k.v2dt2 * lam
    t_x = g_zx + g_l  # total cotangent of zeta_x^n
    t_z = g_zz + g_l
    g_ax = g_l + k.ax * t_x  # cotangent of Ax
    g_az = g_l + k.az * t_z
    s_x = g_px - eager.first_derivative_x(k.mx * g_ax, c1)  # total cotangent of psi_x^n
    s_z = g_pz - eager.first_derivative_z(k.mz * g_az, c1)
    lam_new = (
        2 * lam - lam_old + (_dxx(g_ax, c2) + _dzz(g_az, c2))
        - (eager.first_derivative_x(k.ax * s_x, c1) + eager.first_derivative_z(k.az * s_z, c1))
    )
    return lam_new, k.bx * s_x, k.bz * s_z, k.bx * t_x, k.bz * t_z


def adjoint_step_autograd(lam, lam_old, g_px, g_pz, g_zx, g_zz, k: eager.StepCoefficients):
    """:func:`adjoint_step` computed by autograd: the VJP of one :func:`eager.step`.

    The step is linear in its state, so its VJP does not depend on the primal values (zeros
    are used). Same arguments and returns as :func:`adjoint_step`; slower, and the literal
    "autograd on a single step" form (``EagerOptions(adjoint="autograd")``).
    """
    z = torch.zeros_like(lam)

    def one_step(u, px, pz, zx, zz):
        u_next, _, px, pz, zx, zz = eager.step(u, z, px, pz, zx, zz, k)
        return u_next, px, pz, zx, zz

    with torch.enable_grad():
        _, vjp = torch.func.vjp(one_step, z, z, z, z, z)
        g_u, g_px, g_pz, g_zx, g_zz = vjp((lam, g_px, g_pz, g_zx, g_zz))
    return g_u - lam_old, g_px, g_pz, g_zx, g_zz


# ----------------------------------------------------------------------------- per-step kernels
def _forward_step(u, up, px, pz, zx, zz, k: eager.StepCoefficients, src_flat, amp, rec_flat, ring_idx):
    """Step n of the forward, plus what the boundary strategy keeps of it.

    Args:
        u, up, px, pz, zx, zz: (B, nzp, nxp) u^n, u^{n-1} and the CPML fields at n-1.
        src_flat: (B, 1) flat source index; amp: (B,) v2dt2[s] f^n.
        rec_flat: (B, R) flat receiver indices; ring_idx: (C,) flat ring indices.

    Returns:
        (u^{n+1}, psi_x^n, psi_z^n, zeta_x^n, zeta_z^n, record (B, R), ring of u^n (B, C)).
    """
    b = u.shape[0]
    ring = u.reshape(b, -1).index_select(1, ring_idx)
    u_next, _, px, pz, zx, zz = eager.step(u, up, px, pz, zx, zz, k)
    flat = u_next.reshape(b, -1).scatter_add(1, src_flat, amp[:, None])
    rec = flat.gather(1, rec_flat)
    return flat.reshape(u.shape), px, pz, zx, zz, rec, ring


def _backward_step(cur, nxt, ring, lam, lam_old, g_px, g_pz, g_zx, g_zz, g_acc, g_src,
                   k: eager.StepCoefficients, v_int, grad_rec, rec_flat, src_flat, src_int, amp, w_n,
                   halo_idx, pml: int, adjoint=adjoint_step):
    """Step n of the backward: reconstruct u^{n-1}, accumulate the gradient, step lambda.

    Args:
        cur, nxt: (B, nz, nx) interiors of u^n and u^{n+1}.
        ring: (B, C) ring of u^n in the compute dtype.
        lam, lam_old, g_*: adjoint state (see :func:`adjoint_step`), lam = lambda^{n+1}
            before the receivers of step n are injected.
        g_acc: (B, nz, nx) running sum of lambda L; g_src: (B,) running sum at the source.
        v_int: (nz, nx) interior v2dt2; grad_rec: (B, R) grad of record[:, n].
        src_int: (B, 1) flat source index in the interior; amp: (B,) v2dt2[s] f^n; w_n: (B,) f^n.
        halo_idx: (C,) flat ring indices in the (nz + 2N, nx + 2N) haloed grid.

    Returns:
        (prev, lam_new, lam, g_px, g_pz, g_zx, g_zz, g_acc, g_src) with prev = interior of u^{n-1}.
    """
    b, nz, nx = cur.shape
    n_half = len(k.c2) - 1
    h = F.pad(cur, (n_half, n_half, n_half, n_half))
    h = h.reshape(b, -1).index_copy(1, halo_idx, ring).reshape(b, nz + 2 * n_half, nx + 2 * n_half)
    lap = interior_laplacian(h, tuple(k.c2))
    lam = lam.reshape(b, -1).scatter_add(1, rec_flat, grad_rec).reshape(lam.shape)
    g_acc = g_acc + lam[:, pml:pml + nz, pml:pml + nx] * lap
    g_src = g_src + lam.reshape(b, -1).gather(1, src_flat)[:, 0] * w_n
    prev = 2 * cur + v_int * lap - nxt
    prev = prev.reshape(b, -1).scatter_add(1, src_int, amp[:, None]).reshape(cur.shape)
    lam_new, g_px, g_pz, g_zx, g_zz = adjoint(lam, lam_old, g_px, g_pz, g_zx, g_zz, k)
    return prev, lam_new, lam, g_px, g_pz, g_zx, g_zz, g_acc, g_src


def _backward_step_autograd(*args):
    """:func:`_backward_step` with the per-step adjoint taken from autograd."""
    return _backward_step(*args, adjoint=adjoint_step_autograd)


class _Kernel:
    """A per-step function, compiled with ``torch.compile`` when asked.

    A compile failure (at the first call, or any later recompile) never breaks the run:
    the eager function is used from then on.
    """

    _cache: dict = {}

    def __init__(self, fn, use_compile: bool) -> None:
        self.fn = fn
        self.compiled = None
        if use_compile:
            key = fn.__name__
            try:
                if key not in _Kernel._cache:
                    _Kernel._cache[key] = torch.compile(fn, dynamic=False)
                self.compiled = _Kernel._cache[key]
            except Exception:  # torch.compile unavailable on this build: eager
                self.compiled = None

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception:  # compiler failure (missing toolchain, unsupported op): fall back
                self.compiled = None
        return self.fn(*args)


def _want_compile(prop, device: torch.device) -> bool:
    opt = prop.eager_options.use_compile
    if opt is None:
        return device.type == "cuda"
    return bool(opt)


# ----------------------------------------------------------------------------- autograd
class _Plan:
    """Everything the backward needs besides the saved tensors (closed over by the graph)."""

    def __init__(self, prop, w, src_flat, rec_flat, cpml, store, chunk, split, use_compile):
        self.prop, self.w, self.src_flat, self.rec_flat = prop, w, src_flat, rec_flat
        self.cpml, self.store, self.chunk, self.split = cpml, store, chunk, split
        self.use_compile = use_compile
        self.compiled_ok = use_compile
        self.use_graphs = _want_graphs(prop, w.device)
        self.graphs_ok = False
        self.finalizer = weakref.finalize(self, store.close)


class _BoundaryGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v2dt2, plan: _Plan):
        rec, u_last, u_prev = _forward_pass(plan, v2dt2)
        ctx.plan = plan
        ctx.save_for_backward(v2dt2, u_last, u_prev)
        return rec

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_record):
        plan = ctx.plan
        if plan is None or not plan.finalizer.alive:
            raise FwiError(
                "the boundary-saving gradient was already computed for this forward call (its "
                "ring is freed after one backward); run the propagator again, or use "
                "MemoryOptions(strategy='full') to differentiate the same record twice"
            )
        v2dt2, u_last, u_prev = ctx.saved_tensors
        try:
            grad = _backward_pass(plan, v2dt2, u_last, u_prev, grad_record)
        finally:
            plan.finalizer()
            ctx.plan = None
        return grad, None


def run(prop, v2dt2: torch.Tensor, w: torch.Tensor, src_flat: torch.Tensor, rec_flat: torch.Tensor, cpml) -> torch.Tensor:
    """Boundary-saving forward of ``impl="eager"``; the record is differentiable in v2dt2.

    Args:
        prop: the calling Propagator (geometry, nt, memory and eager options).
        v2dt2: (nzp, nxp) (v dt)^2 on the padded grid.
        w: (B, nt) wavelet; src_flat: (B, 1); rec_flat: (B, R) flat padded indices.
        cpml: (ax, bx, az, bz) numpy CPML coefficients.

    Returns:
        (B, nt, R) record, record[:, n] = u^{n+1} at the receivers.
    """
    from fwi_cli.propagator.api import MemoryReport

    opts = prop.memory.boundary
    g: Geometry = prop.geometry
    b = w.shape[0]
    split = v2dt2.dtype == torch.float64 and opts.storage_dtype == "fp32"
    cells = g.ring_cells * (2 if split else 1)
    chunk = max(1, min(int(opts.transfer_interval), prop.nt))
    store = make_ring_store(prop.nt, b, cells, v2dt2.device, opts)
    try:
        plan = _Plan(prop, w, src_flat, rec_flat, cpml, store, chunk, split,
                     _want_compile(prop, v2dt2.device))
        rec = _BoundaryGradient.apply(v2dt2, plan)
    except BaseException:
        store.close()
        raise
    frame_bytes = 2 * b * g.nz * g.nx * v2dt2.element_size()
    prop.last_memory = MemoryReport(
        strategy="boundary", storage=opts.storage, storage_dtype=opts.storage_dtype,
        ring_bytes=int(store.nbytes), frame_bytes=frame_bytes, device_frame_bytes=frame_bytes,
        device_ring_bytes=int(store.device_nbytes),
        extra={"compiled": plan.compiled_ok, "cuda_graphs": plan.graphs_ok, "chunk_steps": chunk, "ring_cells": g.ring_cells},
    )
    return rec


_FWD_STATE = ("u", "up", "px", "pz", "zx", "zz")
_BWD_STATE = ("cur", "nxt", "lam", "lam_old", "g_px", "g_pz", "g_zx", "g_zz", "g_acc", "g_src")


class _ChunkRunner:
    """Runs ``body(statics, t)`` (t steps that update the static tensors in place).

    On CUDA a full chunk of ``k`` steps is captured once as a CUDA graph (after a warm-up
    on scratch copies, which also triggers ``torch.compile``) and replayed; a shorter chunk,
    another device, or a failed capture runs the body directly. The body only launches
    kernels (no host syncs), so replaying it is exactly running it.
    """

    def __init__(self, body, statics: dict, k: int, enabled: bool) -> None:
        self.body, self.statics, self.k, self.graph = body, statics, k, None
        if enabled:
            try:
                self.graph = self._capture()
            except Exception:  # capture unsupported here: run the steps directly
                self.graph = None

    def _capture(self):
        scratch = {name: t.clone() for name, t in self.statics.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.body(scratch, self.k)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.body(self.statics, self.k)
        return graph

    def __call__(self, t: int) -> None:
        if self.graph is not None and t == self.k:
            self.graph.replay()
        else:
            self.body(self.statics, t)


def _want_graphs(prop, device: torch.device) -> bool:
    return device.type == "cuda" and bool(prop.eager_options.extra.get("cuda_graphs", True))


def _forward_pass(plan: _Plan, v2dt2: torch.Tensor):
    """Run the nt steps without a graph, filling the store; return (record, seeds)."""
    prop, w, src_flat, rec_flat = plan.prop, plan.w, plan.src_flat, plan.rec_flat
    g: Geometry = prop.geometry
    nt, b, dev, dt_ = prop.nt, w.shape[0], v2dt2.device, v2dt2.dtype
    k = eager.make_coefficients(prop.spatial_order, prop.dh, *plan.cpml, v2dt2)
    ring_idx = g.ring_index(dev)
    c, kk, nrec = g.ring_cells, plan.chunk, rec_flat.shape[1]
    step = _Kernel(_forward_step, plan.use_compile)
    src_scale = v2dt2.reshape(-1)[src_flat[:, 0]]  # (B,)
    amps = src_scale[:, None] * w  # (B, nt)
    st = {name: torch.zeros(b, g.nzp, g.nxp, dtype=dt_, device=dev) for name in _FWD_STATE}
    st["amps"] = torch.zeros(b, kk, dtype=dt_, device=dev)
    st["ring"] = torch.zeros(kk, b, plan.store.cells, dtype=torch.float32, device=dev)
    st["rec"] = torch.zeros(b, kk, nrec, dtype=dt_, device=dev)

    def body(s: dict, t: int) -> None:
        u, up, px, pz, zx, zz = (s[name] for name in _FWD_STATE)
        for j in range(t):
            u_next, px, pz, zx, zz, rec, ring = step(u, up, px, pz, zx, zz, k, src_flat, s["amps"][:, j], rec_flat, ring_idx)
            if plan.split:  # float64 ring as an exact-ish hi/lo float32 pair
                hi = ring.float()
                s["ring"][j, :, :c].copy_(hi)
                s["ring"][j, :, c:].copy_((ring - hi.double()).float())
            else:
                s["ring"][j].copy_(ring)
            s["rec"][:, j].copy_(rec)
            up, u = u, u_next
        for name, val in (("up", up), ("u", u), ("px", px), ("pz", pz), ("zx", zx), ("zz", zz)):
            s[name].copy_(val)  # "up" first: with t = 1 it is the old "u"

    runner = _ChunkRunner(body, st, kk, plan.use_graphs)
    plan.graphs_ok = runner.graph is not None
    record = torch.empty(b, nt, nrec, dtype=dt_, device=dev)
    for n0 in range(0, nt, kk):
        t = min(kk, nt - n0)
        st["amps"][:, :t].copy_(amps[:, n0:n0 + t])
        runner(t)
        plan.store.put(n0, st["ring"][:t])
        record[:, n0:n0 + t] = st["rec"][:, :t]
    plan.store.finish_forward()
    plan.compiled_ok = step.compiled is not None
    p = g.pml
    u, up = st["u"], st["up"]
    return record, u[:, p:p + g.nz, p:p + g.nx].clone(), up[:, p:p + g.nz, p:p + g.nx].clone()


def _backward_pass(plan: _Plan, v2dt2, u_last, u_prev, grad_record):
    """March n = nt-1..0: reconstruct the interior, step the adjoint, sum the gradient."""
    prop, w, src_flat, rec_flat = plan.prop, plan.w, plan.src_flat, plan.rec_flat
    g: Geometry = prop.geometry
    nt, b, dev, dt_ = prop.nt, w.shape[0], v2dt2.device, v2dt2.dtype
    p, nz, nx, c, kk = g.pml, g.nz, g.nx, g.ring_cells, plan.chunk
    v2dt2 = v2dt2.detach()
    k = eager.make_coefficients(prop.spatial_order, prop.dh, *plan.cpml, v2dt2)
    halo_idx = Geometry(nz, nx, g.n_half, g.n_half).ring_index(dev)
    v_int = v2dt2[p:p + nz, p:p + nx].contiguous()
    src_int = (src_flat // g.nxp - p) * nx + (src_flat % g.nxp - p)  # (B, 1)
    amps = v2dt2.reshape(-1)[src_flat[:, 0]][:, None] * w  # (B, nt)
    by_autograd = prop.eager_options.adjoint == "autograd"
    step = _Kernel(_backward_step_autograd, False) if by_autograd else _Kernel(_backward_step, plan.use_compile)

    st = {name: torch.zeros(b, g.nzp, g.nxp, dtype=dt_, device=dev) for name in _BWD_STATE[2:8]}
    st["cur"] = u_prev.to(dt_).clone()
    st["nxt"] = u_last.to(dt_).clone()
    st["g_acc"] = torch.zeros(b, nz, nx, dtype=dt_, device=dev)
    st["g_src"] = torch.zeros(b, dtype=dt_, device=dev)
    st["ring"] = torch.zeros(kk, b, plan.store.cells, dtype=torch.float32, device=dev)
    st["grad_rec"] = torch.zeros(b, kk, rec_flat.shape[1], dtype=dt_, device=dev)
    st["amps"] = torch.zeros(b, kk, dtype=dt_, device=dev)
    st["w"] = torch.zeros(b, kk, dtype=dt_, device=dev)

    def body(s: dict, t: int) -> None:
        cur, nxt, lam, lam_old, g_px, g_pz, g_zx, g_zz, g_acc, g_src = (s[name] for name in _BWD_STATE)
        for j in range(t - 1, -1, -1):
            blk = s["ring"][j]
            ring = blk[:, :c].double() + blk[:, c:].double() if plan.split else blk.to(dt_)
            prev, lam_n, lam, g_px, g_pz, g_zx, g_zz, g_acc, g_src = step(
                cur, nxt, ring, lam, lam_old, g_px, g_pz, g_zx, g_zz, g_acc, g_src, k, v_int,
                s["grad_rec"][:, j], rec_flat, src_flat, src_int, s["amps"][:, j], s["w"][:, j], halo_idx, p)
            lam_old, lam = lam, lam_n
            nxt, cur = cur, prev
        for name, val in (("nxt", nxt), ("cur", cur), ("lam_old", lam_old), ("lam", lam), ("g_px", g_px),
                          ("g_pz", g_pz), ("g_zx", g_zx), ("g_zz", g_zz), ("g_acc", g_acc), ("g_src", g_src)):
            s[name].copy_(val)  # "nxt" first: with t = 1 it is the old "cur"

    runner = _ChunkRunner(body, st, kk, plan.use_graphs and not by_autograd)
    grad_record = grad_record.to(dt_)
    for n0 in reversed(range(0, nt, kk)):
        t = min(kk, nt - n0)
        st["ring"][:t].copy_(plan.store.get(n0, t))
        st["grad_rec"][:, :t].copy_(grad_record[:, n0:n0 + t])
        st["amps"][:, :t].copy_(amps[:, n0:n0 + t])
        st["w"][:, :t].copy_(w[:, n0:n0 + t])
        runner(t)
    grad = torch.zeros(g.nzp, g.nxp, dtype=dt_, device=dev)
    grad[p:p + nz, p:p + nx] = st["g_acc"].sum(0)
    grad.reshape(-1).index_add_(0, src_flat[:, 0], st["g_src"])
    return grad
