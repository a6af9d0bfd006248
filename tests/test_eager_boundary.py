"""Boundary-saving gradient of ``impl="eager"`` (fwi_cli.propagator.eager_boundary).

The oracle is autograd through the full forward (``MemoryOptions(strategy="full")``): the
boundary strategy must give the same record bit for bit and the same gradient up to float
rounding, whatever the ring's storage dtype costs in accuracy (lossy dtypes: cosine > 0.999).
"""

from __future__ import annotations

import gc

import pytest
import torch

from fwi_cli.errors import FwiError, StorageError
from fwi_cli.propagator import eager, eager_boundary, grid
from fwi_cli.propagator.options import BoundaryOptions, EagerOptions, MemoryOptions

NZ, NX, PML, DT, FREQ = 18, 26, 8, 0.002, 10.0


def _boundary(storage_dtype: str = "fp32", transfer_interval: int = 8) -> MemoryOptions:
    return MemoryOptions(
        strategy="boundary",
        boundary=BoundaryOptions(storage="gpu", storage_dtype=storage_dtype, transfer_interval=transfer_interval),
    )


@pytest.fixture
def problem(marmousi_crop, small_acquisition, ricker_wavelet):
    """Factory ``(nt) -> (v_true, v_init, sources, receivers, wavelet, dh)`` of a small Marmousi test."""

    def make(nt: int):
        v_true, v_init = marmousi_crop(NZ, NX, decimate=2, z0=20)
        sources, receivers = small_acquisition(NZ, NX, nshots=2, nrec=9)
        wavelet = ricker_wavelet(nt, DT, FREQ, 1.2 / FREQ)
        return v_true, v_init, sources, receivers, wavelet, 25.0

    return make


@pytest.fixture
def gradient(problem, eager_propagator):
    """Factory ``(memory, nt=120, spatial_order=4, dtype=float32) -> (record, grad, prop)``.

    The loss is 0.5 ||d(v_init) - d(v_true)||^2, so grad_record is a realistic residual.
    """

    def run(memory: MemoryOptions, nt: int = 120, spatial_order: int = 4, dtype=torch.float32):
        v_true, v_init, src, rec, wav, dh = problem(nt)
        prop = eager_propagator((NZ, NX), dh, DT, nt, spatial_order=spatial_order, pml_width=PML, memory=memory)
        with torch.no_grad():
            d_obs = prop(torch.from_numpy(wav).to(dtype), src, rec, [torch.from_numpy(v_true).to(dtype)])
        v = torch.from_numpy(v_init).to(dtype).requires_grad_()
        d = prop(torch.from_numpy(wav).to(dtype), src, rec, [v])
        (0.5 * ((d - d_obs) ** 2).sum()).backward()
        return d.detach(), v.grad.detach().clone(), prop

    return run


def test_eager_boundary_gradient_matches_full_fp32(gradient, rel_l2):
    _, g_full, _ = gradient(MemoryOptions(strategy="full"))
    _, g_bnd, prop = gradient(_boundary("fp32"))
    assert prop.memory_report().strategy == "boundary"
    assert float(g_full.abs().max()) > 0
    err = rel_l2(g_bnd, g_full)
    assert err <= 1e-4, f"relative L2 {err:.3e} between boundary and full gradients"


def test_eager_boundary_gradient_matches_full_fp64(gradient, rel_l2):
    _, g_full, _ = gradient(MemoryOptions(strategy="full"), dtype=torch.float64)
    _, g_bnd, _ = gradient(_boundary("fp32"), dtype=torch.float64)
    assert g_bnd.dtype == torch.float64
    err = rel_l2(g_bnd, g_full)
    assert err <= 1e-12, f"relative L2 {err:.3e} in float64 (the fp32 ring keeps a hi/lo pair)"


