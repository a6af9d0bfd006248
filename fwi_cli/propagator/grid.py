"""Grid, stencils, CPML and acquisition geometry shared by every implementation.

Discretisation (both impls compute exactly this operator, float32):

* Padded grid: the (nz, nx) interior is surrounded by ``P = pml_width`` CPML cells on each
  side, (nzp, nxp) = (nz + 2P, nx + 2P); the velocity is extended by edge replication.
  Outside the padded grid the wavefield is zero (Dirichlet), so every stencil below is a
  plain Toeplitz operator: ``Dxx`` is symmetric and ``Dx`` antisymmetric.
* Space: centred differences of order M = ``spatial_order`` (2, 4, 8), N = M/2 points a side:

      Dxx u[i, j] = sum_{k=-N..N} c_|k| u[i, j+k] / dh^2,   Dx u[i, j] = sum_{k=1..N} d_k (u[i, j+k] - u[i, j-k]) / dh

* Time (leapfrog) with CPML auxiliary fields psi (first derivative) and zeta (second),
  non-zero only inside their PML strips (mx, mz are the strip masks). This discretises
  (1/s_x) d/dx ((1/s_x) du/dx) with 1/s_x f = f + psi[f], psi^n = b psi^{n-1} + a f^n:

      psi_x^n  = b_x psi_x^{n-1}  + a_x Dx u^n           (same in z)
      Ax    = Dxx u^n + mx * Dx psi_x^n
      zeta_x^n = b_x zeta_x^{n-1} + a_x Ax
      L^n   = Ax + Az + zeta_x^n + zeta_z^n
      u^{n+1} = 2 u^n - u^{n-1} + (v dt)^2 L^n,   u^{n+1}[src] += (v dt)^2[src] f^n
      record[n, r] = u^{n+1}[rec_r]

  with b = exp(-(d + alpha) dt), a = d (b - 1) / (d + alpha), d(r) = d0 r^2,
  alpha(r) = pi f_pml (1 - r), d0 = -3 vmax ln(R) / (2 P dh), r in (0, 1] the fractional depth
  into the PML (0 in the interior). In the interior a = 0, so an interior cell's update
  reads only the wavefield within N cells: the "ring" of N PML layers around the interior.
* Stability (von Neumann, no PML): dt <= 2 dh / (vmax sqrt(2 S)), S = -c0 - 2 sum_k c_k (-1)^k.
* Dispersion (a warning, not an error): G = vmin / (fmax dh) grid points per shortest
  wavelength, with fmax the highest frequency at which the wavelet's amplitude spectrum is
  at least 3 % of its peak (about 2.5 f for a Ricker of peak f). Below
  ``MIN_POINTS_PER_WAVELENGTH[order]`` (10 / 5 / 3.5 for orders 2 / 4 / 8) the stencil's 1D
  phase velocity at fmax is low by more than about 1.6 / 1.2 / 0.8 %:
  :func:`dispersion_warning` says so, with the figure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from fwi_cli.errors import CFLError, FwiArgumentError

#: Fewest grid points per shortest wavelength accepted without a warning, per spatial order.
#: At exactly these figures the stencil's 1D phase velocity at fmax is low by 1.6 % (order 2),
#: 1.2 % (order 4) and 0.8 % (order 8) (the symbol of the second-derivative weights).
MIN_POINTS_PER_WAVELENGTH = {2: 10.0, 4: 5.0, 8: 3.5}
#: Amplitude (fraction of the spectrum's peak) that defines the highest useful frequency.
USEFUL_SPECTRUM_FRACTION = 0.03

PML_REFLECTION = 1e-5  # target normal-incidence reflection coefficient R of the CPML

# Centred finite-difference weights (exact rationals), index k = 0..N.
_SECOND = {
    2: [Fraction(-2), Fraction(1)],
    4: [Fraction(-5, 2), Fraction(4, 3), Fraction(-1, 12)],
    8: [Fraction(-205, 72), Fraction(8, 5), Fraction(-1, 5), Fraction(8, 315), Fraction(-1, 560)],
}
_FIRST = {
    2: [Fraction(0), Fraction(1, 2)],
    4: [Fraction(0), Fraction(2, 3), Fraction(-1, 12)],
    8: [Fraction(0), Fraction(4, 5), Fraction(-1, 5), Fraction(4, 105), Fraction(-1, 280)],
}


def half_width(spatial_order: int) -> int:
    """N = spatial_order / 2: stencil points on each side of a cell."""
    return spatial_order // 2


def second_derivative_weights(spatial_order: int) -> list[float]:
    """Weights c_0..c_N of the centred second derivative (unit spacing)."""
    return [float(c) for c in _SECOND[spatial_order]]


def first_derivative_weights(spatial_order: int) -> list[float]:
    """Weights d_0..d_N (d_0 = 0) of the centred first derivative (unit spacing)."""
    return [float(c) for c in _FIRST[spatial_order]]


@functools.lru_cache(maxsize=64)
def _scaled_weights(spatial_order: int, dh: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    c2 = tuple(float(np.float32(c / dh**2)) for c in second_derivative_weights(spatial_order))
    c1 = tuple(float(np.float32(c / dh)) for c in first_derivative_weights(spatial_order)[1:])
    return c2, c1


def scaled_weights(spatial_order: int, dh: float) -> tuple[list[float], list[float]]:
    """Float32-rounded stencil weights used by every implementation.

    Returns:
        (c2, c1): c_0..c_N / dh^2 and d_1..d_N / dh, each value exactly a float32 (fresh lists;
        computed once per order and spacing, since every propagator call asks).
    """
    c2, c1 = _scaled_weights(int(spatial_order), float(dh))
    return list(c2), list(c1)


@functools.lru_cache(maxsize=8)
def _cfl_sum(spatial_order: int) -> float:
    """-c_0 - 2 sum_k (-1)^k c_k of the second-derivative weights (exact, then float)."""
    c = _SECOND[spatial_order]
    return float(-c[0] - 2 * sum(ck * (-1) ** k for k, ck in enumerate(c) if k > 0))


def cfl_limit(spatial_order: int, dh: float, vmax: float) -> float:
    """Largest stable dt (s) of the leapfrog scheme for the given order, spacing, vmax."""
    return 2.0 * dh / (vmax * math.sqrt(2.0 * _cfl_sum(spatial_order)))


def cpml_profile(n: int, pml: int, dh: float, dt: float, vmax: float, f_pml: float) -> tuple[np.ndarray, np.ndarray]:
    """1D CPML coefficients (a, b) along one axis of the padded grid.

    Args:
        n: interior cells along the axis.
        pml: PML cells on each side.
        dh: spacing (m); dt: time step (s); vmax: max velocity (m/s); f_pml: frequency (Hz)
            of the complex-frequency shift alpha.

    Returns:
        (a, b): two (n + 2 pml,) float32 arrays; a = 0 outside the PML.
    """
    npad = n + 2 * pml
    a = np.zeros(npad, np.float64)
    b = np.zeros(npad, np.float64)
    if pml == 0:
        return a.astype(np.float32), b.astype(np.float32)
    idx = np.arange(npad)
    r = np.zeros(npad)
    left = idx < pml
    right = idx >= pml + n
    r[left] = (pml - idx[left]) / pml
    r[right] = (idx[right] - (pml + n - 1)) / pml
    d0 = -3.0 * vmax * math.log(PML_REFLECTION) / (2.0 * pml * dh)
    d = d0 * r**2
    alpha = math.pi * f_pml * (1.0 - r)
    inside = r > 0
    b[inside] = np.exp(-(d[inside] + alpha[inside]) * dt)
    denom = d + alpha
    ok = inside & (denom > 0)
    a[ok] = d[ok] * (b[ok] - 1.0) / denom[ok]
    return a.astype(np.float32), b.astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """Sizes of a padded grid and its boundary ring.

    Attributes:
        nz, nx: interior cells; pml: PML width; n_half: stencil half-width N.
    """

    nz: int
    nx: int
    pml: int
    n_half: int

    @property
    def nzp(self) -> int:
        return self.nz + 2 * self.pml

    @property
    def nxp(self) -> int:
        return self.nx + 2 * self.pml

    @property
    def ring_cells(self) -> int:
        """Cells of the boundary ring per shot and step: 2N(nz + nx)."""
        return 2 * self.n_half * (self.nz + self.nx)

    def ring_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Flat indices (into the (nzp, nxp) grid) of the ring, in storage order.

        Order: top strip (N rows x nx), bottom strip (N x nx), left strip (nz x N),
        right strip (nz x N), each row-major.

        Returns:
            (2N(nz+nx),) int64 tensor.
        """
        p, n, nz, nx, nxp = self.pml, self.n_half, self.nz, self.nx, self.nxp
        rows_tb = [np.arange(p - n, p), np.arange(p + nz, p + nz + n)]
        cols_lr = [np.arange(p - n, p), np.arange(p + nx, p + nx + n)]
        parts = []
        for rows in rows_tb:
            rr, cc = np.meshgrid(rows, np.arange(p, p + nx), indexing="ij")
            parts.append((rr * nxp + cc).reshape(-1))
        for cols in cols_lr:
            rr, cc = np.meshgrid(np.arange(p, p + nz), cols, indexing="ij")
            parts.append((rr * nxp + cc).reshape(-1))
        return torch.from_numpy(np.concatenate(parts)).to(device)


