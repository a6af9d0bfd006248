"""Options that choose how the gradient is computed and where its saved state lives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fwi_cli.errors import FwiArgumentError

STRATEGIES = ("full", "boundary")
STORAGES = ("gpu", "cpu", "disk")
STORAGE_DTYPES = ("fp32", "fp16", "bf16", "int8")


@dataclass
class BoundaryOptions:
    """Where and how the boundary ring of a boundary-saving gradient is kept.

    Args:
        storage: "gpu" (compute-device memory), "cpu" (host memory) or "disk" (files).
        storage_dtype: "fp32" (exact), "bf16" (2 bytes/cell), "fp16" (2 bytes/cell plus a
            power-of-two exponent per 256 cells, so no amplitude overflows) or "int8"
            (1 byte/cell plus one fp32 scale per 256 cells).
        transfer_interval: steps per chunk moved to/from the cpu or disk tier (>= 1).
        pinned_memory: use page-locked host memory for the cpu tier (CUDA only).
        disk_dir: directory for the disk tier's files; None means a fresh temp directory.
    """

    storage: str = "gpu"
    storage_dtype: str = "fp32"
    transfer_interval: int = 8
    pinned_memory: bool = True
    disk_dir: str | Path | None = None

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise FwiArgumentError(
                f"BoundaryOptions.storage must be one of {STORAGES}, got {self.storage!r}"
            )
        if self.storage_dtype not in STORAGE_DTYPES:
            raise FwiArgumentError(
                f"BoundaryOptions.storage_dtype must be one of {STORAGE_DTYPES}, "
                f"got {self.storage_dtype!r}"
            )
        if isinstance(self.transfer_interval, bool) or not isinstance(self.transfer_interval, int) or self.transfer_interval < 1:
            raise FwiArgumentError(
                "BoundaryOptions.transfer_interval must be an integer >= 1 (steps per chunk), "
                f"got {self.transfer_interval!r}"
            )


@dataclass
class MemoryOptions:
    """How the forward pass keeps what the gradient needs.

    Args:
        strategy: "full" (keep the whole interior history) or "boundary" (keep only the
            ring of cells around the interior each step, plus the final two frames, and
            reconstruct the interior in reverse time).
        boundary: options of the boundary ring (only for strategy "boundary").
    """

    strategy: str = "boundary"
    boundary: BoundaryOptions | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise FwiArgumentError(
                f"MemoryOptions.strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.strategy == "boundary" and self.boundary is None:
            self.boundary = BoundaryOptions()


@dataclass
class EagerOptions:
    """Options of the pure-PyTorch implementation.

    Args:
        use_compile: compile the time step with ``torch.compile`` (None: automatic,
            on for CUDA when available, off on CPU).
        adjoint: how the boundary-saving backward steps the adjoint: "manual" (the
            transposed step written with tensor ops, fastest, compiled and graph-captured
            on CUDA) or "autograd" (the VJP of each single step from autograd; slower).
            Both are the exact discrete adjoint.
        extra: implementation switches, e.g. {"cuda_graphs": False}.
    """

    use_compile: bool | None = None
    adjoint: str = "manual"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.adjoint not in ("manual", "autograd"):
            raise FwiArgumentError(f"EagerOptions.adjoint must be 'manual' or 'autograd', got {self.adjoint!r}")
