"""The ``disk`` tier: the encoded ring in files, written and read in blocks of K steps.

Layout: a fresh directory ``fwi-ring-XXXX`` (created inside ``disk_dir``, or in the system
temp directory when ``disk_dir`` is None) holds one file per codec part,
``part{i}.bin``, of ``nt`` step records; block j (steps [jK, jK+K)) of part i sits at byte
``j K S_i`` where S_i is the bytes of one step of that part (B shots). File bytes in all:
``ring_nbytes(nt, B, C, dtype)``.

Pipeline (on top of :class:`~fwi_cli.storage.staged.StagedRingStore`, which stages blocks
on the compute device):

* Files are written and read in *I/O groups* of ``group`` consecutive blocks (the fewest whole
  blocks reaching ``IO_STEPS`` = 64 steps; one block when ``transfer_interval`` >= 64): with
  small blocks, one thread hand-off and system call per block cost more than the bytes.
* forward: each full block (from a staging slot, or straight from a chunk's fp16/int8 codes) is
  copied (side CUDA stream, async) into its place in the host buffer of its group (a few
  buffers, pinned on CUDA when asked); a complete group is queued to the writer threads
  (``N_WRITERS``), one of which waits for the copies' event, ``pwrite``s the group, marks it
  written and gives the buffer back. The host buffers bound the queue: when all are in
  flight ``put`` waits. The last group stays in its host buffer (the *tail*) and is never
  written: the backward starts from it, and any later get of its steps reads it there.
* ``finish_forward`` does not wait for the writers (that would hold the host until the GPU
  ends the forward, and leave the GPU idle while the host then prepares the backward).
* backward: a reader thread ``pread``s the next (earlier) groups into host buffers while the
  caller computes, each once its write is done; ``get`` (or ``prefetch``) copies blocks of the
  resident group host -> device on the side stream, and gives the group's buffer back when
  it moves to another group.

Errors: an ``OSError`` met by a writer (no space, permission, ...) is kept and raised as a
:class:`~fwi_cli.errors.StorageError` naming the directory at the next ``put``,
``finish_forward`` or ``get`` (at the latest by the ``get`` that reads what failed to be
written); a missing or truncated file in the backward pass likewise.
Whenever the store raises a StorageError it has already removed its files.

Clean-up: ``close()`` (also on leaving a ``with`` block, KeyboardInterrupt included) stops
the threads and deletes the directory (the files are unlinked at once; the page cache they
held is freed by a closer thread as their descriptors close); so does a ``weakref.finalize`` when the store is
garbage-collected, and the same finalizer runs at interpreter exit (``atexit``). A process
killed outright (SIGKILL) cannot clean up: each store holds an ``flock`` on a file in its
directory while it lives, and creating a store removes the sibling ``fwi-ring-*``
directories whose lock is free (:func:`reclaim_stale`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from fwi_cli.errors import StorageError
from fwi_cli.storage.base import head
from fwi_cli.storage.codecs import Codec
from fwi_cli.storage.staged import StagedRingStore

#: Host buffers (each one I/O group) shared by the writers and the reader.
N_HOST_BUFFERS = 6
#: Writer threads: page-cache writes of one thread (a memcpy into fresh pages) fall behind a
#: forward that produces ~4.5 GB/s (seed problem, fp16; H200 run S2: disk·fp16 0.0804 s with one
#: writer, 0.0744-0.0780 with two, 0.0717 with four).
N_WRITERS = 4
#: The last I/O group stays in host memory for the backward (module switch for A/B runs).
TAIL_RESIDENT = True
#: Groups the reader reads ahead of the backward pass.
READ_AHEAD = 2
#: Steps the files are written and read in at least (an I/O group is the fewest whole blocks
#: of ``transfer_interval`` steps reaching this): per-block file I/O of small blocks costs more
#: in thread hand-offs and system calls than the bytes (H200, seed problem, transfer_interval 8:
#: 250 blocks per gradient).
IO_STEPS = 64
#: Seconds between checks while waiting for a host buffer.
_POLL_S = 0.05
#: Seconds after which waiting for a host buffer is an error.
BUFFER_WAIT_S = 300.0


def _write_at(fd: int, buf: memoryview, offset: int) -> None:
    """Write all of ``buf`` at ``offset`` of ``fd`` (raises OSError)."""
    pos, n = 0, len(buf)
    while pos < n:
        done = os.pwrite(fd, buf[pos:], offset + pos)
        if done <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        pos += done


def _read_at(fd: int, buf: memoryview, offset: int) -> None:
    """Fill ``buf`` from ``offset`` of ``fd``; a short file raises StorageError."""
    pos, n = 0, len(buf)
    while pos < n:
        done = os.preadv(fd, [buf[pos:]], offset + pos)
        if done <= 0:
            raise StorageError(
                f"disk tier: a boundary file ended early (wanted {n} bytes at {offset}); "
                "was it truncated or replaced while the gradient ran?"
            )
        pos += done


class _HostBuffer:
    """Host memory of one I/O group: raw bytes per part, typed (steps, B, ...) views, an event."""

    def __init__(self, specs, k: int, pin: bool, cuda: bool) -> None:
        self.raw, self.typed, self.views = [], [], []
        for dtype, shape in specs:  # shape: per-step (B, ...)
            step_nbytes = torch.empty(shape, dtype=dtype, device="meta").numel() * dtype.itemsize
            raw = torch.empty(k * step_nbytes, dtype=torch.uint8, pin_memory=pin)
            self.raw.append(raw)
            self.typed.append(raw.view(dtype).view(k, *shape))
            self.views.append(memoryview(raw.numpy()))
        self.event = torch.cuda.Event() if cuda else None  # last device copy using it
        self.nbytes = sum(r.numel() for r in self.raw)


class _DiskResources:
    """What the disk tier must release. Its threads and finalizer refer to this object,
    never to the store, so a dropped store is collected (and cleaned) at once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock_fd = _hold_lock(root)  # released by the kernel when this process dies
        self.paths: list[Path] = []
        self.fds: list[int] = []
        self.write_q: queue.Queue = queue.Queue()  # (items, host buffer, done) or None to stop
        self.free: queue.Queue = queue.Queue()  # idle host buffers
        self.error: BaseException | None = None  # first error of a writer
        self.stopping = False
        self.written: dict[int, threading.Event] = {}  # I/O group -> set once its write ended
        self.writers: list[threading.Thread] = []
        self.reader: ThreadPoolExecutor | None = None

    def writers_alive(self) -> bool:
        return any(w.is_alive() for w in self.writers)

    def wait_written(self, g: int) -> None:
        """Wait until I/O group g, if queued for writing, is written; raise a writer's error."""
        done = self.written.get(g)
        while done is not None and not done.wait(_POLL_S):
            if self.stopping or not self.writers_alive():
                raise StorageError("disk tier: the ring store was closed")
        if self.error is not None:
            raise StorageError(f"disk tier: writing the boundary ring failed: {self.error}") from self.error

    def take_buffer(self) -> _HostBuffer:
        """An idle host buffer (waits; gives up once the store is stopping, or after
        ``BUFFER_WAIT_S``: every buffer is given back within one write or read)."""
        deadline = time.monotonic() + BUFFER_WAIT_S
        while True:
            try:
                return self.free.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stopping or (self.writers and not self.writers_alive()):
                    raise StorageError("disk tier: the ring store was closed") from None
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"disk tier: no host buffer came back within {BUFFER_WAIT_S:.0f} s "
                        "(a stalled disk, or a bug: please report it)"
                    ) from None

    def write_loop(self) -> None:
        """Writer thread: write queued groups until told to stop."""
        while True:
            item = self.write_q.get()
            if item is None:
                self.write_q.task_done()
                return
            items, buf, done = item
            try:
                if buf.event is not None:
                    buf.event.synchronize()  # the device -> host copy has landed
                if self.error is None and not self.stopping:
                    for i, offset, nbytes in items:
                        _write_at(self.fds[i], buf.views[i][:nbytes], offset)
            except BaseException as exc:  # kept, raised by the caller's thread
                if self.error is None:
                    self.error = exc
            finally:
                self.free.put(buf)
                done.set()
                self.write_q.task_done()

    def read_block(self, g: int, items) -> _HostBuffer:
        """Reader thread (or caller): read I/O group g (its items) into an idle host buffer."""
        self.wait_written(g)
        buf = self.take_buffer()
        try:
            if buf.event is not None:
                buf.event.synchronize()  # its previous host -> device copy is done
            for i, offset, nbytes in items:
                _read_at(self.fds[i], buf.views[i][:nbytes], offset)
        except BaseException:
            self.free.put(buf)
            raise
        return buf

    def close_files(self) -> None:
        """Close the files' descriptors on the closer thread: the last close of an unlinked
        file frees its blocks and page cache, ~5 ms for the seed problem's 105 MB on ext4,
        which the caller need not wait for (at interpreter exit: here)."""
        fds, self.fds = self.fds, []
        closer = None if sys.is_finalizing() else _closer()
        if closer is not None:
            closer.put(fds)
            return
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def shutdown(self) -> None:
        """Stop the threads, close and delete the files and the directory (idempotent)."""
        self.stopping = True
        here = threading.current_thread()
        alive = [w for w in self.writers if w.is_alive()]
        for _ in alive:
            self.write_q.put(None)
        for w in alive:
            if w is not here:  # (a finalizer may run on any thread)
                w.join(timeout=60)
        if self.reader is not None:
            try:
                self.reader.shutdown(wait=True, cancel_futures=True)
            except RuntimeError:  # called from the reader thread itself
                self.reader.shutdown(wait=False, cancel_futures=True)
        for p in self.paths:  # unlinked while still open: their pages go at the last close
            try:
                os.unlink(p)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        # last: on ext4 the closer thread's page freeing slows directory operations running
        # beside it (rmtree 0.1 -> 3 ms on a 105 MB ring)
        self.close_files()


