"""Pure-PyTorch implementation of the operator of :mod:`fwi_cli.propagator.grid`.

The time step is written with tensor slicing (no convolutions, so no TF32), and the
gradient of the "full" strategy comes from autograd through every step: it is the exact
discrete adjoint, the oracle the compiled implementation is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fwi_cli.propagator.grid import scaled_weights


@dataclass
class StepCoefficients:
    """Everything a time step needs besides the wavefields.

    Attributes:
        c2: second-derivative weights c_0..c_N divided by dh^2.
        c1: first-derivative weights d_1..d_N divided by dh.
        ax, bx: (1, 1, nxp) CPML coefficients along x; az, bz: (1, nzp, 1) along z.
        mx: (1, 1, nxp) 1 in the x-PML strips, else 0; mz: (1, nzp, 1) likewise.
        v2dt2: (nzp, nxp) (v dt)^2 on the padded grid (differentiable in the interior).
    """

    c2: list[float]
    c1: list[float]
    ax: torch.Tensor
    bx: torch.Tensor
    az: torch.Tensor
    bz: torch.Tensor
    mx: torch.Tensor
    mz: torch.Tensor
    v2dt2: torch.Tensor

    @property
    def n_half(self) -> int:
        return len(self.c2) - 1


def make_coefficients(spatial_order: int, dh: float, ax, bx, az, bz, v2dt2: torch.Tensor) -> StepCoefficients:
    """Build :class:`StepCoefficients` on the device and dtype of ``v2dt2``.

    Args:
        ax, bx: (nxp,) numpy CPML coefficients along x; az, bz: (nzp,) along z.
        v2dt2: (nzp, nxp) tensor.
    """
    dev, dt_ = v2dt2.device, v2dt2.dtype
    c2, c1 = scaled_weights(spatial_order, dh)

    def t(a, shape):
        return torch.as_tensor(a, device=dev).to(dt_).reshape(shape)

    ax_t, bx_t = t(ax, (1, 1, -1)), t(bx, (1, 1, -1))
    az_t, bz_t = t(az, (1, -1, 1)), t(bz, (1, -1, 1))
    return StepCoefficients(
        c2=c2, c1=c1, ax=ax_t, bx=bx_t, az=az_t, bz=bz_t,
        mx=(ax_t != 0).to(dt_), mz=(az_t != 0).to(dt_), v2dt2=v2dt2,
    )


def _shift_views(f: torch.Tensor, n: int):
    """Zero-pad the last two dims of ``f`` (B, nzp, nxp) by n; return (padded, nzp, nxp)."""
    return F.pad(f, (n, n, n, n)), f.shape[-2], f.shape[-1]


def second_derivatives(u: torch.Tensor, c2: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dzz u, Dxx u) of a (B, nzp, nxp) field with zero outside the grid."""
    n = len(c2) - 1
    up, nz, nx = _shift_views(u, n)
    dzz = c2[0] * u
    dxx = c2[0] * u
    for k in range(1, n + 1):
        dzz = dzz + c2[k] * (up[:, n + k:n + k + nz, n:n + nx] + up[:, n - k:n - k + nz, n:n + nx])
        dxx = dxx + c2[k] * (up[:, n:n + nz, n + k:n + k + nx] + up[:, n:n + nz, n - k:n - k + nx])
    return dzz, dxx


def first_derivative_x(f: torch.Tensor, c1: list[float]) -> torch.Tensor:
    """Dx f of a (B, nzp, nxp) field with zero outside the grid."""
    n = len(c1)
    fp, nz, nx = _shift_views(f, n)
    out = None
    for k in range(1, n + 1):
        term = c1[k - 1] * (fp[:, n:n + nz, n + k:n + k + nx] - fp[:, n:n + nz, n - k:n - k + nx])
        out = term if out is None else out + term
    return out


def first_derivative_z(f: torch.Tensor, c1: list[float]) -> torch.Tensor:
    """Dz f of a (B, nzp, nxp) field with zero outside the grid."""
    n = len(c1)
    fp, nz, nx = _shift_views(f, n)
    out = None
    for k in range(1, n + 1):
        term = c1[k - 1] * (fp[:, n + k:n + k + nz, n:n + nx] - fp[:, n - k:n - k + nz, n:n + nx])
        out = term if out is None else out + term
    return out


def step(u, u_prev, psi_x, psi_z, zeta_x, zeta_z, k: StepCoefficients):
    """One leapfrog step with CPML (see the module docstring of ``grid``).

    Args:
        u, u_prev: (B, nzp, nxp) wavefields at steps n and n-1.
        psi_x, psi_z, zeta_x, zeta_z: (B, nzp, nxp) CPML auxiliary fields at step n-1.
        k: step coefficients.

    Returns:
        (u_next, lap, psi_x, psi_z, zeta_x, zeta_z): u^{n+1} without the source term,
        L^n (so that u^{n+1} = 2u^n - u^{n-1} + v2dt2 L^n) and the auxiliary fields at n.
    """
    psi_x = k.bx * psi_x + k.ax * first_derivative_x(u, k.c1)
    psi_z = k.bz * psi_z + k.az * first_derivative_z(u, k.c1)
    dzz, dxx = second_derivatives(u, k.c2)
    ax_ = dxx + k.mx * first_derivative_x(psi_x, k.c1)
    az_ = dzz + k.mz * first_derivative_z(psi_z, k.c1)
    zeta_x = k.bx * zeta_x + k.ax * ax_
    zeta_z = k.bz * zeta_z + k.az * az_
    lap = ax_ + az_ + zeta_x + zeta_z
    u_next = 2 * u - u_prev + k.v2dt2 * lap
    return u_next, lap, psi_x, psi_z, zeta_x, zeta_z


def forward_full(k: StepCoefficients, wavelet: torch.Tensor, src_flat: torch.Tensor, rec_flat: torch.Tensor, nt: int) -> torch.Tensor:
    """Run nt steps for a batch of shots, differentiable by autograd in ``k.v2dt2``.

    Args:
        k: step coefficients (``k.v2dt2`` (nzp, nxp)).
        wavelet: (B, nt) source amplitudes per shot.
        src_flat: (B, 1) flat source index in the padded grid.
        rec_flat: (B, R) flat receiver indices in the padded grid.
        nt: number of steps.

    Returns:
        (B, nt, R) record, record[:, n] = u^{n+1} at the receivers.
    """
    b = wavelet.shape[0]
    nzp, nxp = k.v2dt2.shape
    z = torch.zeros(b, nzp, nxp, dtype=k.v2dt2.dtype, device=k.v2dt2.device)
    u, u_prev = z, z
    psi_x = psi_z = zeta_x = zeta_z = z
    src_scale = k.v2dt2.reshape(-1)[src_flat[:, 0]]  # (B,)
    records = []
    for n in range(nt):
        u_next, _, psi_x, psi_z, zeta_x, zeta_z = step(u, u_prev, psi_x, psi_z, zeta_x, zeta_z, k)
        flat = u_next.reshape(b, -1)
        flat = flat.scatter_add(1, src_flat, (src_scale * wavelet[:, n])[:, None])
        records.append(flat.gather(1, rec_flat))
        u_prev, u = u, flat.reshape(b, nzp, nxp)
    return torch.stack(records, dim=1)
