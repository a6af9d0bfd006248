"""Staged tiers: the ring lives off the compute device and moves in blocks of K steps.

The steps are cut into blocks of ``K = transfer_interval`` steps, block ``j`` holding steps
``[jK, min((j+1)K, nt))``. Two *staging slots*, each holding the encoded parts of one block,
live on the compute device (``device_nbytes`` = 2 K B row_bytes; fp16/int8 also hold one
chunk of codes while a put or get runs, and at most one earlier put's codes until its copies
are done; every codec holds the codes of one prefetched range from ``prefetch`` to its
``get``):

* forward: ``put(n0, chunk)`` accepts any chunk length T; it encodes each piece of the chunk
  that falls into block ``j`` into slot ``j mod 2`` on the current (compute) stream. When a
  block is full it is copied out (device -> host) on a side CUDA stream, ordered by events:
  the side stream waits for the encode ("ready" event), and the next encode into the same
  slot waits for the copy ("free" event). So the copy of block j overlaps the compute of
  block j+1. A codec with ``whole_chunks`` (fp16, bf16, int8) codes the whole chunk once instead, and
  the blocks that lie wholly inside the chunk are copied out straight from those codes (one
  event for the chunk, the codes kept alive for the side stream with ``record_stream``): no
  staging copy, and a third of the host-side torch calls per block. Such a run of whole blocks
  is handed to the tier at once (:meth:`StagedRingStore._store_run`); the cpu tier moves it
  in one copy per part, since its host ring is contiguous in steps. Puts must come in
  increasing, consecutive steps starting at 0.
* backward: ``get(n0, t)`` accepts any range; it loads the blocks the range touches into the
  slots (host -> device on the side stream, the compute stream waits for "ready"), decodes
  them into a fresh (t, B, C) float32 tensor on the compute stream (fp16/int8: the codes of
  the range are gathered first and decoded once; blocks wholly in the range and in no slot are
  loaded straight into the gathered codes, a run of them at once, one event each way per
  call), and records "free"
  (after the decode, or for fp16/int8 after the copy into the gathered codes) so the next load
  into that slot waits for it. Before returning it starts loading the
  block just below the range into the other slot, so that copy overlaps the caller's
  compute of this range. Decreasing ranges are the fast path; any order is correct.
* ``prefetch(n0, t)`` (the backward calls it for the next range after launching each chunk):
  loads a range of whole blocks into codes of its own on the side stream at once; the matching
  ``get`` then only waits for them and decodes (see :meth:`StagedRingStore.prefetch`).

On a CPU device there are no streams: the same code runs with synchronous copies, so the
block logic is the one tested here. The tier itself (where a block goes) is a subclass:
:class:`CpuRingStore` keeps the whole encoded ring in host memory, pinned when asked and the
device is CUDA (without pinning the copies are synchronous and do not overlap compute).
"""

from __future__ import annotations

import contextlib

import torch

from fwi_cli.errors import FwiArgumentError, StorageError
from fwi_cli.storage.base import RingStore, head
from fwi_cli.storage.codecs import Codec

#: ``prefetch`` loads ranges ahead (a module switch, for A/B measurements of the hint).
LOAD_AHEAD = True


class _Slot:
    """One device staging buffer holding the encoded parts of one block."""

    def __init__(self, parts: list[torch.Tensor], cuda: bool) -> None:
        self.parts = parts  # each (K, B, ...)
        self.block = -1  # which block the contents are (-1: none)
        self.ready = torch.cuda.Event() if cuda else None  # contents usable by compute
        self.free = torch.cuda.Event() if cuda else None  # contents may be overwritten