_CLOSER: queue.Queue | None = None
_CLOSER_LOCK = threading.RLock()  # (a finalizer may run on a thread that holds it)


def _closer() -> queue.Queue | None:
    """The queue of the process's descriptor-closing thread (a daemon, started on first use),
    or None when no thread can start."""
    global _CLOSER
    with _CLOSER_LOCK:
        if _CLOSER is None:
            q: queue.Queue = queue.Queue()

            def run() -> None:
                while True:
                    for fd in q.get():
                        try:
                            os.close(fd)
                        except OSError:
                            pass

            try:
                threading.Thread(target=run, name="fwi-ring-closer", daemon=True).start()
            except RuntimeError:  # e.g. "can't create new thread at interpreter shutdown"
                return None
            _CLOSER = q
        return _CLOSER


LOCK_NAME = ".owner.lock"


def _hold_lock(root: Path) -> int | None:
    """Take an exclusive flock on ``root/.owner.lock`` for the store's lifetime.

    The kernel drops it when the owning process ends, however it ends (SIGKILL included),
    so a directory whose lock is free belongs to nobody.
    """
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def reclaim_stale(parent: Path, min_age_s: float = 10.0) -> list[Path]:
    """Delete ``fwi-ring-*`` directories in ``parent`` left by processes that died.

    A directory counts as stale when its owner lock can be taken (no live process holds it)
    and it is older than ``min_age_s`` (so a store being created right now is never
    touched). Returns the directories removed.
    """
    removed = []
    try:
        candidates = list(Path(parent).glob("fwi-ring-*"))
    except OSError:
        return removed
    now = time.time()
    for d in candidates:
        try:
            if not d.is_dir() or now - d.stat().st_mtime < min_age_s:
                continue
            fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live store owns it
        try:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        finally:
            os.close(fd)
    return removed