def pad_model(v: torch.Tensor, pml: int) -> torch.Tensor:
    """Extend an interior model into the PML by edge replication.

    The extension is a fixed function of the detached model: the gradient with respect
    to ``v`` flows through the interior cells only.

    Args:
        v: (nz, nx) velocity, m/s.

    Returns:
        (nz + 2 pml, nx + 2 pml) tensor; differentiable in ``v`` through its interior.
    """
    if pml == 0:
        return v
    ext = torch.nn.functional.pad(v.detach()[None, None], (pml, pml, pml, pml), mode="replicate")[0, 0]
    inner = torch.nn.functional.pad(v, (pml, pml, pml, pml))
    mask = torch.zeros_like(ext, dtype=torch.bool)
    mask[pml:-pml, pml:-pml] = True
    return torch.where(mask, inner, ext)


def check_model(v: torch.Tensor, shape: tuple[int, int]) -> tuple[float, float]:
    """Refuse a velocity model of the wrong shape or with non-finite/non-positive values.

    Returns:
        (vmin, vmax) in m/s, read from the device in one transfer (min and max propagate NaN,
        and an infinity shows in one of them, so both finite means every value is).
    """
    if tuple(v.shape) != tuple(shape):
        raise FwiArgumentError(
            f"velocity model has shape {tuple(v.shape)} but the propagator was built for "
            f"shape {tuple(shape)}; pass a (nz, nx) model of that shape"
        )
    lo, hi = torch.stack(torch.aminmax(v.detach())).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise FwiArgumentError("velocity model contains NaN or Inf values; every velocity must be finite")
    if lo <= 0:
        raise FwiArgumentError(f"velocity must be positive everywhere (m/s), found min {lo:g}")
    return lo, hi