class StagedRingStore(RingStore):
    """Base class of the cpu and disk tiers (block bookkeeping and device staging).

    Subclasses implement :meth:`_store_block` (device parts -> tier), :meth:`_load_block`
    (tier -> device parts) and :meth:`_prefetch` (start moving a block that will be needed
    next).

    Args:
        nt, batch, cells, device: see :class:`RingStore`.
        codec: how a step is encoded.
        transfer_interval: K, steps per block moved between the device and the tier.
    """

    def __init__(self, nt, batch, cells, device, codec: Codec, transfer_interval: int) -> None:
        super().__init__(nt, batch, cells, device)
        k = transfer_interval
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FwiArgumentError(
                f"transfer_interval must be an integer >= 1 (steps per chunk), got {k!r}"
            )
        self.codec = codec
        self.k = min(k, nt)
        self.n_blocks = -(-nt // self.k)
        self._cuda = self.device.type == "cuda"
        self._side = torch.cuda.Stream(device=self.device) if self._cuda else None
        self._slots = [
            _Slot(codec.allocate(self.k, batch, cells, self.device), self._cuda) for _ in range(2)
        ]
        self._step_nbytes = [p[0].numel() * p.element_size() for p in self._slots[0].parts]
        self._next_put = 0  # steps stored so far (puts are consecutive from 0)
        self._filling: _Slot | None = None  # slot of the block being filled by puts
        self._forward_done = False
        # CUDA: recorded on the side stream after a put's direct copies; the next put's encode
        # waits for it, so at most one chunk of codes waits for its copies at a time
        self._put_copied = torch.cuda.Event() if self._cuda else None
        self._put_copied_pending = False
        self._ahead = None  # (n0, t, codes, ready event) loaded by prefetch

    # ---- helpers -------------------------------------------------------------------

    def block_len(self, j: int) -> int:
        """Steps in block j (K except perhaps the last)."""
        return min(self.k, self.nt - j * self.k)

    def _whole_blocks(self, j: int, steps: int) -> tuple[int, int]:
        """How many whole blocks from block j fit in ``steps`` steps, and their steps."""
        count, total = 0, 0
        while j + count < self.n_blocks and total + self.block_len(j + count) <= steps:
            total += self.block_len(j + count)
            count += 1
        return count, total

    def _compute_stream(self):
        return torch.cuda.current_stream(self.device) if self._cuda else None

    def _on_side(self):
        return torch.cuda.stream(self._side) if self._cuda else contextlib.nullcontext()

    @staticmethod
    def _record(event, stream) -> None:
        if event is not None:
            event.record(stream)

    @staticmethod
    def _wait(stream, event) -> None:
        if event is not None:
            stream.wait_event(event)

    # ---- forward ---------------------------------------------------------------------

    @torch.no_grad()
    def put(self, n0: int, chunk: torch.Tensor) -> None:
        t = self._check_put(n0, chunk)  # chunk: (T, B, C)
        self._check_errors()
        if self._forward_done:
            raise FwiArgumentError("ring store put: finish_forward() was already called")
        if n0 != self._next_put:
            raise FwiArgumentError(
                f"ring store put: the {type(self).__name__} takes consecutive steps from 0; "
                f"expected n0={self._next_put}, got n0={n0}"
            )
        chunk = chunk.detach()
        compute = self._compute_stream()
        codes = None  # the whole chunk coded at once, for a whole-chunk codec when it spans blocks
        side_waits = False  # the side stream already waits for `codes`
        if self.codec.whole_chunks and n0 // self.k != (n0 + t - 1) // self.k:
            if self._put_copied_pending:  # the previous chunk's codes have been copied out
                compute.wait_event(self._put_copied)
                self._put_copied_pending = False
            codes = self.codec.allocate(t, self.batch, self.cells, self.device)
            self.codec.encode(chunk, codes)
        pos = 0
        while pos < t:
            n = n0 + pos
            j, off = divmod(n, self.k)
            nj = self.block_len(j)
            take = min(t - pos, nj - off)
            if codes is not None and off == 0 and take == nj:  # whole blocks: straight from the codes
                if self._cuda and not side_waits:
                    coded = torch.cuda.Event()
                    coded.record(compute)
                    self._side.wait_event(coded)
                    for c in codes:  # the allocator must not reuse them before the copies ran
                        c.record_stream(self._side)
                    side_waits = True
                count, steps = self._whole_blocks(j, t - pos)
                self._store_run(j, count, [c[pos:pos + steps] for c in codes], steps)
                pos += steps
                self._next_put = n + steps
                continue
            if off == 0:
                slot = self._slots[j % 2]
                self._wait(compute, slot.free)  # the previous copy out of this slot is done
                slot.block = -1
                self._filling = slot
            slot = self._filling
            dst = [p[off:off + take] for p in slot.parts]
            if codes is None:
                self.codec.encode(chunk[pos:pos + take], dst)
            else:
                for d, c in zip(dst, codes, strict=True):
                    d.copy_(c[pos:pos + take])
            pos += take
            self._next_put = n + take
            if off + take == nj:
                self._flush(j, nj)
        if side_waits:  # CUDA and direct copies were queued: the next put waits for them
            self._put_copied.record(self._side)
            self._put_copied_pending = True

    def _flush(self, j: int, steps: int) -> None:
        """Send the first ``steps`` steps of the filling slot (block j) to the tier."""
        slot = self._filling
        self._record(slot.ready, self._compute_stream())
        self._wait(self._side, slot.ready)
        self._store_block(j, slot.parts, steps, slot.free)
        slot.block = j  # still valid on the device: the backward pass may start from it
        self._filling = None

    def finish_forward(self) -> None:
        self._check_open()
        if self._forward_done:
            return
        if self._filling is not None:  # the puts stopped inside a block
            j = (self._next_put - 1) // self.k
            self._flush(j, self._next_put - j * self.k)
        self._forward_done = True
        self._end_forward()

    # ---- backward --------------------------------------------------------------------

    @torch.no_grad()
    def get(self, n0: int, t: int) -> torch.Tensor:
        self._check_open()
        self._check_range(n0, t)
        if not self._forward_done:
            self.finish_forward()
        self._check_errors()
        if n0 + t > self._next_put:
            raise FwiArgumentError(
                f"ring store get: steps [{n0}, {n0 + t}) were not all stored "
                f"(only steps [0, {self._next_put}) were put)"
            )
        compute = self._compute_stream()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (n0, t):  # loaded by prefetch(n0, t)
            codes, ready = ahead[2], ahead[3]
            self._wait(compute, ready)
            if self._cuda:  # side-stream memory, now read by the compute stream
                for c in codes:
                    c.record_stream(compute)
            return self.codec.decode(codes)
        out = torch.empty((t, self.batch, self.cells), dtype=torch.float32, device=self.device)
        if t == 0:
            return out
        j_lo, j_hi = n0 // self.k, (n0 + t - 1) // self.k
        # whole-chunk codecs: gather the range's codes block by block, decode once; blocks wholly
        # inside the range and in no slot are loaded straight into the gathered codes
        codes = self.codec.allocate(t, self.batch, self.cells, self.device) \
            if self.codec.whole_chunks and j_hi > j_lo else None
        def loads_direct(j: int) -> bool:  # wholly inside the range and in no slot
            return (codes is not None and j * self.k >= n0
                    and j * self.k + self.block_len(j) <= n0 + t
                    and not any(s.block == j for s in self._slots))

        direct = False
        j = j_hi
        while j >= j_lo:
            if loads_direct(j):
                if self._cuda and not direct:  # `codes` is fresh memory of the compute stream
                    allocated = torch.cuda.Event()
                    allocated.record(compute)
                    self._side.wait_event(allocated)
                    for c in codes:  # kept from reuse until the side stream's loads ran
                        c.record_stream(self._side)
                first = j
                while first - 1 >= j_lo and loads_direct(first - 1):
                    first -= 1
                a, b = first * self.k, j * self.k + self.block_len(j)
                self._load_run(first, j - first + 1, [c[a - n0:b - n0] for c in codes], b - a)
                direct = True
                j = first - 1
                continue
            a, b = max(n0, j * self.k), min(n0 + t, (j + 1) * self.k)
            slot = self._acquire(j, keep=-1)
            self._wait(compute, slot.ready)
            off = j * self.k
            src = [p[a - off:b - off] for p in slot.parts]
            if codes is None:
                self.codec.decode(src, out=out[a - n0:b - n0])
            else:
                for c, sp in zip(codes, src, strict=True):
                    c[a - n0:b - n0].copy_(sp)
            self._record(slot.free, compute)
            j -= 1
        if direct and self._cuda:  # the decode (compute stream) waits for the direct loads
            loaded = torch.cuda.Event()
            loaded.record(self._side)
            compute.wait_event(loaded)
        if codes is not None:
            self.codec.decode(codes, out=out)
        if j_lo > 0:
            self._prefetch(j_lo - 1, keep=j_lo)
        return out

    def prefetch(self, n0: int, t: int) -> None:
        """Start loading steps [n0, n0 + t) for the next ``get(n0, t)`` (see RingStore).

        The range's codes are loaded from the tier into memory of their own, allocated on the
        side stream, where the loads queue at once; the matching ``get`` only waits for them and
        decodes. (``get`` alone gathers into fresh compute-stream memory, so its loads can start
        only once the GPU reaches the get, and the decode then waits for the copy.) Ignored
        unless the forward has ended and the range is whole stored blocks; a later prefetch
        or get drops an unused one.
        """
        self._check_open()
        self._ahead = None  # its memory goes back to the side stream's pool
        end = n0 + t
        if not (LOAD_AHEAD and self._forward_done and t > 0 and 0 <= n0 and end <= self._next_put
                and n0 % self.k == 0 and (end % self.k == 0 or end == self.nt)):
            return
        self._check_errors()
        with self._on_side():
            codes = self.codec.allocate(t, self.batch, self.cells, self.device)
        self._load_run(n0 // self.k, -(-t // self.k), codes, t)
        ready = torch.cuda.Event() if self._cuda else None
        self._record(ready, self._side)
        self._ahead = (n0, t, codes, ready)

    def _acquire(self, j: int, keep: int) -> _Slot:
        """A slot holding block j, loading it (asynchronously) if needed."""
        for slot in self._slots:
            if slot.block == j:
                return slot
        slot = self._victim(j, keep)
        steps = min(self.block_len(j), self._next_put - j * self.k)
        self._wait(self._side, slot.free)  # compute has finished reading the old contents
        slot.block = -1
        self._load_block(j, slot.parts, steps)
        self._record(slot.ready, self._side)
        slot.block = j
        return slot

    def _victim(self, j: int, keep: int) -> _Slot:
        """The slot to overwrite for block j, never the one holding ``keep``.

        Backward reads go down in steps, so blocks above j are the least likely to be read
        again (evict the highest first), then empty slots, then blocks below j (lowest
        first: needed last).
        """

        def score(s: _Slot) -> int:
            if s.block > j:
                return 2 * self.n_blocks + s.block
            if s.block < 0:
                return self.n_blocks
            return -s.block

        return max((s for s in self._slots if keep < 0 or s.block != keep), key=score)

    # ---- tier hooks --------------------------------------------------------------------

    def _store_block(self, j: int, parts: list[torch.Tensor], steps: int, done) -> None:
        """Copy the first ``steps`` steps of ``parts`` (encoded, on the device) to block j of the
        tier (side stream, async, after what the side stream already waits for); then record
        the CUDA event ``done`` (if not None) on the side stream."""
        raise NotImplementedError

    def _load_block(self, j: int, parts: list[torch.Tensor], steps: int) -> None:
        """Copy ``steps`` steps of block j of the tier into the first steps of ``parts`` (encoded,
        on the device; side stream, async, after what the side stream already waits for)."""
        raise NotImplementedError

    def _store_run(self, j: int, count: int, parts: list[torch.Tensor], steps: int) -> None:
        """Store ``count`` whole consecutive blocks from block j (``steps`` steps of ``parts``),
        as :meth:`_store_block` does one; a tier that can move them in one go overrides it."""
        pos = 0
        for jj in range(j, j + count):
            nj = self.block_len(jj)
            self._store_block(jj, [p[pos:pos + nj] for p in parts], nj, None)
            pos += nj

    def _load_run(self, j: int, count: int, parts: list[torch.Tensor], steps: int) -> None:
        """Load ``count`` whole consecutive blocks from block j into ``parts`` (``steps``
        steps), as :meth:`_load_block` does one (the highest first, as the backward goes); a
        tier may override it with one move."""
        for jj in range(j + count - 1, j - 1, -1):
            a = (jj - j) * self.k
            nj = self.block_len(jj)
            self._load_block(jj, [p[a:a + nj] for p in parts], nj)

    def _prefetch(self, j: int, keep: int) -> None:
        """Start moving block j towards the device (default: load it into a slot now)."""
        self._acquire(j, keep=keep)

    def _end_forward(self) -> None:
        """Hook run once after the last block of the forward pass was handed to the tier."""

    def _check_errors(self) -> None:
        """Raise an error a background worker met (disk tier)."""

    def close(self) -> None:
        if self._cuda and not self._closed:
            self._side.synchronize()  # no copy may still touch memory we release
        super().close()
        self._ahead = None
        self._slots = []
        self._filling = None

    @property
    def device_nbytes(self) -> int:
        """The staging slots and the codes of a prefetched range, if one is held now."""
        held = self._ahead[2] if self._ahead is not None else []
        return sum(p.numel() * p.element_size() for p in [*held, *(q for s in self._slots for q in s.parts)])


class CpuRingStore(StagedRingStore):
    """The ``cpu`` tier: the encoded ring in host memory (pinned when asked, CUDA only).

    Args:
        nt, batch, cells, device, codec, transfer_interval: see :class:`StagedRingStore`.
        pinned_memory: page-locked host memory, so copies run asynchronously and overlap
            compute (ignored unless the device is CUDA).
    """

    def __init__(self, nt, batch, cells, device, codec, transfer_interval, pinned_memory=True):
        super().__init__(nt, batch, cells, device, codec, transfer_interval)
        self.pinned = bool(pinned_memory) and self._cuda
        try:
            self._host = codec.allocate(nt, batch, cells, torch.device("cpu"), pin_memory=self.pinned)
        except RuntimeError as exc:  # out of (pinnable) host memory
            raise StorageError(
                f"cpu tier: cannot allocate {nt * batch * codec.row_nbytes(cells)} bytes of "
                f"{'pinned ' if self.pinned else ''}host memory for the boundary ring ({exc}); "
                "use storage_dtype int8/fp16, pinned_memory false, or storage disk"
            ) from exc
        self._nbytes = sum(p.numel() * p.element_size() for p in self._host)

    def _store_block(self, j, parts, steps, done):
        a = j * self.k
        with self._on_side():
            for hp, sp in zip(self._host, parts, strict=True):
                hp[a:a + steps].copy_(head(sp, steps), non_blocking=self.pinned)
            self._record(done, self._side)

    def _load_block(self, j, parts, steps):
        a = j * self.k
        with self._on_side():
            for hp, sp in zip(self._host, parts, strict=True):
                head(sp, steps).copy_(hp[a:a + steps], non_blocking=self.pinned)

    # the host ring is contiguous in steps: a run of blocks is one copy per part each way
    def _store_run(self, j, count, parts, steps):
        self._store_block(j, parts, steps, None)

    def _load_run(self, j, count, parts, steps):
        self._load_block(j, parts, steps)

    def close(self):
        super().close()
        self._host = []

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def host_nbytes(self) -> int:
        return self._nbytes
