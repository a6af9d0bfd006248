"""Shared fixtures and helpers of the CPU test suite.

Fixtures (all function-valued, so a test asks for the helper it needs):

* ``rel_l2(a, b)``: relative L2 error ||a - b|| / ||b|| of arrays or tensors (float64 maths).
* ``cosine(a, b)``: cosine similarity <a, b> / (||a|| ||b||) of arrays or tensors.
* ``marmousi_crop(nz, nx, decimate=2, z0=0, x0=None)``: (vp_true, vp_init) float32 numpy
  (nz, nx) crops of the shipped Marmousi2 models after keeping every ``decimate``-th sample;
  ``x0`` defaults to the middle of the model, ``z0`` to the sea surface (so the crop starts
  with the water layer).
* ``homogeneous_model(nz, nx, v=2000.0, dtype=torch.float32)``: constant (nz, nx) model tensor.
* ``small_acquisition(nz, nx, nshots, nrec, src_z=2, rec_z=4)``: the seed's layout on a small
  grid: sources (nshots, 2) int64 ``[x, z]`` at ``linspace(0.1 nx, 0.9 nx, nshots)``,
  receivers (nshots, nrec, 2) int64 ``[x, z]`` at ``linspace(0, nx - 1, nrec)``, depths
  clipped into the grid.
* ``ricker_wavelet(nt, dt, freq, delay)``: (nt,) float32 Ricker sampled at ``n dt``.
* ``eager_propagator(shape, dh, dt, nt, spatial_order=4, pml_width=20, **kwargs)``: a CPU
  ``impl="eager"`` :class:`~fwi_cli.propagator.Propagator` with ``MemoryOptions("full")``.

Markers: ``gpu`` tests are skipped when ``torch.cuda.is_available()`` is false; ``slow``
marks tests longer than a few seconds on 2 cores.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from fwi_cli.datasets import load_marmousi
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import MemoryOptions, Propagator
from fwi_cli.signal import ricker


# ---------------------------------------------------------------------------- markers
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: longer than a few seconds on 2 cores")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


# ---------------------------------------------------------------------------- helpers
def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def rel_l2_error(a, b) -> float:
    """||a - b|| / ||b|| in float64 (``b`` is the reference; arrays or tensors, same shape)."""
    a, b = _as_float64(a), _as_float64(b)
    if a.shape != b.shape:
        raise ValueError(f"rel_l2: shapes differ: {a.shape} vs {b.shape}")
    nb = np.linalg.norm(b.ravel())
    if nb == 0:
        raise ValueError("rel_l2: the reference b is all zeros")
    return float(np.linalg.norm((a - b).ravel()) / nb)


def cosine_similarity(a, b) -> float:
    """<a, b> / (||a|| ||b||) in float64 (arrays or tensors, same shape, neither all zero)."""
    a, b = _as_float64(a).ravel(), _as_float64(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cosine: shapes differ: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cosine: an argument is all zeros")
    return float(a @ b / (na * nb))


@functools.cache
def _marmousi_decimated(which: str, decimate: int) -> np.ndarray:
    vp = load_marmousi(which)[::decimate, ::decimate].copy()
    vp.setflags(write=False)
    return vp


def marmousi_crop_arrays(nz: int, nx: int, decimate: int = 2, z0: int = 0, x0: int | None = None):
    """(vp_true, vp_init): float32 (nz, nx) crops of the decimated Marmousi2 models (fresh copies)."""
    true = _marmousi_decimated("true", decimate)
    init = _marmousi_decimated("smooth", decimate)
    nz_full, nx_full = true.shape
    if x0 is None:
        x0 = (nx_full - nx) // 2
    if not (0 <= z0 and z0 + nz <= nz_full and 0 <= x0 and x0 + nx <= nx_full):
        raise ValueError(
            f"marmousi_crop: [{z0}:{z0 + nz}, {x0}:{x0 + nx}] does not fit the decimated "
            f"model of shape {(nz_full, nx_full)}"
        )
    sl = (slice(z0, z0 + nz), slice(x0, x0 + nx))
    return true[sl].astype(np.float32, copy=True), init[sl].astype(np.float32, copy=True)


def acquisition_arrays(nz: int, nx: int, nshots: int, nrec: int, src_z: int = 2, rec_z: int = 4):
    """Seed-style sources (nshots, 2) and receivers (nshots, nrec, 2), int64 ``[x, z]``."""
    src_x = np.linspace(nx * 0.1, nx * 0.9, nshots).astype(np.int64)
    src_x = np.clip(src_x, 0, nx - 1)
    rec_x = np.linspace(0, nx - 1, nrec).astype(np.int64)
    sz, rz = min(src_z, nz - 1), min(rec_z, nz - 1)
    sources = np.stack([src_x, np.full(nshots, sz, dtype=np.int64)], 1)  # (nshots, 2)
    row = np.stack([rec_x, np.full(nrec, rz, dtype=np.int64)], 1)  # (nrec, 2)
    receivers = np.repeat(row[None], nshots, 0)  # (nshots, nrec, 2)
    return sources, receivers


def ricker_samples(nt: int, dt: float, freq: float, delay: float) -> np.ndarray:
    """(nt,) float32 Ricker wavelet of peak frequency ``freq`` Hz, centred at ``delay`` s."""
    return ricker(np.arange(nt) * dt - delay, freq)


def make_eager_propagator(shape, dh, dt, nt, spatial_order=4, pml_width=20, **kwargs) -> Propagator:
    """A CPU eager Propagator keeping the full history for the gradient."""
    kwargs.setdefault("memory", MemoryOptions(strategy="full"))
    return Propagator(
        Acoustic(device="cpu", spatial_order=spatial_order), shape=shape, dh=dh, dt=dt, nt=nt,
        pml_width=pml_width, impl="eager", **kwargs,
    )


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture
def rel_l2():
    """Function ``rel_l2(a, b) -> float``: ||a - b|| / ||b||."""
    return rel_l2_error


@pytest.fixture
def cosine():
    """Function ``cosine(a, b) -> float``: cosine similarity."""
    return cosine_similarity


@pytest.fixture
def marmousi_crop():
    """Factory ``(nz, nx, decimate=2, z0=0, x0=None) -> (vp_true, vp_init)`` float32 numpy."""
    return marmousi_crop_arrays


@pytest.fixture
def homogeneous_model():
    """Factory ``(nz, nx, v=2000.0, dtype=torch.float32) -> (nz, nx)`` CPU tensor."""

    def make(nz: int, nx: int, v: float = 2000.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.full((nz, nx), float(v), dtype=dtype)

    return make


@pytest.fixture
def small_acquisition():
    """Factory ``(nz, nx, nshots, nrec, src_z=2, rec_z=4) -> (sources, receivers)`` numpy int64."""
    return acquisition_arrays


@pytest.fixture
def ricker_wavelet():
    """Factory ``(nt, dt, freq, delay) -> (nt,)`` float32 Ricker wavelet."""
    return ricker_samples


@pytest.fixture
def eager_propagator():
    """Factory of CPU ``impl="eager"`` propagators (``MemoryOptions(strategy="full")`` default)."""
    return make_eager_propagator