def check_cfl(dt: float, spatial_order: int, dh: float, vmax: float) -> None:
    """Raise :class:`CFLError` if dt is above the stability limit for vmax."""
    limit = cfl_limit(spatial_order, dh, vmax)
    if dt > limit:
        raise CFLError(
            f"dt = {dt:g} s is above the CFL limit {limit:.6g} s for vmax = {vmax:g} m/s, "
            f"dh = {dh:g} m, spatial_order = {spatial_order}; lower dt or coarsen the model"
        )


def useful_max_frequency(wavelet, dt: float) -> float:
    """Highest frequency (Hz) at which the amplitude spectrum of ``wavelet`` is at least
    ``USEFUL_SPECTRUM_FRACTION`` of its peak (about 2.5 f for a Ricker of peak f).

    Args:
        wavelet: (nt,) source time function.
        dt: its sample interval, s.

    Returns:
        fmax in Hz (0.0 for an all-zero wavelet).
    """
    w = np.asarray(wavelet, dtype=np.float64).reshape(-1)
    big = np.nonzero(np.abs(w) > 1e-6 * np.abs(w).max())[0] if w.size else w
    if big.size:
        w = w[big[0] : big[-1] + 1]  # the support: the spectrum's shape, at less cost
    nfft = 1 << max(12, min(22, int(8 * max(w.size, 1) - 1).bit_length()))  # fine grid, bounded
    amp = np.abs(np.fft.rfft(w, nfft))
    peak = float(amp.max()) if amp.size else 0.0
    if not (np.isfinite(peak) and peak > 0):
        return 0.0
    k = int(np.nonzero(amp >= USEFUL_SPECTRUM_FRACTION * peak)[0][-1])
    return k / (nfft * dt)


