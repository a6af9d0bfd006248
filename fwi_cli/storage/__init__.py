"""Boundary-ring storage: codecs (fp32/fp16/bf16/int8) and tiers (gpu/cpu/disk).

Contract used by both implementations (see ``base.RingStore``): the forward pass ``put``s
chunks of consecutive steps in increasing order, the backward pass ``get``s them in
decreasing order; every value comes back as float32 on the compute device.

Use :func:`make_ring_store` to build the store an options object asks for, and
:func:`ring_nbytes` for the size of a stored ring without building one.

Tiers (``BoundaryOptions.storage``):

* ``gpu`` (:class:`GpuRingStore`): the encoded ring for all nt steps in compute-device
  memory; any put/get order; ``get`` with fp32 returns a view (read-only).
* ``cpu`` (:class:`CpuRingStore`) and ``disk`` (:class:`DiskRingStore`): the ring moves in
  blocks of ``transfer_interval`` steps, through two device staging slots or straight
  from/to a chunk's fp16/int8 codes (see :mod:`fwi_cli.storage.staged`). ``put`` takes chunks of any length T and buffers them
  into blocks, so callers choose chunk sizes freely; puts must be consecutive from step
  0. ``get`` takes any range; decreasing ranges are overlapped with compute by prefetch.

Byte accounting of every store: ``nbytes`` (the stored ring, codes plus per-block scales
or exponents, in its tier; equals :func:`ring_nbytes`), ``device_nbytes`` (compute-device
memory: all of it for gpu, the two staging blocks for cpu/disk), ``host_nbytes`` (host
memory: the cpu tier's ring, the disk tier's I/O buffers). Stores are context managers;
always ``close()`` them (the disk tier also cleans up when garbage-collected and at
interpreter exit).
"""

from __future__ import annotations

import torch

from fwi_cli.errors import FwiArgumentError
from fwi_cli.propagator.options import STORAGES, BoundaryOptions
from fwi_cli.storage.base import RingStore
from fwi_cli.storage.codecs import CODECS, INT8_BLOCK, Codec, get_codec, ring_nbytes
from fwi_cli.storage.disk import DiskRingStore
from fwi_cli.storage.gpu import GpuRingStore
from fwi_cli.storage.staged import CpuRingStore, StagedRingStore

__all__ = [
    "CODECS",
    "INT8_BLOCK",
    "Codec",
    "CpuRingStore",
    "DiskRingStore",
    "GpuRingStore",
    "RingStore",
    "StagedRingStore",
    "get_codec",
    "make_ring_store",
    "ring_nbytes",
]


def make_ring_store(
    nt: int, batch: int, cells: int, device, options: BoundaryOptions | None = None, kernels=None
) -> RingStore:
    """The ring store ``options`` asks for.

    Args:
        nt: steps to hold.
        batch: shots B.
        cells: ring cells per shot C.
        device: compute device (torch.device or its name).
        options: tier, dtype, transfer interval, pinning, disk directory; None: defaults
            (gpu tier, fp32).
        kernels: the loaded compiled ops (``torch.ops.fwi``) or None; with them the int8 and
            fp16 codecs run as one fused kernel each way (``codecs.FUSED``).

    Raises:
        FwiArgumentError: unknown tier or dtype, transfer_interval < 1, bad sizes.
        StorageError: the disk tier cannot create its directory or files.
    """
    if options is None:
        options = BoundaryOptions()
    codec = get_codec(options.storage_dtype, kernels)
    k = options.transfer_interval
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FwiArgumentError(
            "BoundaryOptions.transfer_interval must be an integer >= 1 (steps per chunk), "
            f"got {k!r}"
        )
    device = torch.device(device)
    if options.storage == "gpu":
        return GpuRingStore(nt, batch, cells, device, codec)
    if options.storage == "cpu":
        return CpuRingStore(nt, batch, cells, device, codec, k, pinned_memory=options.pinned_memory)
    if options.storage == "disk":
        return DiskRingStore(
            nt, batch, cells, device, codec, k,
            disk_dir=options.disk_dir, pinned_memory=options.pinned_memory,
        )
    raise FwiArgumentError(
        f"BoundaryOptions.storage must be one of {STORAGES}, got {options.storage!r}"
    )
