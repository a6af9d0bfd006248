"""The interface every boundary-ring store keeps.

A ring store holds, for each of ``nt`` time steps, a (B, C) float32 ring (B shots, C ring
cells per shot) in some tier and dtype. The forward pass writes chunks of consecutive steps
in increasing step order; the backward pass reads chunks in decreasing step order.
"""

from __future__ import annotations

import abc

import torch


class RingStore(abc.ABC):
    """Abstract boundary-ring store.

    Args:
        nt: number of steps to hold.
        batch: shots B.
        cells: ring cells per shot C.
        device: compute device (where ``put`` chunks come from and ``get`` chunks go).
    """

    def __init__(self, nt: int, batch: int, cells: int, device: torch.device) -> None:
        self.nt, self.batch, self.cells, self.device = nt, batch, cells, torch.device(device)

    @abc.abstractmethod
    def put(self, n0: int, chunk: torch.Tensor) -> None:
        """Store steps n0..n0+T-1. ``chunk``: (T, B, C) float32 on the compute device.

        The caller may overwrite ``chunk`` after the call returns (the store copies or
        encodes it, ordering any asynchronous copy on the current stream).
        """

    @abc.abstractmethod
    def get(self, n0: int, t: int) -> torch.Tensor:
        """Steps n0..n0+t-1 as (t, B, C) float32 on the compute device (decoded)."""

    def finish_forward(self) -> None:
        """Called once after the last ``put`` (flush pending writes)."""

    def close(self) -> None:
        """Release memory and delete files; idempotent."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes the stored ring occupies in its tier (codes plus scales)."""

    @property
    def device_nbytes(self) -> int:
        """Bytes of the ring held in compute-device memory (staging buffers included)."""
        return 0
