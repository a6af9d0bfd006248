"""The project's error types.

Every error the library raises on purpose derives from :class:`FwiError`. Errors in
arguments also derive from :class:`ValueError`, so callers may catch either. Messages name
the offending argument and say how to fix it; the CLI prints them as one line.
"""

from __future__ import annotations


class FwiError(Exception):
    """Base class of every error raised on purpose by fwi."""


class FwiArgumentError(FwiError, ValueError):
    """A bad argument: the message names it and the fix."""


class CFLError(FwiArgumentError):
    """The time step is above the stability (CFL) limit of the scheme."""


class ConfigError(FwiArgumentError):
    """An experiment file (or an override) is invalid."""


class BackendUnavailableError(FwiError, RuntimeError):
    """The compiled backend cannot be built or loaded on this machine."""


class StorageError(FwiError, OSError):
    """The boundary storage tier failed (disk full, unwritable directory, lost files)."""


class JobFailedError(FwiError, RuntimeError):
    """An inversion job failed (for example a non-finite loss)."""


class DeviceMemoryError(FwiError, MemoryError):
    """The compute device (or the host) ran out of memory; the message gives the estimated
    need of the call and what to change (smaller batch, cpu/disk tier, int8)."""


class RunLockedError(FwiError, RuntimeError):
    """Another fwi process is writing the same run directory."""


class FwiWarning(UserWarning):
    """A result may be inaccurate (for example too few grid points per wavelength)."""
