"""Process faults: Ctrl-C, SIGTERM and SIGKILL mid-job and mid-store-write; two sweeps on one
run directory. Real subprocesses (a few seconds each); the rerun must resume, and no store
may be marked complete unless every array in it is whole (read back to the last byte).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _experiment_tiny import eager_observed_only, write_tiny
from test_reliability_faults import BOUNDARY, assert_whole

from fwi_cli.cli import main
from fwi_cli.errors import RunLockedError
from fwi_cli.experiment import Experiment, Job, load_config, store

REPO = Path(__file__).resolve().parents[1]

# The CLI with observed data modelled by impl eager (no compiler needed), and an optional
# SIGKILL of itself when the store writer reaches array FWI_KILL_AT for the FWI_KILL_NTH time.
LAUNCHER = """
import os, signal, sys
from fwi_cli.experiment import runner, store
runner.OBSERVED_IMPLS = ("eager",)
target, nth, seen = os.environ.get("FWI_KILL_AT"), int(os.environ.get("FWI_KILL_NTH", "1")), []
real_put = store._put
def put(g, name, *a, **k):
    if name == target:
        seen.append(name)
        if len(seen) == nth:
            real_put(g, name, *a, **k) if os.environ.get("FWI_KILL_AFTER") else None
            os.kill(os.getpid(), signal.SIGKILL)
    return real_put(g, name, *a, **k)
store._put = put
from fwi_cli.cli import main
main(sys.argv[1:])
"""


def _launch(tmp_path, *args, env=None, **popen):
    script = tmp_path / "fwi_launch.py"
    script.write_text(LAUNCHER)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=full_env,
                            text=True, **popen)


def _disk_sweep_config(tmp_path, iterations=3):
    memory = {**BOUNDARY, "disk_dir": str(tmp_path / "rings")}
    matrix = [{"impl": "eager", "storage": "disk", "dtype": ["fp32", "int8"]}]
    return write_tiny(tmp_path, memory=memory, matrix=matrix, inversion={"iterations": iterations})


@pytest.mark.parametrize("sig, code, word, at_job", [(signal.SIGINT, 130, "interrupted", 1),
                                                      (signal.SIGTERM, 143, "terminated", 2)])
def test_process_signal_mid_job_cleans_up_and_rerun_resumes(tmp_path, monkeypatch, sig, code, word, at_job):
    path = _disk_sweep_config(tmp_path)
    proc = _launch(tmp_path, "sweep", str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:  # plain progress lines: the pipe is not a terminal
            if f"[{at_job}/2]" in line and "iter 1/3" in line:
                proc.send_signal(sig)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert f"fwi: {word}; complete stores are kept, rerun to resume" in err and "Traceback" not in err
    assert list((tmp_path / "rings").iterdir()) == []  # the disk tier's files are gone
    run_dir = tmp_path / "runs" / "tiny"
    jobs = [Job("eager", "disk", "fp32"), Job("eager", "disk", "int8")]
    assert store.store_status(store.job_path(run_dir, jobs[at_job - 1])) == "running"
    assert [store.is_complete(store.job_path(run_dir, j)) for j in jobs[: at_job - 1]] == [True] * (at_job - 1)
    assert_whole(run_dir)

    eager_observed_only(monkeypatch)
    events = []
    summary = Experiment(load_config(path)).sweep(progress=events.append)
    assert "observed_reused" in [e.kind for e in events]
    assert [e.job for e in events if e.kind == "job_start"] == jobs[at_job - 1:]
    assert summary.ok and assert_whole(run_dir) == 2


@pytest.mark.parametrize("array, nth, after, redone", [
    ("vp_final", 2, False, "job"),       # the second job's result store, mid-write
    ("shots", 1, True, "job"),           # the first job: every array written, status not yet
    ("vp_true", 1, False, "observed"),   # the observed store, mid-write
])
def test_process_sigkill_mid_store_write_never_leaves_a_complete_store(tmp_path, monkeypatch, array, nth,
                                                                       after, redone):
    path = write_tiny(tmp_path)
    env = {"FWI_KILL_AT": array, "FWI_KILL_NTH": str(nth), **({"FWI_KILL_AFTER": "1"} if after else {})}
    proc = _launch(tmp_path, "sweep", str(path), "--quiet", env=env, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    run_dir = tmp_path / "runs" / "tiny"
    jobs = [Job("eager", "gpu", "fp32"), Job("eager", "gpu", "int8")]
    complete = [store.is_complete(store.job_path(run_dir, j)) for j in jobs]
    if redone == "observed":
        assert store.store_status(store.observed_path(run_dir)) == "running" and complete == [False, False]
    else:
        assert store.is_complete(store.observed_path(run_dir))
        assert complete == [nth == 2, False]
        assert store.store_status(store.job_path(run_dir, jobs[nth - 1])) == "running"
    assert_whole(run_dir)

    eager_observed_only(monkeypatch)
    events = []
    summary = Experiment(load_config(path)).sweep(progress=events.append)
    kinds = [e.kind for e in events]
    assert ("observed_start" in kinds) == (redone == "observed")
    assert [e.job for e in events if e.kind == "job_start"] == jobs[nth - 1 if redone == "job" else 0:]
    assert summary.ok and assert_whole(run_dir) == 2


HOLDER = """
import sys
from fwi_cli.experiment.lock import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_process_run_dir_locked_by_another_process_is_a_clear_error(tmp_path, monkeypatch, capsys):
    eager_observed_only(monkeypatch)
    path = write_tiny(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), "fwi-sweep-holder"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as e:
            main(["sweep", str(path), "--quiet"])
        _, err = capsys.readouterr()
        assert e.value.code == 2 and "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"fwi: error: {run_dir} is in use by another fwi process (pid {holder.pid} on ")
        assert "wait for it to finish, or give this run another name or output_dir" in line
        assert [p.name for p in run_dir.iterdir()] == [".fwi.lock"]  # nothing written
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, nothing stale is left
        holder.wait()
    summary = Experiment(load_config(path)).sweep()
    assert summary.ok and assert_whole(run_dir) == 2


def test_process_two_sweeps_on_one_run_dir_do_not_mix(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    path = write_tiny(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    proc = _launch(tmp_path, "sweep", str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:
            if "[1/2] eager·gpu·fp32: start" in line:
                break
        second = Experiment(load_config(path))
        with pytest.raises(RunLockedError, match=rf"pid {proc.pid} on .*fwi_launch\.py sweep"):
            second.sweep()
        with pytest.raises(RunLockedError):
            second.run_job(Job("eager", "gpu", "int8"))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert assert_whole(run_dir) == 2
    again = Experiment(load_config(path)).sweep()  # the lock is free once the first has finished
    assert again.results == [] and len(again.skipped) == 2


def test_process_lock_is_reentrant_and_released(tmp_path):
    from fwi_cli.experiment.lock import RunLock

    a, b = RunLock(tmp_path / "run"), RunLock(tmp_path / "run")
    with a:
        with a:  # a sweep holds it and its jobs take it again
            assert a.held
        assert a.held
        with pytest.raises(RunLockedError, match="is in use by another fwi process"):
            b.acquire()  # a second holder, even in this process, is refused
    assert not a.held
    with b:  # released: no stale state
        assert b.held