@pytest.mark.parametrize("spatial_order", [2, 4, 8])
def test_eager_boundary_gradient_matches_full_each_spatial_order(gradient, rel_l2, spatial_order):
    nt = 80
    _, g_full, _ = gradient(MemoryOptions(strategy="full"), nt=nt, spatial_order=spatial_order)
    _, g_bnd, prop = gradient(_boundary("fp32"), nt=nt, spatial_order=spatial_order)
    assert prop.memory_report().extra["ring_cells"] == spatial_order * (NZ + NX)
    err = rel_l2(g_bnd, g_full)
    assert err <= 1e-4, f"spatial_order {spatial_order}: relative L2 {err:.3e}"


@pytest.mark.parametrize("transfer_interval", [1, 7, 500])
def test_eager_boundary_gradient_independent_of_chunking(gradient, rel_l2, transfer_interval):
    _, g_ref, _ = gradient(_boundary("fp32", 8), nt=60)
    _, g, prop = gradient(_boundary("fp32", transfer_interval), nt=60)
    assert prop.memory_report().extra["chunk_steps"] == min(transfer_interval, 60)
    assert rel_l2(g, g_ref) <= 1e-6


def test_eager_boundary_record_identical_across_strategies_and_dtypes(gradient):
    d_full, _, _ = gradient(MemoryOptions(strategy="full"), nt=60)
    for storage_dtype in ("fp32", "fp16", "bf16", "int8"):
        d, _, _ = gradient(_boundary(storage_dtype), nt=60)
        assert torch.equal(d, d_full), f"record differs with storage_dtype={storage_dtype}"


@pytest.mark.parametrize("storage_dtype", ["fp16", "bf16", "int8"])
def test_eager_boundary_lossy_dtype_gradient_close_to_fp32(gradient, cosine, rel_l2, storage_dtype):
    _, g_ref, _ = gradient(_boundary("fp32"))
    _, g, prop = gradient(_boundary(storage_dtype))
    report = prop.memory_report()
    assert report.storage_dtype == storage_dtype
    c = cosine(g, g_ref)
    assert c > 0.999, f"{storage_dtype}: cosine {c:.6f} to the fp32-ring gradient"
    assert rel_l2(g, g_ref) > 0  # the ring really went through the lossy codec


def test_eager_boundary_adjoint_step_is_autograd_vjp_of_step():
    torch.manual_seed(0)
    nz, nx, pml, dh, dt = 7, 9, 5, 10.0, 1e-3
    ax, bx = grid.cpml_profile(nx, pml, dh, dt, 2500.0, 15.0)
    az, bz = grid.cpml_profile(nz, pml, dh, dt, 2500.0, 15.0)
    shape = (2, nz + 2 * pml, nx + 2 * pml)
    v2dt2 = 0.05 * torch.rand(shape[1:], dtype=torch.float64)
    for order in (2, 4, 8):
        k = eager.make_coefficients(order, dh, ax, bx, az, bz, v2dt2)
        state = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(6)]
        u_next, _, px, pz, zx, zz = eager.step(*state, k)
        cot = [torch.randn(shape, dtype=torch.float64) for _ in range(6)]  # u_next, u (passed on), px..zz
        outs = [u_next, state[0], px, pz, zx, zz]
        total = sum((o * c).sum() for o, c in zip(outs, cot, strict=True))
        want = torch.autograd.grad(total, state)
        lam_n, g_px, g_pz, g_zx, g_zz = eager_boundary.adjoint_step(cot[0], -cot[1], *cot[2:], k)
        got = [lam_n, -cot[0], g_px, g_pz, g_zx, g_zz]
        for name, a, b in zip(("u", "u_prev", "psi_x", "psi_z", "zeta_x", "zeta_z"), got, want, strict=True):
            err = float((a - b).norm() / b.norm())
            assert err <= 1e-13, f"order {order}: adjoint of {name} off by {err:.2e}"


