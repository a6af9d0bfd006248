"""fwi: full-waveform inversion of the 2D constant-density acoustic wave equation.

The library lives in sub-packages whose names show the layers:
``propagator`` (wave-equation operator and its gradient), ``storage`` (boundary-ring
codecs and tiers), ``experiment`` (YAML configs, jobs, Zarr stores), ``report`` (figures)
and ``cli`` (the Typer command line).
"""

__version__ = "0.1.0"
