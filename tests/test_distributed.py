"""Scale-out: torchrun shot-parallel jobs (2 gloo ranks on CPU) and the concurrent sweep.

The references are single-process runs of the same tiny experiment: a 2-rank run must give
the same shots, loss curve and final model within fp32 reduction-order noise; a sweep in 2
CPU worker processes must write the same stores as the sequential sweep.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as tmp
from _experiment_tiny import eager_observed_only, write_tiny

from fwi_cli.cli import main
from fwi_cli.errors import FwiArgumentError, RunLockedError, StorageError
from fwi_cli.experiment import Experiment, Job, load_config, parallel, runner, store
from fwi_cli.experiment.distributed import (
    PeerRankError,
    check_batch,
    init_from_env,
    shutdown,
    split_shots,
)
from fwi_cli.experiment.lock import RunLock
from fwi_cli.experiment.matrix import expand

RTOL = 1e-5  # fp32 sums in another order
JOB = Job("eager", "gpu", "fp32")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------- units
def test_distributed_split_shots_partitions_the_batch_in_order():
    idx = np.array([7, 3, 9, 0, 5])
    for world in (1, 2, 3, 5):
        parts = [split_shots(idx, r, world) for r in range(world)]
        np.testing.assert_array_equal(np.concatenate(parts), idx)
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(FwiArgumentError, match="rank must lie in"):
        split_shots(idx, 2, 2)


def test_distributed_single_process_without_torchrun_env():
    assert init_from_env({}) is None
    assert init_from_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    with pytest.raises(FwiArgumentError, match="RANK is not"):
        init_from_env({"WORLD_SIZE": "2"})
    check_batch(2, None)


def test_parallel_worker_devices_parse_and_reject():
    assert parallel.worker_devices(None, None) is None
    assert parallel.worker_devices(None, 2) == ["cpu", "cpu"]
    with pytest.raises(FwiArgumentError, match="not both"):
        parallel.worker_devices("0", 2)
    with pytest.raises(FwiArgumentError, match="at least 1"):
        parallel.worker_devices(None, 0)
    with pytest.raises(FwiArgumentError, match="comma-separated"):
        parallel.worker_devices("0;1", None)
    with pytest.raises(FwiArgumentError, match="twice"):
        parallel.worker_devices("0,0", None)
    if not torch.cuda.is_available():
        with pytest.raises(FwiArgumentError, match="GPU 0 does not exist"):
            parallel.worker_devices("0", None)
        with pytest.raises(FwiArgumentError, match="no CUDA GPU is visible"):
            parallel.worker_devices("all", None)


def test_parallel_gpus_all_takes_every_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert parallel.worker_devices("all", None) == ["cuda:0", "cuda:1", "cuda:2"]
    assert parallel.worker_devices(" ALL ", None) == ["cuda:0", "cuda:1", "cuda:2"]
    assert parallel.worker_devices("2,0", None) == ["cuda:2", "cuda:0"]
    with pytest.raises(FwiArgumentError, match="GPU 3 does not exist"):
        parallel.worker_devices("1,3", None)


def test_parallel_hands_out_the_longest_jobs_first():
    jobs = load_config(Path(__file__).parents[1] / "configs" / "marmousi_bdy.yaml").matrix
    jobs = parallel.handout_order(expand(jobs, "<test>"))
    labels = [f"{j.impl}-{j.storage}-{j.dtype}" for j in jobs]
    assert [j.impl for j in jobs[:4]] == ["eager"] * 4  # ~3x the c jobs: started first
    assert labels[4:7] == ["c-disk-fp16", "c-disk-bf16", "c-disk-int8"]
    assert labels[7:10] == ["c-cpu-fp16", "c-cpu-bf16", "c-cpu-int8"]
    assert labels[10:] == ["c-gpu-fp32", "c-gpu-fp16", "c-gpu-bf16", "c-gpu-int8"]  # matrix order


# --------------------------------------------------------------------------- torchrun
def test_distributed_torchrun_invert_equals_one_process(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    # 3 shots per batch over 2 ranks: an uneven split (2 + 1)
    env = _env()
    two_gpus = torch.cuda.device_count() >= 2  # NCCL on cuda:0 and cuda:1, else gloo on CPU
    if not two_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a 1-GPU host cannot give two ranks a GPU each
    path = write_tiny(tmp_path, inversion={"batch_shots": 3}, device="auto" if two_gpus else "cpu")
    ex = Experiment(load_config(path))
    ex.ensure_observed()  # with eager here; the ranks reuse it
    ref = runner.compute_job(ex.cfg, ex.problem, JOB, ex.observed())

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fwi_cli", "invert", str(path), "--impl", "eager", "--storage", "gpu"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("store: ") == 1 and r.stdout.count("iter 3/3") == 1  # rank 0 only

    rec = store.read_job(store.job_path(ex.run_dir, JOB))
    backend = "nccl" if two_gpus else "gloo"
    assert rec.status == "complete" and rec.attrs["distributed"] == {"world_size": 2,
                                                                     "backend": backend}
    assert rec.attrs["hash"] == ex.job_hash(JOB)  # resumes/skips like a 1-process store
    np.testing.assert_array_equal(rec.shots, ref.shots)
    np.testing.assert_allclose(rec.loss, ref.loss, rtol=RTOL)
    np.testing.assert_allclose(rec.rmse, ref.rmse, rtol=RTOL)
    assert _rel(rec.vp_final, ref.vp_final) < RTOL
    assert np.max(np.abs(ref.vp_final - ex.problem.vp_init)) > 1.0  # the model did move


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FailsOnCall:
    """A propagator whose ``n``-th call raises a StorageError (one rank's disk failing)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.calls = inner, n, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise StorageError("disk tier lost (test)")
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _rank_main(rank: int, port: int, good: str, bad: str, locked: str, out) -> None:
    """One rank: a run directory locked by another process, a sweep (the writers
    booby-trapped on rank 1), then a job that fails on rank 1 at iteration 2."""
    env = {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.environ.update(env)
    torch.set_num_threads(1)
    runner.OBSERVED_IMPLS = ("eager",)
    if rank != 0:
        def trap(*args, **kwargs):
            raise AssertionError("rank 1 wrote a store")

        for name in ("write_observed", "update_observed_init", "begin_job", "finish_job"):
            setattr(store, name, trap)
    ctx = init_from_env(env)
    try:
        Experiment(load_config(locked), dist=ctx).ensure_observed()
        refused = "no error"
    except (RunLockedError, PeerRankError) as exc:
        refused = type(exc).__name__
    events: list = []
    ex = Experiment(load_config(good), dist=ctx)
    summary = ex.sweep(progress=events.append)
    kinds = [e.kind for e in events]
    if rank != 0:  # fail the next experiment's propagator on this rank only
        real = runner.make_propagator
        runner.make_propagator = lambda *a, **k: _FailsOnCall(real(*a, **k), 2)
    failed = Experiment(load_config(bad), dist=ctx).sweep()
    models = [r.vp_final.tobytes() for r in summary.results]
    out.put((rank, refused, isinstance(ex.lock, RunLock), kinds, summary.ok, models,
             [(r.status, r.failed_iteration, r.reason) for r in failed.results]))
    # both ranks done: tear the gloo group down together here rather than at interpreter exit,
    # where one rank closing its sockets while the other still runs its exit handlers aborted a
    # rank once in a full CI run ("terminate called without an active exception")
    torch.distributed.barrier()
    shutdown()


def test_distributed_rank0_alone_writes_and_failures_are_agreed(tmp_path):
    good = write_tiny(tmp_path, "good.yaml", name="good")
    bad = write_tiny(tmp_path, "bad.yaml", name="bad", inversion={"iterations": 3})
    locked = write_tiny(tmp_path, "locked.yaml", name="locked")
    out = tmp.get_context("spawn").SimpleQueue()
    with RunLock(load_config(locked).run_dir):  # another fwi process writes "locked"
        tmp.spawn(_rank_main, args=(_free_port(), str(good), str(bad), str(locked), out),
                  nprocs=2, join=True)
    got = dict((r[0], r[1:]) for r in (out.get(), out.get()))

    refused0, lock0, kinds0, ok0, models0, failed0 = got[0]
    refused1, lock1, kinds1, ok1, models1, failed1 = got[1]
    assert len(models0) == 2 and models0 == models1  # the ranks' models stay bitwise equal
    # rank 0 cannot lock: it raises, and rank 1 learns it instead of waiting for rank 0
    assert (refused0, refused1) == ("RunLockedError", "PeerRankError")
    assert lock0 and not lock1  # rank 1 takes no run-directory lock
    assert kinds1 == [] and kinds0[:2] == ["observed_start", "observed_done"]  # rank 0 reports
    assert kinds0.count("iteration") == 6 and ok0 and ok1
    run = load_config(good).run_dir
    assert all(store.is_complete(store.job_path(run, j)) for j in Experiment(load_config(good)).jobs)
    # rank 1's propagator fails at iteration 2: both ranks stop there, rank 0 records why
    assert failed0[0][:2] == failed1[0][:2] == ("failed", 2)
    assert failed1[0][2] == "StorageError: disk tier lost (test)"
    assert failed0[0][2] == ("PeerRankError: rank 1 of 2 failed: StorageError: disk tier lost "
                             "(test)")
    rec = store.read_job(store.job_path(load_config(bad).run_dir, JOB))
    assert rec.status == "failed" and rec.attrs["failed_iteration"] == 2
    assert np.isfinite(rec.loss[0]) and np.isnan(rec.loss[1:]).all()


# --------------------------------------------------------------------------- concurrent sweep
MATRIX = [{"impl": "eager", "storage": "gpu", "dtype": ["fp32", "bf16", "int8"]}]


def test_parallel_sweep_writes_the_sequential_stores(tmp_path, monkeypatch, capsys):
    eager_observed_only(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # workers get 1 thread each too: the same summation order
    try:
        (tmp_path / "seq").mkdir()
        seq_cfg = load_config(write_tiny(tmp_path / "seq", memory={"strategy": "boundary"},
                                         matrix=MATRIX))
        par_cfg = load_config(write_tiny(tmp_path, memory={"strategy": "boundary"},
                                         matrix=MATRIX))
        seq = Experiment(seq_cfg).sweep()
        ex = Experiment(par_cfg)
        ex.ensure_observed()  # with eager here (workers would try impl c first)

        events, locked = [], []

        def progress(ev):
            events.append(ev)
            if ev.kind == "job_start" and not locked:  # the parent holds the run-dir lock
                with pytest.raises(RunLockedError):
                    RunLock(par_cfg.run_dir).acquire()
                locked.append(True)

        par = parallel.sweep(ex, ["cpu", "cpu"], progress=progress)
    finally:
        torch.set_num_threads(threads)
    assert par.ok and locked and par.observed.reused
    assert [r.job.label for r in par.results] == [r.job.label for r in seq.results]
    for a, b in zip(seq.results, par.results, strict=True):
        ra, rb = store.read_job(a.path), store.read_job(b.path)
        assert rb.status == "complete" and rb.attrs["hash"] == ra.attrs["hash"]
        np.testing.assert_array_equal(rb.shots, ra.shots)
        np.testing.assert_array_equal(rb.loss, ra.loss)
        np.testing.assert_array_equal(rb.rmse, ra.rmse)
        np.testing.assert_array_equal(rb.vp_final, ra.vp_final)
    assert not np.array_equal(seq.results[0].loss, seq.results[2].loss)  # int8 differs
    ends = sorted((e.index, e.total, e.job.label) for e in events if e.kind == "job_end")
    assert ends == [(i, 3, j.label) for i, j in enumerate(ex.jobs, 1)]
    assert sum(e.kind == "iteration" for e in events) == 9

    # the same complete/resume rules: a rerun (here through the CLI) skips every job
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(par_cfg.path), "--workers", "2"])
    assert e.value.code == 0
    assert "0 job(s) run, 3 already complete, 0 failed" in capsys.readouterr().out


def test_parallel_killed_worker_is_reported_and_rerun_completes(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    cfg = load_config(write_tiny(tmp_path, inversion={"iterations": 12},  # long enough to be hit
                                 matrix=[{"impl": "eager", "storage": "gpu", "dtype": "fp32"}]))
    ex = Experiment(cfg)
    ex.ensure_observed()

    def kill_worker(ev):
        if ev.kind == "iteration" and ev.iteration == 1:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(parallel.WorkerError, match="worker 0 \\(cpu\\) died .* eager·gpu·fp32"):
        parallel.sweep(ex, ["cpu"], progress=kill_worker)
    assert not store.is_complete(store.job_path(cfg.run_dir, JOB))
    again = Experiment(cfg).sweep()  # the next sweep redoes the job
    assert again.ok and [r.job for r in again.results] == [JOB] and again.skipped == []


def test_cli_sweep_concurrency_options_are_checked(capsys, tmp_path):
    path = write_tiny(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), "--gpus", "0", "--workers", "2"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("fwi: error: give --gpus or --workers, not both")
    assert not Path(load_config(path).run_dir).exists()
