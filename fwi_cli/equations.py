"""Wave equations the propagator can solve.

Only the 2D constant-density acoustic equation is provided:

    d^2 p / dt^2 = v(z, x)^2 (d^2 p / dz^2 + d^2 p / dx^2) + v^2 s(t) delta(z - zs, x - xs)

with p the pressure wavefield, v the P-wave velocity (m/s) and s the source wavelet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fwi_cli.errors import FwiArgumentError

SPATIAL_ORDERS = (2, 4, 8)


@dataclass
class Acoustic:
    """2D constant-density acoustic wave equation.

    Args:
        device: where models and wavefields live ("cpu", "cuda", "cuda:1", a torch.device).
        spatial_order: accuracy order of the centred space derivatives: 2, 4 or 8.
    """

    device: torch.device | str | None = None
    spatial_order: int = 4
    name: str = field(default="acoustic", init=False)

    def __post_init__(self) -> None:
        if self.spatial_order not in SPATIAL_ORDERS:
            raise FwiArgumentError(
                f"spatial_order must be one of {SPATIAL_ORDERS}, got {self.spatial_order!r}"
            )
        self.device = torch.device(self.device if self.device is not None else "cpu")

    @property
    def nparams(self) -> int:
        """Number of model parameters the equation takes (velocity only)."""
        return 1