def test_eager_boundary_interior_laplacian_matches_step():
    torch.manual_seed(1)
    nz, nx, pml, n = 6, 8, 4, 2
    ax, bx = grid.cpml_profile(nx, pml, 10.0, 1e-3, 2500.0, 15.0)
    az, bz = grid.cpml_profile(nz, pml, 10.0, 1e-3, 2500.0, 15.0)
    v2dt2 = torch.rand(nz + 2 * pml, nx + 2 * pml)
    k = eager.make_coefficients(4, 10.0, ax, bx, az, bz, v2dt2)
    u = torch.randn(1, nz + 2 * pml, nx + 2 * pml)
    z = torch.randn_like(u)  # CPML fields are arbitrary: the interior must not read them
    _, lap, *_ = eager.step(u, z, z, z, z, z, k)
    halo = u[:, pml - n:pml + nz + n, pml - n:pml + nx + n].clone()
    halo[:, :n, :n] = halo[:, :n, -n:] = halo[:, -n:, :n] = halo[:, -n:, -n:] = 0  # corners unused
    got = eager_boundary.interior_laplacian(halo, tuple(k.c2))
    assert torch.equal(got, lap[:, pml:pml + nz, pml:pml + nx])


def test_eager_boundary_saved_state_constant_in_nt(gradient, problem, eager_propagator):
    def saved_bytes(nt: int):
        v_true, v_init, src, rec, wav, dh = problem(nt)
        prop = eager_propagator((NZ, NX), dh, DT, nt, pml_width=PML, memory=_boundary("fp32"))
        v = torch.from_numpy(v_init).requires_grad_()
        sizes = []

        def pack(t):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            d = prop(torch.from_numpy(wav), src, rec, [v])
        d.sum().backward()
        return sum(sizes), prop.memory_report()

    s1, m1 = saved_bytes(40)
    s2, m2 = saved_bytes(120)
    assert s1 == s2 and s1 > 0, f"autograd saved {s1} bytes at nt=40 but {s2} at nt=120"
    b, cells = 2, 2 * 2 * (NZ + NX)
    assert m1.ring_bytes == 40 * b * cells * 4 and m2.ring_bytes == 120 * b * cells * 4
    assert m1.frame_bytes == m2.frame_bytes == 2 * b * NZ * NX * 4
    assert m1.device_ring_bytes == m1.ring_bytes  # gpu tier: the ring is on the compute device


@pytest.fixture
def spy_stores(monkeypatch):
    """List filled with every ring store eager_boundary creates."""
    made = []
    real = eager_boundary.make_ring_store

    def spy(*args, **kwargs):
        store = real(*args, **kwargs)
        made.append(store)
        return store

    monkeypatch.setattr(eager_boundary, "make_ring_store", spy)
    return made


def _is_closed(store) -> bool:
    try:
        store.get(0, 1)
    except StorageError:
        return True
    return False


def test_eager_boundary_store_closed_after_backward(problem, eager_propagator, spy_stores):
    v_true, v_init, src, rec, wav, dh = problem(30)
    prop = eager_propagator((NZ, NX), dh, DT, 30, pml_width=PML, memory=_boundary("int8"))
    v = torch.from_numpy(v_init).requires_grad_()
    d = prop(torch.from_numpy(wav), src, rec, [v])
    assert len(spy_stores) == 1 and not _is_closed(spy_stores[0])
    d.sum().backward(retain_graph=True)
    assert _is_closed(spy_stores[0])
    with pytest.raises(FwiError, match="already computed"):
        d.sum().backward()


def test_eager_boundary_store_closed_when_graph_freed_without_backward(problem, eager_propagator, spy_stores):
    v_true, v_init, src, rec, wav, dh = problem(30)
    prop = eager_propagator((NZ, NX), dh, DT, 30, pml_width=PML, memory=_boundary("fp16"))
    v = torch.from_numpy(v_init).requires_grad_()
    d = prop(torch.from_numpy(wav), src, rec, [v])
    assert not _is_closed(spy_stores[0])
    del d
    gc.collect()
    assert _is_closed(spy_stores[0])


