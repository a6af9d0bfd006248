"""Every bad argument is refused with a ValueError whose message names it.

Checks of a call's arguments run in ``Propagator._prepare`` before the implementation is
chosen, so they are exercised for ``impl="c"`` too (no compiled backend needed).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fwi_cli.equations import Acoustic
from fwi_cli.errors import CFLError, FwiArgumentError
from fwi_cli.propagator import BoundaryOptions, MemoryOptions, Propagator

NZ, NX, DH, DT, NT, V0 = 12, 16, 10.0, 0.001, 10, 2000.0
IMPLS = pytest.mark.parametrize("impl", ["eager", "c"])


def _solver(impl: str, spatial_order: int = 4, dt: float = DT, **kwargs) -> Propagator:
    kwargs.setdefault("pml_width", 4)
    return Propagator(Acoustic(device="cpu", spatial_order=spatial_order), shape=(NZ, NX), dh=DH, dt=dt,
                      nt=NT, impl=impl, memory=MemoryOptions(strategy="full"), **kwargs)


def _good_args(nshots: int = 2, nrec: int = 3):
    """A valid (wavelet (NT,), sources (B, 2), receivers (B, R, 2), models [vp]) call."""
    wavelet = np.sin(np.arange(NT) * 0.5).astype(np.float32)
    sources = np.array([[3 + 5 * i, 1] for i in range(nshots)])
    receivers = np.array([[[2 + 4 * r, 3] for r in range(nrec)] for _ in range(nshots)])
    return wavelet, sources, receivers, [torch.full((NZ, NX), V0)]


def _refuses(solver: Propagator, pattern: str, *, wavelet=None, sources=None, receivers=None, models=None):
    w, s, r, m = _good_args()
    with pytest.raises(ValueError, match=pattern) as info:
        solver(w if wavelet is None else wavelet, s if sources is None else sources,
               r if receivers is None else receivers, models=m if models is None else models)
    assert isinstance(info.value, FwiArgumentError)
    return info.value


def test_eager_good_arguments_run():
    """The base case of this module is valid: only the one bad argument makes a test fail."""
    w, s, r, m = _good_args()
    with torch.no_grad():
        out = _solver("eager")(w, s, r, models=m)
    assert out.shape == (2, NT, 3, 1)


# ----------------------------------------------------------------------------- geometry
@IMPLS
@pytest.mark.parametrize("bad", [[-1, 1], [NX, 1], [3, -1], [3, NZ]], ids=["x<0", "x>=nx", "z<0", "z>=nz"])
def test_source_outside_grid_refused(impl, bad):
    _, s, _, _ = _good_args()
    s[1] = bad
    _refuses(_solver(impl), r"source", sources=s)


@IMPLS
@pytest.mark.parametrize("bad", [[-1, 3], [NX, 3], [2, -1], [2, NZ]], ids=["x<0", "x>=nx", "z<0", "z>=nz"])
def test_receiver_outside_grid_refused(impl, bad):
    _, _, r, _ = _good_args()
    r[0, 2] = bad
    _refuses(_solver(impl), r"receiver", receivers=r)


@IMPLS
def test_sources_wrong_shape_or_fractional_refused(impl):
    solver = _solver(impl)
    _refuses(solver, r"source", sources=np.array([[3, 1, 0], [8, 1, 0]]))
    _refuses(solver, r"source", sources=np.array([3, 1]))
    _refuses(solver, r"source", sources=np.array([[3.5, 1.0], [8.0, 1.0]]))


@IMPLS
def test_receivers_wrong_shape_refused(impl):
    _refuses(_solver(impl), r"receiver", receivers=np.array([[2, 3], [6, 3]]))


@IMPLS
def test_batch_mismatch_refused(impl):
    _, _, r, _ = _good_args(nshots=3)
    err = _refuses(_solver(impl), r"batch", receivers=r)
    assert "source" in str(err) and "receiver" in str(err)


# ----------------------------------------------------------------------------- CFL
def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text)]


@IMPLS
def test_dt_above_cfl_limit_refused_with_dt_and_limit(impl):
    limit = _solver(impl).cfl_limit(V0)
    dt = 1.05 * limit
    err = _refuses(_solver(impl, dt=dt), r"CFL")
    assert isinstance(err, CFLError)
    numbers = _numbers(str(err))
    assert any(math.isclose(x, dt, rel_tol=1e-5) for x in numbers), f"dt {dt} not in: {err}"
    assert any(math.isclose(x, limit, rel_tol=1e-5) for x in numbers), f"limit {limit} not in: {err}"


@IMPLS
def test_cfl_uses_the_model_maximum_velocity(impl):
    """dt is stable for 2000 m/s but not once one cell is 3000 m/s."""
    solver = _solver(impl, dt=0.9 * _solver(impl).cfl_limit(V0))
    vp = torch.full((NZ, NX), V0)
    vp[7, 9] = 1.5 * V0
    _refuses(solver, r"CFL", models=[vp])


@pytest.mark.parametrize("order", [2, 4, 8])
def test_dt_just_below_cfl_limit_accepted(order):
    limit = _solver("eager", spatial_order=order).cfl_limit(V0)
    w, s, r, m = _good_args()
    with torch.no_grad():
        out = _solver("eager", spatial_order=order, dt=0.999 * limit)(w, s, r, models=m)
    assert bool(torch.isfinite(out).all())


# ----------------------------------------------------------------------------- models
@IMPLS
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 0.0, -1500.0],
                         ids=["nan", "inf", "-inf", "zero", "negative"])
def test_bad_velocity_refused(impl, value):
    vp = torch.full((NZ, NX), V0)
    vp[5, 6] = value
    _refuses(_solver(impl), r"velocity", models=[vp])


@IMPLS
@pytest.mark.parametrize("shape", [(NZ, NX + 1), (NX, NZ), (1, NZ, NX)], ids=["nx+1", "transposed", "3d"])
def test_wrong_model_shape_refused(impl, shape):
    err = _refuses(_solver(impl), r"shape", models=[torch.full(shape, V0)])
    assert "velocity" in str(err)


@IMPLS
def test_models_not_a_one_element_list_refused(impl):
    vp = torch.full((NZ, NX), V0)
    _refuses(_solver(impl), r"models", models=vp)
    _refuses(_solver(impl), r"models", models=[vp, vp])


@IMPLS
def test_integer_model_dtype_refused(impl):
    _refuses(_solver(impl), r"float32", models=[torch.full((NZ, NX), 2000, dtype=torch.int64)])


def test_float64_model_refused_for_compiled_impl():
    _refuses(_solver("c"), r"float64", models=[torch.full((NZ, NX), V0, dtype=torch.float64)])


# ----------------------------------------------------------------------------- wavelet
@IMPLS
@pytest.mark.parametrize(
    "shape", [(3, NT), (NT - 1,), (2, NT - 1), (2, NT, 1)], ids=["batch3", "short", "batch-short", "3d"]
)
def test_wavelet_shape_mismatch_refused(impl, shape):
    _refuses(_solver(impl), r"wavelet", wavelet=np.ones(shape, np.float32))


@IMPLS
def test_non_finite_wavelet_refused(impl):
    w = np.ones(NT, np.float32)
    w[4] = np.nan
    _refuses(_solver(impl), r"wavelet", wavelet=w)


# ----------------------------------------------------------------------------- constructor
@pytest.mark.parametrize("order", [0, 3, 6, 10])
def test_bad_spatial_order_refused(order):
    with pytest.raises(ValueError, match=r"spatial_order"):
        Acoustic(device="cpu", spatial_order=order)


@pytest.mark.parametrize("impl", ["cuda", "torch", "", None])
def test_bad_impl_refused(impl):
    with pytest.raises(FwiArgumentError, match=r"impl"):
        _solver(impl)


@IMPLS
@pytest.mark.parametrize("order,pml", [(2, 0), (4, 1), (8, 3), (4, 2.5), (4, -5)])
def test_pml_width_too_small_refused(impl, order, pml):
    with pytest.raises(FwiArgumentError, match=r"pml_width"):
        _solver(impl, spatial_order=order, pml_width=pml)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"dh": 0.0}, "dh"), ({"dh": float("nan")}, "dh"), ({"dt": -0.001}, "dt"), ({"dt": 0.0}, "dt"),
        ({"nt": 0}, "nt"), ({"nt": 2.5}, "nt"), ({"shape": (NZ, 0)}, "shape"), ({"shape": (NZ,)}, "shape"),
    ],
)
def test_bad_grid_arguments_refused(kwargs, name):
    args = dict(shape=(NZ, NX), dh=DH, dt=DT, nt=NT)
    args.update(kwargs)
    with pytest.raises(FwiArgumentError, match=rf"\b{name}\b"):
        Propagator(Acoustic(device="cpu"), pml_width=4, impl="eager", **args)


def test_equation_and_memory_types_refused():
    with pytest.raises(FwiArgumentError, match=r"equation"):
        Propagator("acoustic", shape=(NZ, NX), dh=DH, dt=DT, nt=NT)
    with pytest.raises(FwiArgumentError, match=r"memory"):
        Propagator(Acoustic(device="cpu"), shape=(NZ, NX), dh=DH, dt=DT, nt=NT, memory={"strategy": "full"})


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("strategy", ["partial", "Full", "", None])
def test_bad_memory_strategy_refused(strategy):
    with pytest.raises(ValueError, match=r"strategy"):
        MemoryOptions(strategy=strategy)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"storage": "tape"}, "storage"), ({"storage": "GPU"}, "storage"),
        ({"storage_dtype": "fp8"}, "storage_dtype"), ({"storage_dtype": "float32"}, "storage_dtype"),
        ({"transfer_interval": 0}, "transfer_interval"), ({"transfer_interval": -3}, "transfer_interval"),
        ({"transfer_interval": 2.0}, "transfer_interval"), ({"transfer_interval": True}, "transfer_interval"),
    ],
)
def test_bad_boundary_options_refused(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        BoundaryOptions(**kwargs)


def test_boundary_strategy_gets_default_boundary_options():
    opts = MemoryOptions(strategy="boundary")
    assert isinstance(opts.boundary, BoundaryOptions)
    assert (opts.boundary.storage, opts.boundary.storage_dtype) == ("gpu", "fp32")
