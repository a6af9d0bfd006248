"""Propagator: the 2D acoustic wave-equation operator and its gradient.

Public API: :class:`Propagator`, :class:`MemoryOptions`, :class:`BoundaryOptions`,
:class:`EagerOptions`. The operator is documented in :mod:`fwi_cli.propagator.grid`.
"""

from fwi_cli.propagator.api import MemoryReport, Propagator
from fwi_cli.propagator.options import BoundaryOptions, EagerOptions, MemoryOptions

__all__ = ["Propagator", "MemoryOptions", "BoundaryOptions", "EagerOptions", "MemoryReport"]
