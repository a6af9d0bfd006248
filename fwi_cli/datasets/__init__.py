"""Velocity models shipped with fwi.

Marmousi2 P-wave velocity (true and smoothed starting model) on a 12.5 m grid,
(nz, nx) = (281, 1361), m/s, row 0 at the sea surface. Credit: G. S. Martin, R. Wiley and
K. J. Marfurt (2006), Marmousi2: An elastic upgrade for Marmousi, The Leading Edge 25(2),
156-166, doi:10.1190/1.2172306; built by the Allied Geophysical Laboratories, University of
Houston, distributed through SEG Open Data. Provenance and terms: ``data/README.md``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from fwi_cli.errors import FwiArgumentError

MARMOUSI_DH = 12.5  # m, grid spacing of the shipped Marmousi2 models
MARMOUSI_CREDIT = (
    "Marmousi2: Martin, Wiley & Marfurt (2006), The Leading Edge 25(2), 156-166, "
    "doi:10.1190/1.2172306 (AGL, University of Houston; SEG Open Data)"
)
_FILES = {"true": "marmousi2_vp_12.5m.npy", "smooth": "marmousi2_vp_smooth_12.5m.npy"}
PRESETS = tuple(_FILES)


def load_marmousi(which: str = "true") -> np.ndarray:
    """Load a Marmousi2 velocity model.

    Args:
        which: "true" (the reference model) or "smooth" (the starting model).

    Returns:
        (281, 1361) float32 array, m/s, (z, x) order, 12.5 m spacing.
    """
    if which not in _FILES:
        raise FwiArgumentError(f"load_marmousi: which must be one of {PRESETS}, got {which!r}")
    path = resources.files(__name__) / "data" / _FILES[which]
    with resources.as_file(path) as p:
        return np.load(p).astype(np.float32, copy=False)
