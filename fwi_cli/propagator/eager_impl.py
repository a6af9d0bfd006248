"""Dispatch of ``impl="eager"`` to its memory strategies."""

from __future__ import annotations

import torch

from fwi_cli.propagator import eager


def run(prop, v2dt2: torch.Tensor, w: torch.Tensor, src_flat: torch.Tensor, rec_flat: torch.Tensor, cpml, needs_grad: bool) -> torch.Tensor:
    """Run the eager implementation; returns the (B, nt, R) record.

    Args:
        prop: the calling Propagator.
        v2dt2: (nzp, nxp) (v dt)^2.
        w: (B, nt) wavelet; src_flat: (B, 1); rec_flat: (B, R) flat padded indices.
        cpml: (ax, bx, az, bz) numpy CPML coefficients.
        needs_grad: whether the caller will differentiate the record.
    """
    from fwi_cli.propagator.api import MemoryReport

    strategy = prop.memory.strategy
    if not needs_grad or strategy == "full":
        k = eager.make_coefficients(prop.spatial_order, prop.dh, *cpml, v2dt2)
        prop.last_memory = MemoryReport(strategy="full" if needs_grad else "none")
        if not needs_grad:
            with torch.no_grad():
                return eager.forward_full(k, w, src_flat, rec_flat, prop.nt)
        return eager.forward_full(k, w, src_flat, rec_flat, prop.nt)
    from fwi_cli.propagator import eager_boundary  # boundary saving, pure PyTorch

    return eager_boundary.run(prop, v2dt2, w, src_flat, rec_flat, cpml)