def points_per_wavelength(vmin: float, fmax: float, dh: float) -> float:
    """Grid points per shortest wavelength, vmin / (fmax dh) (inf when fmax is 0)."""
    return math.inf if fmax <= 0 else vmin / (fmax * dh)


def dispersion_warning(spatial_order: int, dh: float, vmin: float, fmax: float) -> str | None:
    """The message of a too-coarse grid (None when there are enough points per wavelength).

    Args:
        spatial_order: 2, 4 or 8.  dh: grid spacing, m.  vmin: slowest velocity, m/s.
        fmax: highest useful frequency of the wavelet, Hz (:func:`useful_max_frequency`).
    """
    g = points_per_wavelength(vmin, fmax, dh)
    need = MIN_POINTS_PER_WAVELENGTH[spatial_order]
    if g >= need:
        return None
    return (
        f"{g:.2f} grid points per wavelength (vmin {vmin:g} m/s, fmax {fmax:.3g} Hz, "
        f"dh {dh:g} m) is below {need:g}, the minimum for spatial_order {spatial_order}: "
        "the simulated waves are dispersed; use a finer grid (smaller dh), a lower source "
        "frequency or a higher spatial_order"
    )


def as_index_array(x, name: str, ndim: int) -> np.ndarray:
    """Convert source/receiver coordinates to an int64 array with ``ndim`` dims."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != ndim or arr.shape[-1] != 2:
        want = "(B, 2)" if ndim == 2 else "(B, R, 2)"
        raise FwiArgumentError(f"{name} must have shape {want} with columns [x, z], got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise FwiArgumentError(f"{name} coordinates must be whole grid indices [x, z]")
    elif arr.dtype.kind not in "iu":
        raise FwiArgumentError(f"{name} coordinates must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_inside(arr: np.ndarray, name: str, nz: int, nx: int) -> None:
    """Refuse grid indices [x, z] outside the (nz, nx) interior."""
    x, z = arr[..., 0], arr[..., 1]
    bad = (x < 0) | (x >= nx) | (z < 0) | (z >= nz)
    if bad.any():
        first = tuple(int(c) for c in arr[bad][0])
        raise FwiArgumentError(
            f"{name} at grid index [x, z] = {list(first)} lies outside the model grid "
            f"(x in [0, {nx - 1}], z in [0, {nz - 1}]); {int(bad.sum())} {name}(s) are outside"
        )


def flat_index(arr: np.ndarray, pml: int, nxp: int) -> np.ndarray:
    """Flat index into the padded grid of interior [x, z] coordinates."""
    return (arr[..., 1] + pml) * nxp + (arr[..., 0] + pml)