def test_eager_boundary_store_closed_when_backward_fails(problem, eager_propagator, spy_stores, monkeypatch):
    v_true, v_init, src, rec, wav, dh = problem(30)
    prop = eager_propagator((NZ, NX), dh, DT, 30, pml_width=PML, memory=_boundary("fp32"))
    v = torch.from_numpy(v_init).requires_grad_()
    d = prop(torch.from_numpy(wav), src, rec, [v])

    def broken(*args):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(eager_boundary, "_backward_pass", broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        d.sum().backward()
    assert _is_closed(spy_stores[0])


def test_eager_boundary_compile_failure_falls_back_to_eager(problem, eager_propagator, monkeypatch, rel_l2):
    def failing_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no compiler here")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    monkeypatch.setattr(eager_boundary._Kernel, "_cache", {})
    v_true, v_init, src, rec, wav, dh = problem(40)
    results = []
    for use_compile in (False, True):
        prop = eager_propagator((NZ, NX), dh, DT, 40, pml_width=PML, memory=_boundary("fp32"),
                                eager_options=EagerOptions(use_compile=use_compile))
        v = torch.from_numpy(v_init).requires_grad_()
        d = prop(torch.from_numpy(wav), src, rec, [v])
        d.square().sum().backward()
        results.append((d.detach(), v.grad, prop.memory_report().extra["compiled"]))
    assert results[1][2] is False
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])



@pytest.mark.parametrize("storage", ["cpu", "disk"])
def test_eager_boundary_host_tiers_match_gpu_tier(gradient, storage, tmp_path):
    _, g_ref, _ = gradient(_boundary("int8", 5), nt=50)
    opts = BoundaryOptions(storage=storage, storage_dtype="int8", transfer_interval=5, disk_dir=tmp_path / "ring")
    _, g, prop = gradient(MemoryOptions(strategy="boundary", boundary=opts), nt=50)
    assert prop.memory_report().storage == storage
    assert torch.equal(g, g_ref)
    leftovers = list((tmp_path / "ring").rglob("*")) if (tmp_path / "ring").exists() else []
    assert [p for p in leftovers if p.is_file()] == [], f"ring files left after backward: {leftovers}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_boundary_cuda_compiled_graphs_match_full(problem, rel_l2, dtype):
    from fwi_cli.equations import Acoustic
    from fwi_cli.propagator import Propagator

    nt = 120
    v_true, v_init, src, rec, wav, dh = problem(nt)
    grads = {}
    for name, memory in (("full", MemoryOptions(strategy="full")), ("boundary", _boundary("fp32", 7))):
        prop = Propagator(Acoustic(device="cuda", spatial_order=4), (NZ, NX), dh, DT, nt, pml_width=PML,
                          impl="eager", memory=memory)
        v = torch.from_numpy(v_init).to(device="cuda", dtype=dtype).requires_grad_()
        prop(torch.from_numpy(wav).to(dtype), src, rec, [v]).square().sum().backward()
        grads[name] = v.grad.cpu()
    assert prop.memory_report().extra["cuda_graphs"] is True
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    assert rel_l2(grads["boundary"], grads["full"]) <= tol


def test_eager_boundary_autograd_adjoint_option_is_used(problem, eager_propagator, rel_l2, monkeypatch):
    from fwi_cli.propagator import eager_boundary

    calls = []
    real = eager_boundary.adjoint_step_autograd

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(eager_boundary, "adjoint_step_autograd", spy)
    v_true, v_init, src, rec, wav, dh = problem(60)
    grads = {}
    for mode in ("manual", "autograd"):
        prop = eager_propagator((NZ, NX), dh, DT, 60, pml_width=PML, memory=_boundary())
        prop.eager_options = EagerOptions(adjoint=mode)
        v = torch.from_numpy(v_init).requires_grad_()
        prop(torch.from_numpy(wav), src, rec, [v]).pow(2).sum().backward()
        grads[mode] = v.grad
    assert len(calls) == 60
    assert rel_l2(grads["autograd"], grads["manual"]) < 1e-6


def test_eager_options_adjoint_must_be_known():
    with pytest.raises(ValueError, match="adjoint"):
        EagerOptions(adjoint="magic")
