"""A disk-tier ring left by a SIGKILLed process is removed by the next store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from fwi_cli.propagator.options import BoundaryOptions
from fwi_cli.storage import make_ring_store
from fwi_cli.storage.disk import reclaim_stale

_CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from fwi_cli.propagator.options import BoundaryOptions
    from fwi_cli.storage import make_ring_store
    s = make_ring_store(16, 2, 40, "cpu", BoundaryOptions(storage="disk", disk_dir=sys.argv[1],
                                                          transfer_interval=4))
    s.put(0, torch.ones(8, 2, 40))
    print(s.directory, flush=True)
    time.sleep(60)
    """
)


def _old(path, seconds=60):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_disk_ring_of_a_killed_process_is_reclaimed_by_the_next_store(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    stale = child.stdout.readline().strip()
    assert os.path.isdir(stale)
    # while the owner lives, its directory is never taken, however old
    _old(stale)
    assert reclaim_stale(tmp_path) == []
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert os.path.isdir(stale)  # SIGKILL: no handler ran
    _old(stale)
    store = make_ring_store(16, 2, 40, "cpu", BoundaryOptions(storage="disk", disk_dir=str(tmp_path)))
    try:
        assert not os.path.exists(stale)
        assert [p.name for p in tmp_path.iterdir()] == [store.directory.name]
    finally:
        store.close()
    assert list(tmp_path.iterdir()) == []


def test_disk_reclaim_skips_young_directories_and_live_stores(tmp_path):
    live = make_ring_store(8, 1, 10, "cpu", BoundaryOptions(storage="disk", disk_dir=str(tmp_path)))
    young = tmp_path / "fwi-ring-young"
    young.mkdir()
    try:
        _old(live.directory)
        assert reclaim_stale(tmp_path) == []  # live (locked) and young (just made) both kept
        assert young.is_dir() and live.directory.is_dir()
        live.put(0, torch.zeros(8, 1, 10))
        live.finish_forward()
        assert torch.equal(live.get(0, 8), torch.zeros(8, 1, 10))
    finally:
        live.close()
