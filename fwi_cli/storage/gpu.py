"""The ``gpu`` tier: the whole encoded ring lives in compute-device memory.

The parts of all ``nt`` steps are allocated once at construction (``ring_nbytes`` bytes);
``put`` encodes a chunk straight into its steps and ``get`` decodes them. Steps may be
written and read in any order. With ``fp32`` the result of ``get`` is a view of the ring.
"""

from __future__ import annotations

import torch

from fwi_cli.storage.base import RingStore
from fwi_cli.storage.codecs import Codec, Fp32Codec


class GpuRingStore(RingStore):
    """Ring kept on the compute device (the name says "gpu"; any torch device works).

    Args:
        nt, batch, cells, device: see :class:`RingStore`.
        codec: how a step is encoded.
    """

    def __init__(self, nt: int, batch: int, cells: int, device, codec: Codec) -> None:
        super().__init__(nt, batch, cells, device)
        self.codec = codec
        self._parts = codec.allocate(nt, batch, cells, self.device)  # each (nt, B, ...)
        self._nbytes = sum(p.numel() * p.element_size() for p in self._parts)

    @torch.no_grad()
    def put(self, n0: int, chunk: torch.Tensor) -> None:
        t = self._check_put(n0, chunk)  # chunk: (T, B, C)
        self.codec.encode(chunk.detach(), [p[n0:n0 + t] for p in self._parts])

    def writable(self, n0: int, t: int) -> torch.Tensor | None:
        if not isinstance(self.codec, Fp32Codec):
            return None
        self._check_open()
        self._check_range(n0, t, "put")
        return self._parts[0][n0:n0 + t]  # (t, B, C), contiguous: the steps are the outer dim

    @torch.no_grad()
    def get(self, n0: int, t: int) -> torch.Tensor:
        self._check_open()
        self._check_range(n0, t)
        return self.codec.decode([p[n0:n0 + t] for p in self._parts])  # (t, B, C)

    def close(self) -> None:
        super().close()
        self._parts = []

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def device_nbytes(self) -> int:
        return self._nbytes
