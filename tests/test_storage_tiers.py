"""Ring-store tiers: identical values across tiers, byte counts, clean-up and errors."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwi_cli.errors import FwiArgumentError, StorageError
from fwi_cli.propagator.options import BoundaryOptions
from fwi_cli.storage import (
    CODECS,
    CpuRingStore,
    DiskRingStore,
    GpuRingStore,
    make_ring_store,
    ring_nbytes,
)
from fwi_cli.storage import disk as disk_module

NT, B, C = 29, 2, 300  # 300 cells: int8 rows end in a partial block
PUT_SIZES = [1, 4, 2, 7, 3, 6, 6]  # sum NT
GET_SIZES = [2, 5, 1, 7, 3, 5, 6]  # sum NT, read from the end
DTYPES = list(CODECS)
CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
REPO = Path(__file__).resolve().parents[1]
# ids avoid the bare word "gpu": conftest skips items whose keywords contain it
ALL_TIERS = pytest.mark.parametrize("tier", ["gpu", "cpu", "disk"], ids=lambda t: f"tier_{t}")


def _ring(seed: int = 0, nt: int = NT, device="cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn((nt, B, C), generator=gen) * 10.0 ** torch.randint(-3, 4, (nt, B, 1), generator=gen)).to(device)


def _fill(store, x: torch.Tensor, sizes=PUT_SIZES) -> None:
    n = 0
    for t in sizes:
        store.put(n, x[n:n + t].clone())
        n += t
    store.finish_forward()


def _read_back(store, sizes=GET_SIZES) -> list[tuple[int, int, torch.Tensor]]:
    """Reverse-order reads: [(n0, t, values)]."""
    out, n = [], store.nt
    for t in sizes:
        n -= t
        out.append((n, t, store.get(n, t).clone()))
    return out


def _options(tier: str, dtype: str, **kw) -> BoundaryOptions:
    return BoundaryOptions(storage=tier, storage_dtype=dtype, **kw)


def _assert_same_as_gpu_tier(tier, dtype, device, **kw):
    x = _ring(device=device)
    with make_ring_store(NT, B, C, device, _options("gpu", dtype)) as ref:
        _fill(ref, x, [NT])
        with make_ring_store(NT, B, C, device, _options(tier, dtype, **kw)) as store:
            _fill(store, x)
            for n0, t, got in _read_back(store):
                assert got.device == x.device and got.dtype == torch.float32
                assert torch.equal(got, ref.get(n0, t)), (n0, t)


# ---- values ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tier", ["cpu", "disk"])
@pytest.mark.parametrize("interval", [1, 4, 64])
def test_store_tier_returns_same_values_as_gpu_tier(tier, dtype, interval, tmp_path):
    kw = {"disk_dir": tmp_path} if tier == "disk" else {}
    _assert_same_as_gpu_tier(tier, dtype, "cpu", transfer_interval=interval, **kw)


@ALL_TIERS
def test_store_fp32_returns_exactly_what_was_put(tier, tmp_path):
    x = _ring(1)
    with make_ring_store(NT, B, C, "cpu", _options(tier, "fp32", transfer_interval=3, disk_dir=tmp_path)) as s:
        _fill(s, x)
        for n0, t, got in _read_back(s):
            assert torch.equal(got, x[n0:n0 + t])


def test_store_writable_view_is_what_get_returns_for_gpu_fp32():
    x = _ring(2)
    with make_ring_store(NT, B, C, "cpu", _options("gpu", "fp32")) as s:
        n = 0
        for t in PUT_SIZES:
            view = s.writable(n, t)
            assert view.shape == (t, B, C) and view.is_contiguous()
            view.copy_(x[n:n + t])  # what the kernels do in place of put
            n += t
        s.finish_forward()
        for n0, t, got in _read_back(s):
            assert torch.equal(got, x[n0:n0 + t])
        with pytest.raises(FwiArgumentError, match="outside"):
            s.writable(NT - 1, 2)


@pytest.mark.parametrize("tier,dtype", [("gpu", "fp16"), ("gpu", "int8"), ("cpu", "fp32"), ("disk", "fp32")])
def test_store_writable_is_none_where_rings_are_encoded_or_moved(tier, dtype, tmp_path):
    with make_ring_store(NT, B, C, "cpu", _options(tier, dtype, disk_dir=tmp_path)) as s:
        assert s.writable(0, 4) is None


@pytest.mark.parametrize("io_steps", [1, 8, 64])
@pytest.mark.parametrize("interval", [1, 3])
def test_disk_store_io_groups_round_trip_in_any_order(io_steps, interval, tmp_path, monkeypatch):
    """Files are written and read in groups of whole blocks (IO_STEPS steps at least): several
    groups, a partial last one, decreasing, repeated and jumping reads all give the stored ring."""
    monkeypatch.setattr(disk_module, "IO_STEPS", io_steps)
    writes = []
    real_write = disk_module._write_at
    monkeypatch.setattr(disk_module, "_write_at", lambda fd, buf, off: (writes.append(len(buf)), real_write(fd, buf, off)))
    x = _ring(7)
    with make_ring_store(NT, B, C, "cpu", _options("disk", "int8", transfer_interval=interval,
                                                   disk_dir=tmp_path)) as s, \
            make_ring_store(NT, B, C, "cpu", _options("gpu", "int8")) as ref:
        _fill(s, x, [5, 1, 9, 14])
        _fill(ref, x, [NT])
        groups = -(-NT // (s.group * s.k))
        assert s.group == max(1, min(-(-io_steps // interval), s.n_blocks))
        s._res.write_q.join()  # finish_forward does not wait for the writers
        # one write per part (codes, scales) and group, but the last group, held in host memory
        assert len(writes) == 2 * (groups - 1)
        for n0, t in [(NT - 4, 4), (20, 6), (0, 3), (5, 17), (5, 17), (28, 1), (11, 2), (0, NT)]:
            assert torch.equal(s.get(n0, t), ref.get(n0, t)), (n0, t)
        s._res.write_q.join()
        assert len(writes) == 2 * (groups - 1)  # the last group is read where it is, never written
    assert list(tmp_path.iterdir()) == []


def _without_hanging(fn, timeout_s=60.0):
    """Run ``fn`` on a thread; fail (instead of hanging the suite) if it does not end in time."""
    box = []

    def run():
        try:
            fn()
        except BaseException as exc:  # re-raised below
            box.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout_s)
    assert not th.is_alive(), f"did not finish within {timeout_s} s (a host-buffer deadlock?)"
    if box:
        raise box[0]


@pytest.mark.parametrize("buffers", [3, 6])
@pytest.mark.parametrize("seed", range(6))
def test_disk_store_gets_in_random_orders_finish_with_stored_values(seed, buffers, tmp_path, monkeypatch):
    """Many one-block I/O groups, few host buffers, gets (and prefetches) of random ranges in
    random order: every read finds a buffer, and every value is the stored one."""
    monkeypatch.setattr(disk_module, "IO_STEPS", 1)
    monkeypatch.setattr(disk_module, "N_HOST_BUFFERS", buffers)
    nt, k = 48, 3
    gen = torch.Generator().manual_seed(seed)
    x = _ring(seed, nt=nt)

    def body():
        with make_ring_store(nt, B, C, "cpu", _options("disk", "int8", transfer_interval=k, disk_dir=tmp_path)) as s, \
                make_ring_store(nt, B, C, "cpu", _options("gpu", "int8")) as ref:
            _fill(s, x, [5, 7, 11, 25])
            _fill(ref, x, [nt])
            for _ in range(40):
                a, b = sorted(torch.randint(0, nt + 1, (2,), generator=gen).tolist())
                b = max(b, a + 1) if a < nt else nt
                a = min(a, b - 1)
                if torch.rand((), generator=gen) < 0.3:  # a hint, sometimes for another range
                    s.prefetch(a // k * k, k * int(torch.randint(1, 4, (), generator=gen)))
                assert torch.equal(s.get(a, b - a), ref.get(a, b - a)), (a, b)

    _without_hanging(body)
    assert list(tmp_path.iterdir()) == []


def test_disk_store_gets_that_jump_around_the_tail_find_host_buffers(tmp_path, monkeypatch):
    """A sequence that once exhausted the host buffers (pending reads + resident + tail) and hung."""
    monkeypatch.setattr(disk_module, "IO_STEPS", 3)
    nt, c = 22, 40
    x = torch.randn(nt, B, c)

    def body():
        opts = _options("disk", "fp16", transfer_interval=3, disk_dir=tmp_path)
        with make_ring_store(nt, B, c, "cpu", opts) as s, make_ring_store(nt, B, c, "cpu", _options("gpu", "fp16")) as ref:
            _fill(s, x, [5, 5, 5, 5, 2])
            _fill(ref, x, [nt])
            for a, b in [(18, 20), (14, 21), (14, 16), (7, 14), (11, 14), (12, 21), (15, 21), (9, 13)]:
                assert torch.equal(s.get(a, b - a), ref.get(a, b - a)), (a, b)

    _without_hanging(body)


def test_disk_store_write_failing_after_finish_forward_raises_at_the_get_that_needs_it(tmp_path, monkeypatch):
    """finish_forward does not wait for the writers: a write that fails later (here: held back,
    then out of space) is raised, naming the directory, by the get that reads its group."""
    release = threading.Event()
    real = disk_module._write_at

    def late_failure(fd, buf, offset):
        if offset == 0:
            release.wait(30)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, buf, offset)

    monkeypatch.setattr(disk_module, "_write_at", late_failure)
    monkeypatch.setattr(disk_module, "IO_STEPS", 4)
    s = make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", transfer_interval=4, disk_dir=tmp_path))
    _fill(s, _ring())  # returns while the first group's write is still held back
    assert torch.equal(s.get(NT - 4, 4), _ring()[NT - 4:])  # the last group: no write needed
    release.set()
    with pytest.raises(StorageError, match="ENOSPC") as info:
        s.get(0, 4)
    assert str(tmp_path) in str(info.value) and "writing" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("interval", [8, 5, 3])
def test_disk_store_backward_reads_come_from_the_reader_thread(dtype, interval, tmp_path, monkeypatch):
    """Decreasing gets of whole kernel chunks (64 steps; transfer_interval 8: 8 blocks each; 5 or
    3: I/O groups of 65 or 66 steps that the chunks straddle) find their groups already read
    ahead: each group but the last (kept in host memory by the forward) is read once, all on
    the reader thread."""
    callers = []
    real_read = disk_module._DiskResources.read_block

    def counting(self, g, items):
        callers.append(threading.current_thread() is threading.main_thread())
        return real_read(self, g, items)

    monkeypatch.setattr(disk_module._DiskResources, "read_block", counting)
    nt, chunk = 320, 64
    x = _ring(8, nt=nt)
    opts = _options("disk", dtype, transfer_interval=interval, disk_dir=tmp_path)
    with make_ring_store(nt, B, C, "cpu", opts) as s, \
            make_ring_store(nt, B, C, "cpu", _options("gpu", dtype)) as ref:
        _fill(s, x, [chunk] * (nt // chunk))
        _fill(ref, x, [nt])
        for n0 in range(nt - chunk, -1, -chunk):
            assert torch.equal(s.get(n0, chunk), ref.get(n0, chunk)), n0
        groups = -(-s.n_blocks // s.group)
    assert sum(callers) == 0 and len(callers) == groups - 1


@pytest.mark.parametrize("tier", ["cpu", "disk"])
def test_store_staged_reads_in_any_order_and_repeated(tier, tmp_path):
    x = _ring(2)
    with make_ring_store(NT, B, C, "cpu", _options(tier, "int8", transfer_interval=4, disk_dir=tmp_path)) as s, \
            make_ring_store(NT, B, C, "cpu", _options("gpu", "int8")) as ref:
        _fill(s, x)
        _fill(ref, x)
        for n0, t in [(20, 9), (0, 3), (5, 17), (5, 17), (28, 1), (11, 2), (0, NT)]:
            assert torch.equal(s.get(n0, t), ref.get(n0, t)), (n0, t)


@pytest.mark.parametrize("tier", ["cpu", "disk"])
@pytest.mark.parametrize("io_steps", [8, 64])
def test_store_staged_partial_forward_serves_stored_steps(tier, io_steps, tmp_path, monkeypatch):
    monkeypatch.setattr(disk_module, "IO_STEPS", io_steps)  # disk: the puts stop inside a group
    x = _ring(3)
    with make_ring_store(NT, B, C, "cpu", _options(tier, "fp32", transfer_interval=4, disk_dir=tmp_path)) as s:
        s.put(0, x[:6])
        s.put(6, x[6:11])  # stops inside block 2
        assert torch.equal(s.get(7, 4), x[7:11])  # get without finish_forward flushes
        assert torch.equal(s.get(0, 7), x[:7])
        with pytest.raises(FwiArgumentError, match=r"steps \[9, 13\) were not all stored"):
            s.get(9, 4)


def test_store_chunk_may_be_overwritten_after_put(tmp_path):
    x = _ring(4)
    codec = CODECS["fp16"]
    parts = codec.allocate(NT, B, C, torch.device("cpu"))
    codec.encode(x, parts)
    want = codec.decode(parts)  # the fp16 codec's round trip of the whole ring
    for tier in ("gpu", "cpu", "disk"):
        with make_ring_store(NT, B, C, "cpu", _options(tier, "fp16", transfer_interval=5, disk_dir=tmp_path)) as s:
            buf = torch.empty((3, B, C))
            for n in range(0, NT, 3):
                t = min(3, NT - n)
                buf[:t].copy_(x[n:n + t])
                s.put(n, buf[:t])
                buf.fill_(float("nan"))
            assert torch.equal(s.get(0, NT), want), tier


def test_store_zero_cells_ring(tmp_path):
    for tier in ("gpu", "cpu", "disk"):
        for dtype in DTYPES:
            with make_ring_store(5, B, 0, "cpu", _options(tier, dtype, transfer_interval=2, disk_dir=tmp_path)) as s:
                _fill(s, torch.zeros((5, B, 0)), [2, 3])
                assert s.get(1, 3).shape == (3, B, 0)
                assert s.nbytes == 0


# ---- bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@ALL_TIERS
def test_store_nbytes_match_ring_nbytes_formula(tier, dtype, tmp_path):
    k = 4
    with make_ring_store(NT, B, C, "cpu", _options(tier, dtype, transfer_interval=k, disk_dir=tmp_path)) as s:
        assert s.nbytes == ring_nbytes(NT, B, C, dtype)
        if tier == "gpu":
            assert s.device_nbytes == s.nbytes
        else:  # two staging blocks of k steps on the device
            assert s.device_nbytes == 2 * ring_nbytes(k, B, C, dtype)
        if tier == "cpu":
            assert s.host_nbytes == s.nbytes
        if tier == "disk":
            files = list(s.directory.iterdir())
            assert sum(f.stat().st_size for f in files) == s.nbytes


def test_store_cpu_tier_keeps_device_bytes_small():
    nt, k = 256, 8
    gpu_s = make_ring_store(nt, B, C, "cpu", _options("gpu", "fp32"))
    cpu_s = make_ring_store(nt, B, C, "cpu", _options("cpu", "fp32", transfer_interval=k))
    assert cpu_s.device_nbytes * (nt // (2 * k)) == gpu_s.device_nbytes
    assert cpu_s.device_nbytes <= gpu_s.device_nbytes / 16
    gpu_s.close()
    cpu_s.close()


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
@pytest.mark.parametrize("tier,cls,store_copy", [("cpu", CpuRingStore, "_store_block"),
                                                 ("disk", DiskRingStore, "_store_in_group")])
def test_store_staged_tier_moves_runs_of_whole_blocks_in_one_copy(tier, cls, store_copy, dtype,
                                                                  monkeypatch, tmp_path):
    """A 64-step chunk of 8-step blocks goes to and from host memory (the cpu tier's ring, the
    disk tier's 64-step I/O group buffer) as one copy per part, not eight; the values are the
    gpu tier's."""
    monkeypatch.setattr(disk_module, "IO_STEPS", 64)
    nt, k, chunk = 256, 8, 64
    calls = {"store": 0, "load": 0}
    real_store, real_load = getattr(cls, store_copy), cls._load_block

    def store_copy_counted(self, *args):
        calls["store"] += 1
        return real_store(self, *args)

    def load_block(self, *args):
        calls["load"] += 1
        return real_load(self, *args)

    monkeypatch.setattr(cls, store_copy, store_copy_counted)
    monkeypatch.setattr(cls, "_load_block", load_block)
    x = _ring(nt=nt)
    opts = _options(tier, dtype, transfer_interval=k, disk_dir=str(tmp_path))
    with make_ring_store(nt, B, C, "cpu", _options("gpu", dtype)) as ref, \
            make_ring_store(nt, B, C, "cpu", opts) as store:
        _fill(ref, x, [nt])
        _fill(store, x, [chunk] * (nt // chunk))
        assert calls["store"] == nt // chunk  # one run of 8 blocks per chunk
        for n0, t, got in _read_back(store, [chunk] * (nt // chunk)):
            assert torch.equal(got, ref.get(n0, t)), (n0, t)
    # per get: one run of the blocks no slot holds, plus the prefetch of the block below
    assert calls["load"] <= 2 * (nt // chunk)


def test_make_ring_store_builds_each_tier(tmp_path):
    kinds = {"gpu": GpuRingStore, "cpu": CpuRingStore, "disk": DiskRingStore}
    for tier, cls in kinds.items():
        with make_ring_store(4, 1, 8, torch.device("cpu"), _options(tier, "fp32", disk_dir=tmp_path)) as s:
            assert isinstance(s, cls)
    with make_ring_store(4, 1, 8, "cpu") as s:  # default options: gpu tier, fp32
        assert isinstance(s, GpuRingStore) and s.nbytes == 4 * 8 * 4


# ---- clean-up of the disk tier ---------------------------------------------------------------


def test_disk_store_removes_files_after_success(tmp_path):
    s = make_ring_store(NT, B, C, "cpu", _options("disk", "int8", transfer_interval=4, disk_dir=tmp_path))
    root = s.directory
    parts = [f for f in root.iterdir() if f.name != ".owner.lock"]  # the lock marks a live store
    assert root.parent == tmp_path and len(parts) == 2  # codes, scales
    _fill(s, _ring())
    _read_back(s)
    s.close()
    s.close()  # idempotent
    assert list(tmp_path.iterdir()) == []


def test_disk_store_default_directory_is_temporary_and_removed():
    with make_ring_store(8, 1, 16, "cpu", _options("disk", "fp32", transfer_interval=2)) as s:
        root = s.directory
        assert root.is_dir() and root.name.startswith("fwi-ring-")
    assert not root.exists()


def test_disk_store_removes_files_after_exception_between_put_and_get(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", transfer_interval=4, disk_dir=tmp_path)) as s:
            _fill(s, _ring())
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_disk_store_removes_files_after_keyboard_interrupt_in_get_loop(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with make_ring_store(NT, B, C, "cpu", _options("disk", "bf16", transfer_interval=4, disk_dir=tmp_path)) as s:
            _fill(s, _ring())
            for n in range(NT - 1, -1, -1):
                s.get(n, 1)
                if n == 17:
                    raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_disk_store_dropped_without_close_removes_files(tmp_path):
    def backward_interrupted():
        s = make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", transfer_interval=4, disk_dir=tmp_path))
        _fill(s, _ring())
        for n in range(NT - 1, -1, -1):
            s.get(n, 1)
            if n == 20:
                raise KeyboardInterrupt

    try:
        backward_interrupted()
    except KeyboardInterrupt:
        pass
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_disk_store_removes_files_at_interpreter_exit(tmp_path):
    script = (
        "import torch\n"
        "from fwi_cli.storage import make_ring_store\n"
        "from fwi_cli.propagator.options import BoundaryOptions\n"
        f"o = BoundaryOptions(storage='disk', transfer_interval=4, disk_dir={str(tmp_path)!r})\n"
        "s = make_ring_store(12, 2, 40, 'cpu', o)\n"
        "s.put(0, torch.randn(12, 2, 40))\n"
        "s.get(8, 4)\n"
        "print('files', len([f for f in s.directory.iterdir() if f.name != '.owner.lock']))\n"
        "raise KeyboardInterrupt\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "files 1" in res.stdout, res.stderr
    assert res.returncode != 0 and "KeyboardInterrupt" in res.stderr
    assert list(tmp_path.iterdir()) == []


# ---- errors ------------------------------------------------------------------------------


def test_disk_store_full_disk_raises_storage_error_naming_directory(tmp_path, monkeypatch):
    def no_space(fd, buf, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk_module, "_write_at", no_space)
    monkeypatch.setattr(disk_module, "IO_STEPS", 4)  # several groups: all but the last are written
    s = make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", transfer_interval=4, disk_dir=tmp_path))
    with pytest.raises(StorageError, match="ENOSPC") as info:  # at a put, or the get reading it
        _fill(s, _ring())
        _read_back(s)
    assert str(tmp_path) in str(info.value) and "disk_dir" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # removed on error
    with pytest.raises(StorageError, match="closed"):
        s.get(0, 1)


def test_disk_store_permission_denied_in_writer_raises_at_next_put(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_module, "_write_at", _raiser(errno.EACCES))
    monkeypatch.setattr(disk_module, "IO_STEPS", 1)  # each block is written as it is put
    s = make_ring_store(NT, B, C, "cpu", _options("disk", "int8", transfer_interval=1, disk_dir=tmp_path))
    s.put(0, _ring()[:1])
    s._res.write_q.join()  # the writer has met the error
    with pytest.raises(StorageError, match="EACCES") as info:
        s.put(1, _ring()[1:2])
    assert str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def _raiser(code):
    def write(fd, buf, offset):
        raise OSError(code, os.strerror(code))

    return write


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory modes")
def test_disk_store_unwritable_directory_raises_storage_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="locked"):
            make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", disk_dir=locked))
    finally:
        locked.chmod(0o700)


def test_disk_store_directory_that_is_a_file_raises_storage_error(tmp_path):
    not_dir = tmp_path / "plain_file"
    not_dir.write_text("x")
    with pytest.raises(StorageError, match="plain_file"):
        make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", disk_dir=not_dir))


def test_disk_store_too_little_free_space_raises_before_writing(tmp_path, monkeypatch):
    class Usage:
        total = used = free = 1000

    monkeypatch.setattr(disk_module.shutil, "disk_usage", lambda p: Usage())
    with pytest.raises(StorageError, match=r"1000 bytes free.*needs 69600") as info:
        make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", disk_dir=tmp_path))
    assert str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_disk_store_missing_files_under_backward_raise_storage_error(tmp_path):
    s = make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", transfer_interval=4, disk_dir=tmp_path))
    _fill(s, _ring())
    for f in s.directory.iterdir():
        f.unlink()
    with pytest.raises(StorageError, match="missing") as info:
        s.get(NT - 4, 4)
    assert str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_disk_store_truncated_file_raises_storage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_module, "IO_STEPS", 4)  # several groups: all but the last go to the file
    s = make_ring_store(NT, B, C, "cpu", _options("disk", "fp32", transfer_interval=4, disk_dir=tmp_path))
    _fill(s, _ring())
    s._res.write_q.join()  # (a write after the truncation would extend the file again)
    os.truncate(s.directory / "part0.bin", 100)
    with pytest.raises(StorageError, match="ended early"):
        _read_back(s)
    assert list(tmp_path.iterdir()) == []


def test_make_ring_store_rejects_bad_options():
    opts = BoundaryOptions()
    opts.transfer_interval = 0  # BoundaryOptions checks at construction only
    with pytest.raises(FwiArgumentError, match="transfer_interval.*>= 1"):
        make_ring_store(4, 1, 8, "cpu", opts)
    opts = BoundaryOptions()
    opts.storage = "tape"
    with pytest.raises(FwiArgumentError, match=r"storage.*'gpu', 'cpu', 'disk'.*'tape'"):
        make_ring_store(4, 1, 8, "cpu", opts)
    opts = BoundaryOptions()
    opts.storage_dtype = "fp8"
    with pytest.raises(FwiArgumentError, match=r"fp32.*int8.*'fp8'"):
        make_ring_store(4, 1, 8, "cpu", opts)
    with pytest.raises(FwiArgumentError, match="nt must be an integer >= 1"):
        make_ring_store(0, 1, 8, "cpu", BoundaryOptions())


@ALL_TIERS
def test_store_rejects_bad_puts_and_gets(tier, tmp_path):
    with make_ring_store(8, B, C, "cpu", _options(tier, "fp32", transfer_interval=2, disk_dir=tmp_path)) as s:
        with pytest.raises(FwiArgumentError, match=r"shape \(T, 2, 300\)"):
            s.put(0, torch.zeros(2, B, C + 1))
        with pytest.raises(FwiArgumentError, match="float32"):
            s.put(0, torch.zeros(2, B, C, dtype=torch.float64))
        with pytest.raises(FwiArgumentError, match=r"steps \[7, 9\) are outside \[0, 8\)"):
            s.put(7, torch.zeros(2, B, C))
        if tier != "gpu":
            with pytest.raises(FwiArgumentError, match="expected n0=0, got n0=2"):
                s.put(2, torch.zeros(2, B, C))
        s.put(0, torch.zeros(8, B, C))
        with pytest.raises(FwiArgumentError, match="outside"):
            s.get(-1, 2)
    with pytest.raises(StorageError, match="closed"):
        s.get(0, 1)


# ---- CUDA ----------------------------------------------------------------------------------


@gpu
@needs_cuda
@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tier", ["cpu", "disk"])
def test_store_cuda_tier_returns_same_values_as_gpu_tier(tier, dtype, pinned, tmp_path):
    _assert_same_as_gpu_tier(
        tier, dtype, torch.device("cuda"), transfer_interval=4, pinned_memory=pinned, disk_dir=tmp_path
    )


@gpu
@needs_cuda
@ALL_TIERS
def test_store_cuda_on_side_stream_with_busy_compute(tier, tmp_path):
    """Puts and gets issued from a non-default stream that is kept busy between calls."""
    dev = torch.device("cuda")
    x = _ring(7, nt=64, device=dev)
    work = torch.randn(2048, 2048, device=dev)
    stream = torch.cuda.Stream(dev)
    opts = _options(tier, "int8", transfer_interval=8, disk_dir=tmp_path)
    with torch.cuda.stream(stream), make_ring_store(64, B, C, dev, opts) as s, \
            make_ring_store(64, B, C, dev, _options("gpu", "int8")) as ref:
        buf = torch.empty((3, B, C), device=dev)
        for n in range(0, 64, 3):
            t = min(3, 64 - n)
            buf[:t].copy_(x[n:n + t])
            s.put(n, buf[:t])
            ref.put(n, x[n:n + t])
            work = work @ work / 2048  # keep the compute stream busy
            buf.fill_(float("nan"))  # overwrite right after put
        s.finish_forward()
        got = []
        for n in range(61, -1, -3):
            got.append((n, s.get(n, 3)))
            work = work @ work / 2048
        for n, g in got:
            assert torch.equal(g, ref.get(n, 3)), n
        # the compiled backward's pattern: whole blocks, each range prefetched before its get
        got = []
        s.prefetch(56, 8)
        for n in range(56, -1, -8):
            got.append((n, s.get(n, 8)))
            work = work @ work / 2048
            if n > 0:
                s.prefetch(n - 8, 8)
            work = work @ work / 2048
        for n, g in got:
            assert torch.equal(g, ref.get(n, 8)), n


# ---- random chunkings --------------------------------------------------------------------


def _partition(total: int, cuts: list[int]) -> list[int]:
    """Split ``total`` into positive sizes at the (deduplicated) cut points."""
    points = sorted({c for c in cuts if 0 < c < total})
    bounds = [0, *points, total]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nt=st.integers(1, 40),
    interval=st.integers(1, 12),
    put_cuts=st.lists(st.integers(1, 39), max_size=8),
    get_cuts=st.lists(st.integers(1, 39), max_size=8),
    tier=st.sampled_from(["cpu", "disk"]),
    dtype=st.sampled_from(DTYPES),
    io_steps=st.sampled_from([1, 5, 64]),
    hint=st.sampled_from(["none", "exact", "other"]),
)
def test_store_any_chunking_matches_gpu_tier(nt, interval, put_cuts, get_cuts, tier, dtype, io_steps, hint,
                                             tmp_path):
    """Any put and get chunking; before each get, no prefetch, the get's own range, or another."""
    saved, disk_module.IO_STEPS = disk_module.IO_STEPS, io_steps  # disk: blocks per file I/O group
    try:
        _any_chunking_matches_gpu_tier(nt, interval, put_cuts, get_cuts, tier, dtype, hint, tmp_path)
    finally:
        disk_module.IO_STEPS = saved


def _any_chunking_matches_gpu_tier(nt, interval, put_cuts, get_cuts, tier, dtype, hint, tmp_path):
    x = _ring(nt, nt=nt)
    opts = _options(tier, dtype, transfer_interval=interval, disk_dir=tmp_path)
    with make_ring_store(nt, B, C, "cpu", opts) as s, \
            make_ring_store(nt, B, C, "cpu", _options("gpu", dtype)) as ref:
        _fill(s, x, _partition(nt, put_cuts))
        _fill(ref, x, [nt])
        n = nt
        for t in _partition(nt, get_cuts):
            n -= t
            if hint == "exact":
                s.prefetch(n, t)
            elif hint == "other":
                s.prefetch(max(0, n - t), t)
            assert torch.equal(s.get(n, t), ref.get(n, t)), (n, t)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tier", ["cpu", "disk"])
def test_store_prefetch_loads_whole_block_ranges_the_next_get_uses(tier, dtype, tmp_path, monkeypatch):
    """The backward's pattern (compiled.backward): prefetch the next range, then get it. An aligned
    range is loaded by the prefetch and only decoded by the get; the values are the stored ones."""
    nt, k, chunk = 40, 4, 8
    loads = []
    cls = CpuRingStore if tier == "cpu" else DiskRingStore
    real = cls._load_run

    def counting(self, j, count, parts, steps):
        loads.append((j, count, steps))
        return real(self, j, count, parts, steps)

    monkeypatch.setattr(cls, "_load_run", counting)
    x = _ring(3, nt=nt)
    with make_ring_store(nt, B, C, "cpu", _options(tier, dtype, transfer_interval=k, disk_dir=tmp_path)) as s, \
            make_ring_store(nt, B, C, "cpu", _options("gpu", dtype)) as ref:
        _fill(s, x, [chunk] * (nt // chunk))
        _fill(ref, x, [nt])
        s.prefetch(nt - chunk, chunk)
        for n0 in range(nt - chunk, -1, -chunk):
            assert loads[-1] == (n0 // k, chunk // k, chunk)  # the prefetch moved this range
            before = len(loads)
            got = s.get(n0, chunk)
            assert len(loads) == before and s._ahead is None  # the get loaded nothing more
            assert torch.equal(got, ref.get(n0, chunk)), n0
            if n0 > 0:
                s.prefetch(n0 - chunk, chunk)
        s.prefetch(2, 4)  # not whole blocks: ignored
        assert s._ahead is None
        assert torch.equal(s.get(2, 4), ref.get(2, 4))


def test_store_prefetch_before_the_forward_ends_is_ignored(tmp_path):
    x = _ring(4)
    with make_ring_store(NT, B, C, "cpu", _options("disk", "int8", transfer_interval=4, disk_dir=tmp_path)) as s, \
            make_ring_store(NT, B, C, "cpu", _options("gpu", "int8")) as ref:
        s.put(0, x[:8].clone())
        s.prefetch(0, 4)
        assert s._ahead is None
        s.put(8, x[8:].clone())
        _fill(ref, x, [NT])
        s.finish_forward()
        assert torch.equal(s.get(0, 4), ref.get(0, 4))
    with make_ring_store(NT, B, C, "cpu", _options("gpu", "fp32")) as g:
        g.prefetch(0, 4)  # the base hint: does nothing, never fails