def _make_root(disk_dir, nbytes: int) -> Path:
    """Create the store's own directory (inside ``disk_dir`` when given)."""
    where = "the system temp directory" if disk_dir is None else f"disk_dir {str(disk_dir)!r}"
    try:
        if disk_dir is not None:
            os.makedirs(disk_dir, exist_ok=True)
        reclaim_stale(Path(disk_dir) if disk_dir is not None else Path(tempfile.gettempdir()))
        root = Path(tempfile.mkdtemp(prefix="fwi-ring-", dir=disk_dir))
    except OSError as exc:
        raise StorageError(
            f"disk tier: cannot create a directory in {where}: {exc.strerror or exc}; "
            "set disk_dir to a writable directory or use storage 'cpu'/'gpu'"
        ) from exc
    free = shutil.disk_usage(root).free
    if free < nbytes:
        shutil.rmtree(root, ignore_errors=True)
        raise StorageError(
            f"disk tier: {where} has {free} bytes free but the boundary ring needs {nbytes}; "
            "free space there, choose another disk_dir, a smaller storage_dtype, or storage 'cpu'"
        )
    return root


class DiskRingStore(StagedRingStore):
    """The ``disk`` tier.

    Args:
        nt, batch, cells, device, codec, transfer_interval: see
            :class:`~fwi_cli.storage.staged.StagedRingStore`.
        disk_dir: parent of the store's directory; None: the system temp directory.
        pinned_memory: page-locked host buffers (CUDA only), so copies overlap compute.
    """

    def __init__(
        self, nt, batch, cells, device, codec: Codec, transfer_interval: int,
        disk_dir=None, pinned_memory: bool = True,
    ) -> None:
        super().__init__(nt, batch, cells, device, codec, transfer_interval)
        self.pinned = bool(pinned_memory) and self._cuda
        self._nbytes = nt * sum(self._step_nbytes)
        self._res = res = _DiskResources(_make_root(disk_dir, self._nbytes))
        self._finalizer = weakref.finalize(self, res.shutdown)  # GC and interpreter exit
        self.group = max(1, min(-(-IO_STEPS // self.k), self.n_blocks))  # blocks per I/O group
        self._pending: dict[int, tuple[Future, list]] = {}  # group -> (read, its items)
        self._wbuf: tuple[int, _HostBuffer, int] | None = None  # (group, buffer, steps) being filled
        self._rbuf: tuple[int, _HostBuffer] | None = None  # (group, buffer) the backward reads from
        self._tail: tuple[int, _HostBuffer] | None = None  # the last group put, kept, never written
        self._reading = False
        self._buffers: list[_HostBuffer] = []
        try:
            for i, step_nbytes in enumerate(self._step_nbytes):
                path = res.root / f"part{i}.bin"
                res.fds.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                res.paths.append(path)
                os.ftruncate(res.fds[-1], nt * step_nbytes)
        except OSError as exc:
            self._fail(f"cannot create the boundary files in {res.root}", exc)
        specs = codec.part_specs(batch, cells)
        self._buffers = [
            _HostBuffer(specs, self.group * self.k, self.pinned, self._cuda)
            for _ in range(max(3, N_HOST_BUFFERS))  # the tail's, the resident group's, one to read into
        ]
        for buf in self._buffers:
            res.free.put(buf)
        for i in range(max(1, N_WRITERS)):
            w = threading.Thread(target=res.write_loop, name=f"fwi-ring-writer-{i}", daemon=True)
            res.writers.append(w)
            w.start()
        res.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fwi-ring-reader")

    @property
    def directory(self) -> Path:
        """The store's own directory (removed by :meth:`close`)."""
        return self._res.root

    def _fail(self, what: str, exc: BaseException | None):
        """Close (deleting the files) and raise a StorageError about ``what``."""
        root = self._res.root
        self.close()
        reason = ""
        if isinstance(exc, OSError) and exc.errno is not None:
            reason = f": [{errno.errorcode.get(exc.errno, exc.errno)}] {exc.strerror}"
        elif exc is not None:
            reason = f": {exc}"
        raise StorageError(
            f"disk tier: {what} (directory {root}){reason}; free space there, set disk_dir to "
            "a writable directory, or use storage 'cpu'/'gpu'"
        ) from exc

    def _check_errors(self) -> None:
        err = self._res.error
        if err is not None:
            self._fail("writing the boundary ring failed", err)

    def _group_items(self, g: int, steps: int | None = None) -> list[tuple[int, int, int]]:
        """(part, file offset, bytes) of the first ``steps`` steps of I/O group g (default:
        all its stored steps)."""
        a = g * self.group * self.k
        if steps is None:
            steps = min(self.group * self.k, self._next_put - a)
        return [(i, a * s, steps * s) for i, s in enumerate(self._step_nbytes)]

    # ---- forward ------------------------------------------------------------------

    def _run_in_group(self, j: int, count: int) -> tuple[int, int]:
        """Of ``count`` whole blocks from block j: how many lie in j's I/O group, and their steps."""
        n = min(count, self.group - j % self.group)
        return n, min((j + n) * self.k, self.nt) - j * self.k

    def _store_block(self, j: int, parts: list[torch.Tensor], steps: int, done) -> None:
        self._store_in_group(j, 1, parts, steps, done)

    def _store_run(self, j: int, count: int, parts: list[torch.Tensor], steps: int) -> None:
        pos = 0
        while count > 0:  # one host copy per part for the run's blocks in each I/O group
            n, nsteps = self._run_in_group(j, count)
            self._store_in_group(j, n, [p[pos:pos + nsteps] for p in parts], nsteps, None)
            j, count, pos = j + n, count - n, pos + nsteps

    def _store_in_group(self, j: int, n: int, parts: list[torch.Tensor], steps: int, done) -> None:
        """Copy ``steps`` steps of blocks j .. j+n-1 (one I/O group; the last block may be
        partial) into the group's host buffer; queue the group when it is complete."""
        g, pos = divmod(j, self.group)
        if self._wbuf is None:
            self._wbuf = (g, self._res.take_buffer(), 0)
        buf = self._wbuf[1]
        a = pos * self.k
        self._wbuf = (g, buf, a + steps)  # puts are consecutive: the group's stored steps
        with self._on_side():
            for hp, sp in zip(buf.typed, parts, strict=True):
                hp[a:a + steps].copy_(head(sp, steps), non_blocking=self.pinned)
            self._record(buf.event, self._side)
            self._record(done, self._side)
        last = j + n - 1
        if last == self.n_blocks - 1 or steps < min((j + n) * self.k, self.nt) - j * self.k:
            self._end_group(keep=True)  # the last blocks the forward puts
        elif last % self.group == self.group - 1:
            self._end_group(keep=False)

    def _end_group(self, keep: bool) -> None:
        """The group being filled is complete: queue it to the writers, or with ``keep`` (and
        TAIL_RESIDENT) hold it as the tail."""
        g, buf, steps = self._wbuf
        self._wbuf = None
        if keep and TAIL_RESIDENT:
            self._tail = (g, buf)
        else:
            self._write(g, buf, self._group_items(g, steps))

    def _write(self, g: int, buf: _HostBuffer, items) -> None:
        done = threading.Event()
        self._res.written[g] = done
        self._res.write_q.put((items, buf, done))

    def _end_forward(self) -> None:
        if self._wbuf is not None:  # the puts stopped inside a group
            self._end_group(keep=True)
        self._check_errors()

    # ---- backward -----------------------------------------------------------------

    def _open_for_reading(self) -> None:
        """Check the files are still there (the writers may still be writing through the
        same descriptors, which stay open)."""
        try:
            for p in self._res.paths:
                os.stat(p)
        except OSError as exc:
            self._fail("a boundary file is missing (was the directory cleaned while the "
                       "gradient ran?)", exc)
        self._reading = True

    def get(self, n0: int, t: int) -> torch.Tensor:
        self._check_open()
        if not self._forward_done:
            self.finish_forward()
        if not self._reading:
            self._open_for_reading()
        ahead = self._ahead is not None and self._ahead[:2] == (n0, t)
        if t > 0 and 0 <= n0 and n0 + t <= self._next_put and not ahead:  # (bad ranges: the base raises)
            # a range over several I/O groups: the lower ones are read while the top one is used
            per_group = self.group * self.k
            self._read_ahead(range((n0 + t - 1) // per_group - 1, n0 // per_group - 1, -1))
        try:
            return super().get(n0, t)
        except OSError as exc:  # StorageError from a read, or an OS error
            self._fail_reading(exc)

    def prefetch(self, n0: int, t: int) -> None:
        self._check_open()
        if not self._forward_done:
            return
        if not self._reading:
            self._open_for_reading()
        per_group = self.group * self.k
        if t > 0 and 0 <= n0 and n0 + t <= self._next_put:  # the range's groups, then READ_AHEAD more
            self._read_ahead(range((n0 + t - 1) // per_group, n0 // per_group - 1 - READ_AHEAD, -1))
        try:
            super().prefetch(n0, t)
        except OSError as exc:
            self._fail_reading(exc)

    def _fail_reading(self, exc: OSError):
        if isinstance(exc, StorageError) and self._closed:
            raise exc
        if self._res.error is not None:  # a read waited for a write that failed
            self._fail("writing the boundary ring failed", self._res.error)
        self._fail("reading the boundary ring failed", exc)

    def _group_buffer(self, g: int) -> _HostBuffer:
        """The host buffer holding I/O group g, read now unless it is resident or prefetched."""
        if self._tail is not None and self._tail[0] == g:  # in host memory for good
            return self._tail[1]
        if self._rbuf is not None and self._rbuf[0] == g:
            return self._rbuf[1]
        if self._rbuf is not None:  # done with the resident group: the backward goes down
            self._res.free.put(self._rbuf[1])
            self._rbuf = None
        items = self._group_items(g)
        entry = self._pending.pop(g, None)
        if entry is not None and entry[1] == items:
            buf = entry[0].result()
        else:
            if entry is not None:
                self._release(entry[0])
            buf = self._res.read_block(g, items)
        self._rbuf = (g, buf)
        return buf

    def _load_block(self, j: int, parts: list[torch.Tensor], steps: int) -> None:
        # ``steps`` may run on into the next blocks of j's I/O group (_load_run)
        g, pos = divmod(j, self.group)
        buf = self._group_buffer(g)
        a = pos * self.k
        with self._on_side():
            for hp, sp in zip(buf.typed, parts, strict=True):
                head(sp, steps).copy_(hp[a:a + steps], non_blocking=self.pinned)
            self._record(buf.event, self._side)

    def _load_run(self, j: int, count: int, parts: list[torch.Tensor], steps: int) -> None:
        end = j + count
        while end > j:  # one host copy per part for each I/O group, the highest first (the
            # backward goes down: the lower group stays resident for the next get)
            first = max(j, (end - 1) // self.group * self.group)
            a, nsteps = (first - j) * self.k, min(end * self.k, self.nt) - first * self.k
            self._load_block(first, [p[a:a + nsteps] for p in parts], nsteps)
            end = first

    def _release(self, fut: Future) -> None:
        """Give back the buffer of a read nobody will use."""
        try:
            self._res.free.put(fut.result())
        except Exception:
            pass

    def _read_ahead(self, groups) -> None:
        """Queue reads of ``groups`` (in that order) on the reader thread, skipping the
        resident group and those already queued, while host buffers remain."""
        resident = self._rbuf[0] if self._rbuf is not None else -1
        tail = self._tail[0] if self._tail is not None else -1  # in host memory, never written
        # buffers: one per pending read, the resident group's, the tail's, and one left for a
        # read on the caller's thread, so that every read finds one
        budget = len(self._buffers) - 2 - (tail >= 0)
        for gg in groups:
            if gg in self._pending or gg == resident or gg == tail:
                continue
            if len(self._pending) >= budget:
                break
            items = self._group_items(gg)
            self._pending[gg] = (self._res.reader.submit(self._res.read_block, gg, items), items)

    def _prefetch(self, j: int, keep: int) -> None:
        """Read the groups of block j and below ahead on the reader thread; stage block j
        into a slot once its group is in host memory."""
        g = j // self.group
        for gg in [x for x in self._pending if x > keep // self.group]:  # passed by: never read now
            self._release(self._pending.pop(gg)[0])
        self._read_ahead(range(g, max(g - READ_AHEAD, -1), -1))
        resident = self._rbuf[0] if self._rbuf is not None else -1
        entry = self._pending.get(g)
        if g == resident or (entry is not None and entry[0].done()):
            self._acquire(j, keep=keep)

    # ---- bookkeeping ----------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        for fut, _ in self._pending.values():
            fut.cancel()
        self._pending = {}
        self._wbuf = self._rbuf = self._tail = None
        self._finalizer()  # stop threads, delete files (once)
        self._buffers = []

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def host_nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers)
