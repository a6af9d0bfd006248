"""Shipped Marmousi2 models and the source wavelet helpers."""

from __future__ import annotations

import numpy as np
import pytest

from fwi_cli.datasets import MARMOUSI_DH, PRESETS, load_marmousi
from fwi_cli.signal import dominant_frequency, ricker


@pytest.mark.parametrize("which", ["true", "smooth"])
def test_load_marmousi_shape_dtype_values(which):
    vp = load_marmousi(which)
    assert vp.shape == (281, 1361)
    assert vp.dtype == np.float32
    assert bool(np.isfinite(vp).all())
    assert 1000.0 <= float(vp.min()) and float(vp.max()) <= 4800.0
    # sea surface row: water (the smoothed model is within a few m/s of it)
    np.testing.assert_allclose(vp[0], 1500.0, atol=5.0 if which == "smooth" else 0.0)


def test_load_marmousi_true_has_water_layer():
    vp = load_marmousi("true")
    # The top 450 m (36 rows of 12.5 m) are water everywhere.
    np.testing.assert_array_equal(vp[: int(450 / MARMOUSI_DH)], 1500.0)
    assert float(vp[-1].min()) > 1500.0  # the bottom row is rock


def test_load_marmousi_default_is_true_and_copies_are_independent():
    a = load_marmousi()
    np.testing.assert_array_equal(a, load_marmousi("true"))
    a[0, 0] = -1.0
    assert float(load_marmousi("true")[0, 0]) == 1500.0


def test_load_marmousi_smooth_start_rmse_at_25m():
    """The seed's starting misfit: RMSE(true, smooth) on the 25 m grid is 357.3 m/s."""
    true = load_marmousi("true")[::2, ::2].astype(np.float64)
    smooth = load_marmousi("smooth")[::2, ::2].astype(np.float64)
    assert true.shape == (141, 681)
    rmse = float(np.sqrt(np.mean((true - smooth) ** 2)))
    assert rmse == pytest.approx(357.29, abs=0.01)


@pytest.mark.parametrize("name", ["marmousi", "TRUE", "", "init"])
def test_load_marmousi_bad_name_refused(name):
    with pytest.raises(ValueError, match=r"which") as info:
        load_marmousi(name)
    for preset in PRESETS:
        assert preset in str(info.value)


def test_ricker_peak_and_symmetry():
    f, dt = 7.0, 0.001
    t = np.arange(-400, 401) * dt  # symmetric about 0
    w = ricker(t, f)
    assert w.dtype == np.float32 and w.shape == t.shape
    assert float(w[400]) == 1.0
    assert int(np.argmax(w)) == 400
    np.testing.assert_array_equal(w, w[::-1])


def test_ricker_matches_formula_and_zero_crossings():
    f = 5.0
    t = np.linspace(-0.5, 0.5, 1001)
    a = (np.pi * f * t) ** 2
    np.testing.assert_allclose(ricker(t, f), (1 - 2 * a) * np.exp(-a), rtol=1e-6, atol=1e-7)
    # zeros at t = +-1 / (sqrt(2) pi f)
    t0 = 1.0 / (np.sqrt(2.0) * np.pi * f)
    assert abs(float(ricker(np.array([t0, -t0]), f).max())) < 1e-6


@pytest.mark.parametrize("f", [0.0, -5.0, float("nan"), float("inf")])
def test_ricker_bad_frequency_refused(f):
    with pytest.raises(ValueError, match=r"frequency"):
        ricker(np.zeros(4), f)


@pytest.mark.parametrize("f", [3.0, 5.0, 10.0, 25.0])
def test_dominant_frequency_of_ricker(f):
    dt, nt = 0.002, 2000
    delay = 1.5 / f  # the whole wavelet after t = 0: its spectrum peaks exactly at f
    w = ricker(np.arange(nt) * dt - delay, f)
    resolution = 1.0 / (4 * nt * dt)  # the function pads to 4 nt samples
    assert abs(dominant_frequency(w, dt) - f) <= resolution


def test_dominant_frequency_of_zero_signal_is_zero():
    assert dominant_frequency(np.zeros(64), 0.001) == 0.0
