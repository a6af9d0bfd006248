"""Physics of the eager propagator: analytic Green's function, CPML, reciprocity, linearity.

The discrete update (``fwi_cli.propagator.grid``) adds ``(v dt)^2 f^n`` at the source cell
into ``u^{n+1}``; dividing the leapfrog update by dt^2 shows it discretises

    u_tt = v^2 lap u + v^2 dh^2 f(t) delta(x - x_s)

(the grid's Kronecker delta is ``dh^2`` times a Dirac delta), centred at t_n = n dt, so
``u^n ~ u(n dt)`` and ``record[:, n] = u^{n+1}`` samples the field at t = (n + 1) dt.

The 2D Green's function of ``g_tt - v^2 lap g = delta(x) delta(t)`` is
``H(t - r/v) / (2 pi v^2 sqrt(t^2 - r^2/v^2))``; convolving with the source term gives

    u(r, t) = dh^2 / (2 pi) * int_{r/v}^{inf} f(t - tau) / sqrt(tau^2 - r^2/v^2) dtau
            = dh^2 / (2 pi) * int_0^{inf} f(t - (r/v) cosh s) ds        (tau = (r/v) cosh s)

The substitution removes the inverse-square-root singularity; with f = 0 before t = 0 the
integral stops at s = acosh(t v / r), and the trapezoid rule on the smooth integrand
converges fast (checked against an independent tau = r/v + q^2 quadrature to 1e-9).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fwi_cli.equations import Acoustic
from fwi_cli.propagator import MemoryOptions, Propagator
from fwi_cli.signal import ricker

# Homogeneous set-up: 10 points per wavelength at the Ricker peak frequency
# (v / (f dh) = 2000 / (10 * 20)), offsets of 1 and 3 peak wavelengths.
V0, DH, DT, FREQ, DELAY = 2000.0, 20.0, 0.002, 10.0, 0.15
NT = 300  # 0.6 s
N_GRID = 101  # interior (101, 101), source in the middle
SRC = 50
OFFSETS = (10, 30)  # cells
PML = 20


def analytic_trace(t: np.ndarray, r: float, v: float, f: float, delay: float, dh: float, ns: int = 1001) -> np.ndarray:
    """u(r, t) of the module docstring for f(t) = ricker(t - delay, f) H(t).

    Args:
        t: (nt,) times (s); r: offset (m); v: velocity (m/s); f: peak frequency (Hz);
        delay: wavelet delay (s); dh: grid spacing (m) of the point source; ns: quadrature nodes.

    Returns:
        (nt,) float64 field samples.
    """
    t0 = r / v
    tt = np.maximum(np.asarray(t, dtype=np.float64), t0)
    smax = np.arccosh(tt / t0)  # (nt,) upper limit where t - tau reaches 0
    x = np.linspace(0.0, 1.0, ns)
    s = smax[:, None] * x[None, :]  # (nt, ns)
    g = ricker(tt[:, None] - t0 * np.cosh(s) - delay, f).astype(np.float64)
    return dh**2 / (2.0 * np.pi) * np.trapezoid(g, x, axis=1) * smax


@pytest.fixture(scope="module", params=[4, 8], ids=lambda o: f"order{o}")
def homogeneous_record(request):
    """(spatial_order, record (NT, 2 * len(OFFSETS)) float64): receivers along +x then +z."""
    order = request.param
    solver = Propagator(Acoustic(device="cpu", spatial_order=order), shape=(N_GRID, N_GRID), dh=DH,
                        dt=DT, nt=NT, pml_width=PML, impl="eager", memory=MemoryOptions(strategy="full"))
    w = ricker(np.arange(NT) * DT - DELAY, FREQ)
    src = np.array([[SRC, SRC]])
    rec = np.array([[[SRC + o, SRC] for o in OFFSETS] + [[SRC, SRC + o] for o in OFFSETS]])
    vp = torch.full((N_GRID, N_GRID), V0)
    with torch.no_grad():
        d = solver(w, src, rec, models=[vp])  # (1, NT, R, 1)
    assert d.shape == (1, NT, rec.shape[1], 1)
    return order, d[0, :, :, 0].double().numpy()


def test_homogeneous_matches_analytic_green_function(homogeneous_record, cosine):
    order, d = homogeneous_record
    t = (np.arange(NT) + 1) * DT  # record[n] samples t = (n + 1) dt
    peaks_num, peaks_ana = [], []
    for j, off in enumerate(OFFSETS):
        ana = analytic_trace(t, off * DH, V0, FREQ, DELAY, DH)
        corr = cosine(d[:, j], ana)
        assert corr > 0.995, f"order {order}, offset {off} cells: correlation {corr:.6f}"
        peaks_num.append(np.abs(d[:, j]).max())
        peaks_ana.append(np.abs(ana).max())
        # The source scaling (v dt)^2 at one cell of area dh^2 fixes the absolute amplitude.
        amp = peaks_num[-1] / peaks_ana[-1]
        assert abs(amp - 1.0) < 0.05, f"order {order}, offset {off} cells: peak ratio num/analytic {amp:.4f}"
    ratio_num = peaks_num[1] / peaks_num[0]
    ratio_ana = peaks_ana[1] / peaks_ana[0]
    assert abs(ratio_num / ratio_ana - 1.0) < 0.05, (
        f"order {order}: geometric spreading far/near {ratio_num:.4f} vs analytic {ratio_ana:.4f}"
    )


def test_homogeneous_record_samples_field_after_step(homogeneous_record, rel_l2):
    """record[:, n] is u at t = (n + 1) dt: that alignment fits the analytic trace best."""
    order, d = homogeneous_record
    errors = {}
    for shift in (0, 1, 2):
        t = (np.arange(NT) + shift) * DT
        errors[shift] = rel_l2(d[:, 0], analytic_trace(t, OFFSETS[0] * DH, V0, FREQ, DELAY, DH))
    assert errors[1] < 0.05, f"order {order}: rel L2 to analytic at t=(n+1)dt is {errors[1]:.4f}"
    assert errors[1] < 0.25 * min(errors[0], errors[2]), f"order {order}: errors by time shift {errors}"


def test_homogeneous_isotropic_along_axes(homogeneous_record, rel_l2):
    """Same offset along x and along z gives the same trace (square cells, same stencil)."""
    _, d = homogeneous_record
    k = len(OFFSETS)
    for j in range(k):
        assert rel_l2(d[:, k + j], d[:, j]) < 1e-6


def test_pml_matches_unbounded_domain(eager_propagator, ricker_wavelet):
    """A 41x41 model with a 20-cell CPML vs the same source/receivers inside a model so large
    that nothing comes back from its edges within the 0.8 s window."""
    n, ext, nt = 41, 60, 400
    # Receivers near the edges and in a corner of the small model, where reflections hit first.
    rec_small = np.array([[[2, 2], [38, 20], [20, 38], [20, 2], [30, 5]]])
    src_small = np.array([[20, 20]])
    # Shortest path source -> big model's edge -> receiver: (20 + ext) + (ext + 2) cells
    # = 142 cells = 2840 m, far beyond v * T + wavelet length = 1600 + 600 m.
    w = ricker_wavelet(nt, DT, FREQ, DELAY)
    small = eager_propagator((n, n), DH, DT, nt, spatial_order=4, pml_width=20)
    big = eager_propagator((n + 2 * ext, n + 2 * ext), DH, DT, nt, spatial_order=4, pml_width=20)
    with torch.no_grad():
        d_small = small(w, src_small, rec_small, models=[torch.full((n, n), V0)])[0, :, :, 0]
        d_big = big(w, src_small + ext, rec_small + ext,
                     models=[torch.full((n + 2 * ext, n + 2 * ext), V0)])[0, :, :, 0]
    peak = d_big.abs().amax(dim=0)  # (R,) direct-wave peak per receiver
    err = (d_small - d_big).abs().amax(dim=0) / peak  # (R,)
    assert bool((err < 0.01).all()), f"max |small - large| / direct peak per receiver: {err.tolist()}"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-6)], ids=["fp32", "fp64"])
@pytest.mark.parametrize("order", [4, 8])
def test_reciprocity_heterogeneous(order, dtype, tol, marmousi_crop, eager_propagator, ricker_wavelet, rel_l2):
    """Swapping source and receiver in a Marmousi crop leaves the trace unchanged.

    With M = diag(1/v^2) the interior scheme is M u_tt = L u + f delta_s with L symmetric,
    so its Green's function is symmetric. Measured: float32 ~3e-6 (rounding), float64
    1.4e-7 (order 4) / 3.7e-7 (order 8), the discrete CPML not being exactly reciprocal.
    """
    vp, _ = marmousi_crop(40, 60, 2)
    nt, freq = 500, 8.0
    solver = eager_propagator(vp.shape, 25.0, DT, nt, spatial_order=order, pml_width=20)
    a, b = [5, 8], [50, 30]  # [x, z], one in the water, one in the sediments
    w = ricker_wavelet(nt, DT, freq, DELAY)
    with torch.no_grad():
        d = solver(w, np.array([a, b]), np.array([[b], [a]]), models=[torch.from_numpy(vp).to(dtype)])
    d = d[:, :, 0, 0]  # (2, nt)
    assert float(d.abs().max()) > 0
    err = rel_l2(d[1], d[0])
    assert err < tol, f"reciprocity rel L2 {err:.3e}"


def _small_marmousi_case(marmousi_crop, small_acquisition, eager_propagator, pml_freq):
    vp, _ = marmousi_crop(30, 40, 2)
    nt = 200
    solver = eager_propagator(vp.shape, 25.0, DT, nt, spatial_order=4, pml_width=10, pml_freq=pml_freq)
    src, rec = small_acquisition(30, 40, 2, 7)
    rec = rec.copy()
    rec[1, :, 1] = 6  # the second shot's receivers at another depth
    return solver, torch.from_numpy(vp), src, rec, nt


def test_record_linear_in_wavelet(marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2):
    """Superposition in the source for a fixed CPML (pml_freq given)."""
    solver, vp, src, rec, nt = _small_marmousi_case(marmousi_crop, small_acquisition, eager_propagator, 8.0)
    w1 = ricker_wavelet(nt, DT, 8.0, 0.15)
    w2 = ricker_wavelet(nt, DT, 5.0, 0.25)
    with torch.no_grad():
        d1 = solver(w1, src, rec, models=[vp])
        d2 = solver(w2, src, rec, models=[vp])
        d_double = solver(2 * w1, src, rec, models=[vp])
        d_sum = solver(w1 - 0.7 * w2, src, rec, models=[vp])
    assert d1.abs().max() > 0
    assert rel_l2(d_double, 2 * d1) < 1e-6
    assert rel_l2(d_sum, d1 - 0.7 * d2) < 1e-5


@pytest.mark.parametrize("pml_freq", [8.0, None], ids=["pml_freq8", "pml_freq_default"])
def test_batch_equals_single_shots(pml_freq, marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2):
    """A batch of two shots sharing one (nt,) wavelet equals two single-shot runs."""
    solver, vp, src, rec, nt = _small_marmousi_case(marmousi_crop, small_acquisition, eager_propagator, pml_freq)
    w = ricker_wavelet(nt, DT, 8.0, 0.15)
    with torch.no_grad():
        batch = solver(w, src, rec, models=[vp])  # (2, nt, R, 1)
        singles = [solver(w, src[i:i + 1], rec[i:i + 1], models=[vp]) for i in range(2)]
    assert batch.shape == (2, nt, rec.shape[1], 1)
    for i in range(2):
        assert rel_l2(batch[i:i + 1], singles[i]) < 1e-6


def _batch_wavelets_case(pml_freq, marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2):
    solver, vp, src, rec, nt = _small_marmousi_case(marmousi_crop, small_acquisition, eager_propagator, pml_freq)
    w = np.stack([ricker_wavelet(nt, DT, 8.0, 0.15), ricker_wavelet(nt, DT, 6.0, 0.2)])  # (2, nt)
    with torch.no_grad():
        batch = solver(w, src, rec, models=[vp])  # (2, nt, R, 1)
        singles = [solver(w[i], src[i:i + 1], rec[i:i + 1], models=[vp]) for i in range(2)]
    for i in range(2):
        assert rel_l2(batch[i:i + 1], singles[i]) < 1e-6


def test_batch_with_per_shot_wavelets_equals_single_shots(marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2):
    """Per-shot (B, nt) wavelets with a fixed CPML frequency: each shot is independent."""
    _batch_wavelets_case(8.0, marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2)


def test_batch_with_per_shot_wavelets_default_pml_freq_equals_single_shots(marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2):
    """Same with the default pml_freq=None: the CPML frequency is frozen at the first call."""
    _batch_wavelets_case(None, marmousi_crop, small_acquisition, eager_propagator, ricker_wavelet, rel_l2)
