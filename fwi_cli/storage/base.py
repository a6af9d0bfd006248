"""The interface every boundary-ring store keeps.

A ring store holds, for each of ``nt`` time steps, a (B, C) float32 ring (B shots, C ring
cells per shot) in some tier and dtype. The forward pass writes chunks of consecutive steps
in increasing step order; the backward pass reads chunks in decreasing step order.

Stores are context managers (``with make_ring_store(...) as store:``): leaving the block,
normally or by an exception (KeyboardInterrupt included), calls :meth:`RingStore.close`.
"""

from __future__ import annotations

import abc

import torch

from fwi_cli.errors import FwiArgumentError, StorageError


def head(t: torch.Tensor, steps: int) -> torch.Tensor:
    """The first ``steps`` rows of ``t`` (``t`` itself when it has exactly that many: the
    staged tiers call this per block and part, and a slice costs a dispatcher call)."""
    return t if t.shape[0] == steps else t[:steps]


class RingStore(abc.ABC):
    """Abstract boundary-ring store.

    Args:
        nt: number of steps to hold.
        batch: shots B.
        cells: ring cells per shot C.
        device: compute device (where ``put`` chunks come from and ``get`` chunks go).
    """

    def __init__(self, nt: int, batch: int, cells: int, device: torch.device) -> None:
        for name, value, low in (("nt", nt, 1), ("batch", batch, 1), ("cells", cells, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise FwiArgumentError(
                    f"ring store: {name} must be an integer >= {low}, got {value!r}"
                )
        self.nt, self.batch, self.cells, self.device = nt, batch, cells, torch.device(device)
        self._closed = False

    @abc.abstractmethod
    def put(self, n0: int, chunk: torch.Tensor) -> None:
        """Store steps n0..n0+T-1. ``chunk``: (T, B, C) float32 on the compute device.

        The caller may overwrite ``chunk`` after the call returns (the store copies or
        encodes it, ordering any asynchronous copy on the current stream).
        """

    @abc.abstractmethod
    def get(self, n0: int, t: int) -> torch.Tensor:
        """Steps n0..n0+t-1 as (t, B, C) float32 on the compute device (decoded).

        The result may alias the store's memory (the gpu tier with fp32 returns a view of
        the ring): treat it as read-only.
        """

    def writable(self, n0: int, t: int) -> torch.Tensor | None:
        """A (t, B, C) float32 view of the store's own memory for steps n0..n0+t-1, or None.

        When a store keeps rings as they come (the gpu tier in fp32), the forward writes each
        chunk straight into this view instead of a scratch buffer and ``put``: one copy of the
        ring per chunk less. Writing the view stores those steps. Stores that encode or move
        rings return None (the default), and the caller uses ``put``.
        """
        return None

    def finish_forward(self) -> None:
        """Called once after the last ``put`` (flush pending writes)."""
        return None

    def prefetch(self, n0: int, t: int) -> None:
        """A hint: the next ``get`` will be ``get(n0, t)``; a store that moves rings may start
        loading those steps now (the default does nothing). Values never depend on it; a
        tier's errors (StorageError) may surface here instead of at that ``get``, and a tier
        that reads files may block here as the ``get`` would."""
        return None

    def close(self) -> None:
        """Release memory and delete files; idempotent."""
        self._closed = True

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes the stored ring occupies in its tier (codes plus scales)."""

    @property
    def device_nbytes(self) -> int:
        """Bytes of the ring held in compute-device memory (staging buffers included)."""
        return 0

    @property
    def host_nbytes(self) -> int:
        """Bytes held in host memory (the cpu tier's ring, disk staging buffers)."""
        return 0

    def __enter__(self) -> RingStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Helpers for subclasses: argument checks that name the argument and the fix.

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{type(self).__name__} is closed; create a new ring store")

    def _check_put(self, n0: int, chunk: torch.Tensor) -> int:
        """Validate a ``put``; return T."""
        self._check_open()
        want = (self.batch, self.cells)
        if chunk.dim() != 3 or tuple(chunk.shape[1:]) != want:
            raise FwiArgumentError(
                f"ring store put: chunk must have shape (T, {want[0]}, {want[1]}), "
                f"got {tuple(chunk.shape)}"
            )
        if chunk.dtype != torch.float32:
            raise FwiArgumentError(f"ring store put: chunk must be float32, got {chunk.dtype}")
        if chunk.device != self.device and not (
            chunk.device.type == self.device.type == "cuda" and self.device.index is None
        ):
            raise FwiArgumentError(
                f"ring store put: chunk is on {chunk.device}, the store's device is {self.device}"
            )
        t = chunk.shape[0]
        self._check_range(n0, t, "put")
        return t

    def _check_range(self, n0: int, t: int, what: str = "get") -> None:
        if not (0 <= n0 and t >= 0 and n0 + t <= self.nt):
            raise FwiArgumentError(
                f"ring store {what}: steps [{n0}, {n0 + t}) are outside [0, {self.nt})"
            )
