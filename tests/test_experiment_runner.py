"""The runner: the seed's problem and loop, failures, observed reuse, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from _experiment_tiny import eager_observed_only, write_tiny

from fwi_cli.datasets import MARMOUSI_DH, load_marmousi
from fwi_cli.equations import Acoustic
from fwi_cli.errors import BackendUnavailableError
from fwi_cli.experiment import Experiment, Job, load_config, runner, store
from fwi_cli.experiment.problem import build_problem
from fwi_cli.propagator import MemoryOptions, Propagator
from fwi_cli.signal import ricker


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    return load_config(write_tiny(tmp_path))


def test_problem_matches_seed_layout(tiny):
    p = build_problem(tiny)
    vt = load_marmousi("true")[::4, ::4][0:20, 100:140]
    vi = load_marmousi("smooth")[::4, ::4][0:20, 100:140]
    np.testing.assert_array_equal(p.vp_true, vt)
    np.testing.assert_array_equal(p.vp_init, vi)
    assert p.dh == MARMOUSI_DH * 4 and p.device == torch.device("cpu")
    src_x = np.linspace(40 * 0.1, 40 * 0.9, 4).astype(np.int64)
    rec_x = np.linspace(0, 39, 20).astype(np.int64)
    np.testing.assert_array_equal(p.sources, np.stack([src_x, np.full(4, 1)], 1))
    assert p.receivers.shape == (4, 20, 2)
    for s in range(4):
        np.testing.assert_array_equal(p.receivers[s], np.stack([rec_x, np.full(20, 2)], 1))
    t = np.arange(150, dtype=np.float32) * 0.004
    np.testing.assert_array_equal(p.wavelet, ricker(t - 0.2, f=5.0))


def test_runner_job_is_the_seed_loop(tiny):
    ex = Experiment(tiny)
    ex.ensure_observed()
    observed = ex.observed()
    res = runner.compute_job(tiny, ex.problem, Job("eager", "gpu", "fp32"), observed)
    assert res.ok and res.reason is None

    # the seed page's loop, written out with the public API
    p = ex.problem
    solver = Propagator(Acoustic(device="cpu", spatial_order=4), shape=p.shape, dh=p.dh, dt=p.dt,
                        nt=p.nt, pml_width=p.pml_width, impl="eager",
                        memory=MemoryOptions(strategy="full"))
    vp = torch.tensor(p.vp_init, requires_grad=True)
    opt = torch.optim.Adam([vp], lr=10.0, eps=1e-16)
    rng = np.random.default_rng(0)

    def rmse(a):
        return float(np.sqrt(np.mean((a - p.vp_true) ** 2)))

    losses, rmses = [], [rmse(p.vp_init)]
    for _ in range(3):
        idx = rng.choice(4, 2, replace=False)
        opt.zero_grad()
        loss = (solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp]) - observed[idx]).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        rmses.append(rmse(vp.detach().numpy()))
    np.testing.assert_array_equal(res.loss, losses)
    np.testing.assert_array_equal(res.rmse, rmses)
    np.testing.assert_array_equal(res.vp_final, vp.detach().numpy())
    assert res.loss.shape == (3,) and res.rmse.shape == (4,)
    assert res.timing["total_s"] > 0 and res.timing["iterations_done"] == 3
    assert res.memory["observed_bytes"] == 4 * 150 * 20 * 4
    assert res.memory["peak_method"] in ("rss_sampled_above_start", None)


def test_runner_sweep_writes_stores_with_identical_shot_batches(tiny):
    events = []
    summary = Experiment(tiny).sweep(progress=events.append)
    assert summary.ok and [r.job.label for r in summary.results] == ["eager·gpu·fp32", "eager·gpu·int8"]
    rng = np.random.default_rng(0)
    expected = np.stack([rng.choice(4, 2, replace=False) for _ in range(3)])
    recs = [store.read_job(r.path) for r in summary.results]
    for rec in recs:
        assert rec.status == "complete"
        np.testing.assert_array_equal(rec.shots, expected)
        assert rec.attrs["config"]["inversion"]["lr"] == 10.0
        assert rec.attrs["timing"]["iter_s"] > 0 and rec.attrs["versions"]["torch"] == torch.__version__
        assert rec.attrs["device"] == "cpu" and rec.attrs["observed_impl"] == "eager"
    # strategy full: storage/dtype only label the job, so the runs agree exactly
    np.testing.assert_array_equal(recs[0].loss, recs[1].loss)
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["observed_start", "observed_done"]
    assert kinds[2:7] == ["job_start", "iteration", "iteration", "iteration", "job_end"]
    assert [e.iteration for e in events if e.kind == "iteration"] == [1, 2, 3, 1, 2, 3]
    assert {(e.index, e.total) for e in events if e.job is not None} == {(1, 2), (2, 2)}


def test_runner_nan_loss_marks_job_failed(tiny, monkeypatch):
    steps = []
    real_step = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    ex = Experiment(tiny)
    ex.ensure_observed()
    bad = ex.observed().clone()
    bad[:, 50] = float("nan")
    res = runner.compute_job(tiny, ex.problem, Job("eager", "gpu", "fp32"), bad)
    assert res.status == "failed" and res.failed_iteration == 1
    assert res.reason == "loss is nan at iteration 1"
    assert np.isnan(res.loss).all() and np.isfinite(res.rmse[0])
    # the loss is read after the backward is queued, but no update follows a non-finite loss
    assert steps == []


def _c_unavailable(monkeypatch):
    real = runner.make_propagator

    def fake(problem, impl, memory=None):
        if impl == "c":
            raise BackendUnavailableError("no C++ compiler found (test)")
        return real(problem, impl, memory)

    monkeypatch.setattr(runner, "make_propagator", fake)


def test_runner_failed_job_does_not_stop_the_sweep(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    _c_unavailable(monkeypatch)
    cfg = load_config(write_tiny(tmp_path, matrix=[{"impl": ["c", "eager"], "storage": "gpu",
                                                    "dtype": "fp32"}]))
    summary = Experiment(cfg).sweep()
    assert not summary.ok and [r.job.label for r in summary.failed] == ["c·gpu·fp32"]
    failed = store.read_job(summary.failed[0].path)
    assert failed.status == "failed" and failed.attrs["failed_iteration"] == 1
    assert failed.attrs["reason"] == "BackendUnavailableError: no C++ compiler found (test)"
    assert store.is_complete(store.job_path(cfg.run_dir, Job("eager", "gpu", "fp32")))


def test_runner_observed_falls_back_to_eager(tiny, monkeypatch):
    monkeypatch.setattr(runner, "OBSERVED_IMPLS", ("c", "eager"))
    _c_unavailable(monkeypatch)
    res = Experiment(tiny).ensure_observed()
    attrs = store.read_attrs(res.path)
    assert res.impl == attrs["impl"] == "eager" and not res.reused
    assert attrs["impl_note"] == "impl c unavailable: no C++ compiler found (test)"


def test_runner_observed_remodelled_only_when_its_inputs_change(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    path = write_tiny(tmp_path)
    first = Experiment(load_config(path)).ensure_observed()
    assert not first.reused
    again = Experiment(load_config(path, ["inversion.lr=3", "model.init=true"])).ensure_observed()
    assert again.reused and again.hash == first.hash
    np.testing.assert_array_equal(store.read_observed(again.path).vp_init,
                                  build_problem(load_config(path)).vp_true)
    changed = Experiment(load_config(path, ["source.freq=4"])).ensure_observed()
    assert not changed.reused and changed.hash != first.hash


def test_runner_sweep_skips_complete_and_redoes_stale_jobs(tiny):
    Experiment(tiny).sweep()
    events = []
    second = Experiment(tiny).sweep(progress=events.append)
    assert second.results == [] and [j.label for j in second.skipped] == ["eager·gpu·fp32", "eager·gpu·int8"]
    path = write_tiny(tiny.run_dir.parent.parent, inversion={"iterations": 2})
    third = Experiment(load_config(path)).sweep(only="*-int8")
    assert [r.job.label for r in third.results] == ["eager·gpu·int8"] and third.skipped == []
    assert store.read_job(third.results[0].path).loss.shape == (2,)


def test_runner_resumes_after_killed_sweep(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    matrix = [{"impl": "eager", "storage": "gpu", "dtype": ["fp32", "fp16", "bf16", "int8"]}]
    path = write_tiny(tmp_path, matrix=matrix, inversion={"iterations": 4})
    ex = Experiment(load_config(path))
    ex.ensure_observed()  # with eager here; the subprocess reuses it
    stores = [store.job_path(ex.run_dir, j) for j in ex.jobs]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fwi_cli", "sweep", str(path), "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not store.is_complete(stores[0]):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "first job never completed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = [s for s in stores if store.is_complete(s)]
    assert 1 <= len(done) < len(stores), "the kill must land mid-sweep"
    stamps = {s: (s / "zarr.json").stat().st_mtime_ns for s in done}

    events = []
    summary = Experiment(load_config(path)).sweep(progress=events.append)
    ran = [e.job.label for e in events if e.kind == "job_start"]
    assert ran == [j.label for j in ex.jobs[len(done):]]
    assert [j.label for j in summary.skipped] == [j.label for j in ex.jobs[: len(done)]]
    assert all(store.is_complete(s) for s in stores)
    assert all((s / "zarr.json").stat().st_mtime_ns == t for s, t in stamps.items())
