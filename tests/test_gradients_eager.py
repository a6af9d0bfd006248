"""Gradients of the eager propagator (autograd through every step, strategy "full").

The gradient is defined with respect to the (nz, nx) interior with the CPML extension held
fixed (DESIGN.md §4): the padded velocity replicates the edge cells of the *detached* model
and the CPML profile is built from the detached vmax. So a finite difference of the forward
map agrees with autograd only for perturbations that leave the edge cells and vmax alone;
every check below perturbs exactly such cells (tiny grid: a fixed border ring holding vmax;
Marmousi: a direction that vanishes on the edges and where v = vmax).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fwi_cli.datasets import load_marmousi
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import MemoryOptions, Propagator
from fwi_cli.signal import ricker


def _tiny_case(order: int, pml: int):
    """Float64 tiny problem: 8x10 interior, 2 shots, 3 receivers each, nt = 20."""
    nz, nx, nt, dh, dt = 8, 10, 20, 10.0, 0.001
    solver = Propagator(
        Acoustic(device="cpu", spatial_order=order), shape=(nz, nx), dh=dh, dt=dt, nt=nt,
        pml_width=pml, impl="eager", memory=MemoryOptions(strategy="full"), pml_freq=30.0,
    )
    rng = np.random.default_rng(order)
    w = torch.tensor(ricker(np.arange(nt) * dt - 0.008, 60.0), dtype=torch.float64)  # (nt,)
    src = np.array([[4, 3], [6, 5]])  # (B, 2) [x, z]
    rec = np.array([[[1, 1], [8, 6], [5, 7]], [[0, 0], [9, 7], [3, 2]]])  # (B, R, 2)
    border = torch.full((nz, nx), 2500.0, dtype=torch.float64)  # edge ring, holds vmax
    inner = torch.tensor(2000.0 + 300.0 * rng.random((nz - 2, nx - 2)), dtype=torch.float64, requires_grad=True)

    def forward(x: torch.Tensor) -> torch.Tensor:  # (nz-2, nx-2) -> (B, nt, R, 1)
        v = border.clone()
        v[1:-1, 1:-1] = x
        return solver(w, src, rec, models=[v])

    return forward, inner


@pytest.mark.parametrize("order,pml", [(2, 2), (4, 3)])
def test_eager_gradcheck_float64_full_jacobian(order, pml):
    forward, inner = _tiny_case(order, pml)
    out = forward(inner)
    assert out.dtype == torch.float64
    assert float(out.detach().abs().max()) > 0
    assert torch.autograd.gradcheck(forward, (inner,), eps=1e-3, atol=1e-9, rtol=1e-6)


def test_eager_gradcheck_float64_order8_fast_mode():
    forward, inner = _tiny_case(8, 4)
    assert torch.autograd.gradcheck(forward, (inner,), eps=1e-3, atol=1e-9, rtol=1e-6, fast_mode=True)


# ----------------------------------------------------------------------------- Marmousi
NZ, NX, X0 = 40, 60, 300  # crop of the 25 m model, water layer on top
DH, DT, NT, FREQ, DELAY = 25.0, 0.002, 400, 6.0, 0.2


@pytest.fixture(scope="module")
def marmousi_gradient():
    """Misfit J(v) = 0.5 ||d(v) - d_obs||^2 (float64 sum of float32 records) at the smooth model."""
    true = load_marmousi("true")[::2, ::2][:NZ, X0:X0 + NX].copy()
    init = load_marmousi("smooth")[::2, ::2][:NZ, X0:X0 + NX].copy()
    solver = Propagator(
        Acoustic(device="cpu", spatial_order=4), shape=(NZ, NX), dh=DH, dt=DT, nt=NT,
        pml_width=20, impl="eager", memory=MemoryOptions(strategy="full"),
    )
    w = ricker(np.arange(NT) * DT - DELAY, FREQ)
    src = np.array([[15, 2], [45, 2]])  # (2, 2)
    rx = np.linspace(0, NX - 1, 20).astype(np.int64)
    rec = np.repeat(np.stack([rx, np.full(20, 4)], 1)[None], 2, 0)  # (2, 20, 2)
    with torch.no_grad():
        observed = solver(w, src, rec, models=[torch.from_numpy(true)])

    def misfit(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((solver(w, src, rec, models=[v]) - observed).double() ** 2).sum()

    v = torch.from_numpy(init).requires_grad_(True)
    misfit(v).backward()
    return misfit, v.detach(), v.grad.detach()


def test_eager_gradient_shape_finite_nonzero(marmousi_gradient):
    _, v, grad = marmousi_gradient
    assert grad.shape == v.shape == (NZ, NX)
    assert grad.dtype == torch.float32
    assert bool(torch.isfinite(grad).all())
    assert float(grad.abs().max()) > 0
    # The whole interior is illuminated: the sensitivity is non-zero almost everywhere.
    assert float((grad != 0).double().mean()) > 0.99


def test_eager_directional_derivative_matches_finite_difference(marmousi_gradient):
    """Central difference (J(v + h d) - J(v - h d)) / 2h vs <grad, d>: rel. error ~6e-4 at h = 10 m/s."""
    misfit, v, grad = marmousi_gradient
    zz, xx = np.meshgrid(np.arange(NZ), np.arange(NX), indexing="ij")
    taper = (np.sin(np.pi * zz / (NZ - 1)) * np.sin(np.pi * xx / (NX - 1))) ** 2  # 0 on the edges
    bump = np.exp(-(((zz - 25) / 8.0) ** 2 + ((xx - 30) / 12.0) ** 2))
    d = torch.from_numpy(taper * bump / np.abs(taper * bump).max())  # (NZ, NX) float64, max 1
    h = 10.0  # m/s: above float32 noise in J, well inside the quadratic regime
    v_plus = (v.double() + h * d).float()
    v_minus = (v.double() - h * d).float()
    # The direction leaves the padding (edge cells) and vmax untouched, see the module docstring.
    assert float(v_plus.max()) == float(v_minus.max()) == float(v.max())
    with torch.no_grad():
        fd = float(misfit(v_plus) - misfit(v_minus)) / (2 * h)
    exact = float((grad.double() * d).sum())
    assert exact != 0
    err = abs(fd - exact) / abs(exact)
    assert err < 1e-2, f"finite difference {fd:.6e} vs <grad, d> {exact:.6e}: rel. error {err:.2e}"


def test_eager_gradient_of_batch_is_sum_over_shots(marmousi_gradient, rel_l2):
    """The misfit is a sum over shots, so the batch gradient is the sum of per-shot gradients."""
    _, v, _ = marmousi_gradient
    nz, nx, nt = 20, 30, 150
    vp = v[:nz, 10:10 + nx].contiguous()
    solver = Propagator(
        Acoustic(device="cpu", spatial_order=4), shape=(nz, nx), dh=DH, dt=DT, nt=nt,
        pml_width=10, impl="eager", memory=MemoryOptions(strategy="full"),
    )
    w = ricker(np.arange(nt) * DT - DELAY, FREQ)
    src = np.array([[5, 2], [24, 3]])
    rec = np.array([[[0, 4], [12, 10], [29, 4]], [[3, 15], [18, 4], [27, 8]]])

    def grad_of(idx: slice) -> torch.Tensor:
        x = vp.clone().requires_grad_(True)
        (solver(w, src[idx], rec[idx], models=[x]) ** 2).sum().backward()
        return x.grad

    g_batch = grad_of(slice(0, 2))
    g_sum = grad_of(slice(0, 1)) + grad_of(slice(1, 2))
    assert float(g_batch.abs().max()) > 0
    assert rel_l2(g_batch, g_sum) < 1e-5
