"""Faults inside a sweep: NaN/Inf and runaway models, storage faults, out of memory.

Each fault must cost one job (marked ``failed`` with the iteration and a clear reason; the
sweep goes on), or stop the sweep with one clear line, and never leave a store marked
complete that is not whole, nor temporary files, nor references to the failed job's memory.
"""

from __future__ import annotations

import errno
import gc
import os
import weakref

import numpy as np
import pytest
import torch
from _experiment_tiny import eager_observed_only, write_tiny

from fwi_cli.cli import main
from fwi_cli.equations import Acoustic
from fwi_cli.errors import DeviceMemoryError, FwiWarning
from fwi_cli.experiment import Experiment, Job, load_config, runner, store
from fwi_cli.propagator import BoundaryOptions, MemoryOptions, Propagator, eager_boundary
from fwi_cli.storage import disk as disk_module

BOUNDARY = {"strategy": "boundary", "transfer_interval": 4, "pinned_memory": False}


def assert_whole(run_dir) -> int:
    """Every store marked complete in ``run_dir`` has every array, of the right shape, and
    readable to the last byte. Returns how many complete job stores were checked."""
    import zarr

    obs_path = store.observed_path(run_dir)
    shape = None
    if store.is_complete(obs_path):
        attrs = store.read_attrs(obs_path)
        g = zarr.open_group(str(obs_path), mode="r")
        assert set(g.array_keys()) == {"data", "wavelet", "src_x", "rec_x", "vp_true", "vp_init"}
        nshots, nt, nrec = attrs["nshots"], attrs["nt"], attrs["nrec"]
        shape = tuple(attrs["shape"])
        want = {"data": (nshots, nt, nrec), "wavelet": (nt,), "src_x": (nshots,),
                "rec_x": (nrec,), "vp_true": shape, "vp_init": shape}
        for k, s in want.items():
            a = np.asarray(g[k][...])
            assert a.shape == s, (k, a.shape, s)
            assert np.all(np.isfinite(a)), k
    n = 0
    for rec in store.list_jobs(run_dir):
        if rec.status != "complete":
            continue
        n_iter = rec.attrs["config"]["inversion"]["iterations"]
        batch = rec.attrs["config"]["inversion"]["batch_shots"]
        g = zarr.open_group(str(store.job_path(run_dir, rec.job)), mode="r")
        want = {"loss": (n_iter,), "rmse": (n_iter + 1,), "iter_time": (n_iter,),
                "shots": (n_iter, batch)}
        for k, s in want.items():
            a = np.asarray(g[k][...])
            assert a.shape == s and np.all(np.isfinite(a)), k
        vp = np.asarray(g["vp_final"][...])
        assert np.all(np.isfinite(vp)) and (shape is None or vp.shape == shape)
        n += 1
    return n


# --------------------------------------------------------------------------- numerics
class _Poisoned:
    """Wraps a Propagator; multiplies the record of call number ``bad_call`` by ``value``."""

    def __init__(self, solver, bad_call: int, value: float) -> None:
        self.solver, self.bad_call, self.value, self.calls = solver, bad_call, value, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        rec = self.solver(*args, **kwargs)
        return rec * self.value if self.calls == self.bad_call else rec

    def __getattr__(self, name):  # geometry, memory, ... of the real propagator
        return getattr(self.solver, name)


@pytest.mark.parametrize("value, word", [(float("nan"), "nan"), (1e30, "inf")])
def test_runner_non_finite_mid_inversion_fails_job_at_that_iteration_and_sweep_goes_on(
        tmp_path, monkeypatch, value, word):
    eager_observed_only(monkeypatch)
    real = runner.make_propagator

    def poisoned(problem, impl, memory=None):
        solver = real(problem, impl, memory)
        if memory is None:  # the observed data
            return solver
        made.append(solver)
        return _Poisoned(solver, 2, value) if len(made) == 1 else solver

    made: list = []
    monkeypatch.setattr(runner, "make_propagator", poisoned)
    cfg = load_config(write_tiny(tmp_path))
    summary = Experiment(cfg).sweep()
    assert [r.job.label for r in summary.failed] == ["eager·gpu·fp32"]
    failed = store.read_job(summary.failed[0].path)
    assert failed.status == "failed" and failed.attrs["failed_iteration"] == 2
    assert failed.attrs["reason"] == f"loss is {word} at iteration 2"
    assert np.isfinite(failed.loss[0]) and np.isnan(failed.loss[1:]).all()
    assert np.isfinite(failed.rmse[:2]).all() and np.isnan(failed.rmse[2:]).all()
    assert np.all(np.isfinite(failed.vp_final))  # the model after iteration 1 is kept
    assert summary.results[1].ok and assert_whole(cfg.run_dir) == 1


def test_runner_runaway_model_fails_job_with_lr_advice(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    cfg = load_config(write_tiny(tmp_path, inversion={"lr": 1.0e5}))
    res = Experiment(cfg).sweep().results[0]
    assert res.status == "failed" and res.failed_iteration == 2
    assert res.reason.startswith(("CFLError: ", "FwiArgumentError: velocity must be positive"))
    assert "the Adam updates of iterations 1-1" in res.reason and "lower inversion.lr = 100000" in res.reason
    assert np.isfinite(res.loss[0]) and np.isnan(res.loss[1])


def test_propagator_warns_once_about_points_per_wavelength():
    prop = Propagator(Acoustic(device="cpu", spatial_order=2), shape=(10, 12), dh=50.0, dt=0.004,
                      nt=60, pml_width=4, impl="eager", memory=MemoryOptions(strategy="full"))
    t = np.arange(60, dtype=np.float32) * 0.004
    from fwi_cli.signal import ricker

    w = ricker(t - 0.2, f=5.0)
    src, rec = np.array([[5, 1]]), np.array([[[2, 2], [8, 2]]])
    vp = torch.full((10, 12), 1500.0)
    with pytest.warns(FwiWarning, match=r"\d\.\d\d grid points per wavelength .* below 10, the minimum for spatial_order 2"):
        prop(w, src, rec, models=[vp])
    with torch.no_grad():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", FwiWarning)
            prop(w, src, rec, models=[vp])  # the second call is silent


def test_cli_shows_dispersion_warning_once_when_modelling(capsys, tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    path = write_tiny(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["model", str(path), "--quiet"])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fwi: warning: ")
    assert "grid points per wavelength (vmin 1500 m/s" in lines[0] and "Traceback" not in err
    attrs = store.read_attrs(store.observed_path(tmp_path / "runs" / "tiny"))
    assert len(attrs["warnings"]) == 1 and "grid points per wavelength" in attrs["warnings"][0]
    with pytest.raises(SystemExit):
        main(["model", str(path), "--quiet"])  # reused: not repeated
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- storage faults
def _disk_config(tmp_path, disk_dir, storages=("disk", "gpu"), **changes):
    memory = {**BOUNDARY, "disk_dir": str(disk_dir)}
    matrix = [{"impl": "eager", "storage": list(storages), "dtype": "fp32"}]
    return load_config(write_tiny(tmp_path, memory=memory, matrix=matrix, **changes))


def _track_ring_stores(monkeypatch) -> list:
    refs: list = []
    real = eager_boundary.make_ring_store

    def tracked(*args, **kwargs):
        s = real(*args, **kwargs)
        refs.append(weakref.ref(s))
        return s

    monkeypatch.setattr(eager_boundary, "make_ring_store", tracked)
    return refs


def test_runner_disk_tier_in_unusable_directory_fails_job_and_sweep_goes_on(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the ring directory should be")
    cfg = _disk_config(tmp_path, blocker / "rings")
    summary = Experiment(cfg).sweep()
    disk_job, gpu_job = summary.results
    assert disk_job.status == "failed" and disk_job.failed_iteration == 1
    assert disk_job.reason.startswith("StorageError: disk tier: cannot create a directory in disk_dir")
    assert str(blocker / "rings") in disk_job.reason and "writable directory" in disk_job.reason
    assert gpu_job.ok and assert_whole(cfg.run_dir) == 1


@pytest.mark.parametrize("code, name", [(errno.ENOSPC, "ENOSPC"), (errno.EIO, "EIO")])
def test_runner_disk_full_mid_gradient_fails_job_removes_files_and_frees_memory(
        tmp_path, monkeypatch, code, name):
    eager_observed_only(monkeypatch)
    rings = tmp_path / "rings"
    calls = {"n": 0}
    real_write = disk_module._write_at

    def fills_up(fd, buf, offset):
        calls["n"] += 1
        if calls["n"] > 3:  # the disk fills up a few blocks into the first forward pass
            raise OSError(code, os.strerror(code))
        real_write(fd, buf, offset)

    monkeypatch.setattr(disk_module, "_write_at", fills_up)
    monkeypatch.setattr(disk_module, "IO_STEPS", 1)  # blocks written one by one, as they fill
    refs = _track_ring_stores(monkeypatch)
    cfg = _disk_config(tmp_path, rings)
    summary = Experiment(cfg).sweep()
    disk_job, gpu_job = summary.results
    assert disk_job.status == "failed" and disk_job.failed_iteration == 1
    assert "StorageError: disk tier: writing the boundary ring failed" in disk_job.reason
    assert f"[{name}]" in disk_job.reason and str(rings) in disk_job.reason
    assert list(rings.iterdir()) == []  # temporary files removed
    gc.collect()
    assert refs and all(r() is None for r in refs)  # no store (and its buffers) kept alive
    assert gpu_job.ok and assert_whole(cfg.run_dir) == 1
    rec = store.read_job(disk_job.path)
    assert rec.status == "failed" and rec.attrs["reason"] == disk_job.reason


def test_runner_files_deleted_under_running_gradient_fail_job_cleanly(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    rings = tmp_path / "rings"
    real_end = disk_module.DiskRingStore._end_forward

    def end_then_clean(self):
        real_end(self)
        for f in self.directory.iterdir():  # a tmp cleaner strikes between the passes
            f.unlink()

    monkeypatch.setattr(disk_module.DiskRingStore, "_end_forward", end_then_clean)
    refs = _track_ring_stores(monkeypatch)
    cfg = _disk_config(tmp_path, rings, inversion={"iterations": 2})
    disk_job, gpu_job = Experiment(cfg).sweep().results
    assert disk_job.status == "failed" and disk_job.failed_iteration == 1
    assert "StorageError: disk tier: a boundary file is missing" in disk_job.reason
    assert list(rings.iterdir()) == []
    gc.collect()
    assert refs and all(r() is None for r in refs)
    assert gpu_job.ok


def test_runner_result_store_write_failure_stops_sweep_and_leaves_nothing_partial(
        tmp_path, monkeypatch, capsys):
    eager_observed_only(monkeypatch)
    path = write_tiny(tmp_path)
    real_put = store._put

    def no_space_for_vp(g, name, *a, **k):
        if name == "vp_final":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_put(g, name, *a, **k)

    monkeypatch.setattr(store, "_put", no_space_for_vp)
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), "--quiet"])
    _, err = capsys.readouterr()
    run_dir = tmp_path / "runs" / "tiny"
    first = store.job_path(run_dir, Job("eager", "gpu", "fp32"))
    assert e.value.code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"fwi: error: cannot write the job store {first}: [ENOSPC]")
    assert "partial store was removed" in line
    assert not first.exists() and store.list_jobs(run_dir) == []
    monkeypatch.setattr(store, "_put", real_put)
    summary = Experiment(load_config(path)).sweep()  # space freed: the rerun does it all
    assert summary.ok and len(summary.results) == 2 and assert_whole(run_dir) == 2


def test_store_observed_start_model_update_is_never_half_done(tmp_path, monkeypatch):
    path = store.observed_path(tmp_path)
    vp = np.full((4, 6), 2000.0, np.float32)
    src = np.array([[1, 1], [3, 1]])
    recv = np.repeat(np.array([[[0, 2], [5, 2]]]), 2, 0)
    store.write_observed(path, np.zeros((2, 5, 2), np.float32), wavelet=np.ones(5), sources=src,
                         receivers=recv, vp_true=vp, vp_init=vp, attrs={"hash": "h"})
    real_put = store._put

    def interrupted(g, name, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_put", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.update_observed_init(path, vp * 0.9)
    assert not store.is_complete(path)  # remodelled by the next run, never read half-done
    monkeypatch.setattr(store, "_put", real_put)


# --------------------------------------------------------------------------- out of memory
def _oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (test)")


def test_propagator_out_of_memory_gives_estimate_and_advice(monkeypatch):
    monkeypatch.setattr(eager_boundary, "run", _oom)
    mem = MemoryOptions(strategy="boundary", boundary=BoundaryOptions(storage="gpu", storage_dtype="fp32"))
    prop = Propagator(Acoustic(device="cpu", spatial_order=4), shape=(30, 50), dh=10.0, dt=0.001,
                      nt=100, pml_width=10, impl="eager", memory=mem)
    vp = torch.full((30, 50), 2000.0, requires_grad=True)
    src = np.array([[10, 1], [20, 1], [30, 1]])
    rec = np.repeat(np.array([[[x, 2] for x in range(0, 50, 5)]]), 3, 0)
    with pytest.raises(DeviceMemoryError) as e:
        prop(np.ones(100, np.float32), src, rec, models=[vp])
    msg = str(e.value)
    assert isinstance(e.value, MemoryError) and e.value.__context__ is None  # no raw traceback
    assert msg.startswith("out of memory on cpu (CUDA out of memory. Tried to allocate 20.00 GiB (test)): "
                          "3 shot(s) of a 50 x 70 padded grid, nt = 100, need about ")
    for advice in ("a smaller batch (about ", "storage 'cpu' or 'disk'", "storage dtype 'int8' (ring "):
        assert advice in msg, advice
    # the estimate is the documented sum: state fields, the gpu-tier ring, records
    from fwi_cli.propagator.api import STATE_FIELDS, memory_estimate
    from fwi_cli.storage import ring_nbytes

    est = memory_estimate(prop, 3, 10)
    assert est["state"] == 4 * STATE_FIELDS * 50 * 70 * 3 * 2
    assert est["saved"] == ring_nbytes(100, 3, prop.geometry.ring_cells, "fp32") + 2 * 4 * 3 * 30 * 50
    assert est["record"] == 4 * 3 * 100 * 10 * 3
    assert est["total"] == est["state"] + est["saved"] + est["record"]


def test_runner_out_of_memory_in_backward_fails_job_with_estimate_and_sweep_goes_on(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)

    class OomBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (test)")

    real = runner.make_propagator
    made: list = []

    class OomSolver(_Poisoned):
        def __call__(self, *args, **kwargs):
            return OomBackward.apply(self.solver(*args, **kwargs))

    def failing_first(problem, impl, memory=None):
        solver = real(problem, impl, memory)
        if memory is None:  # the observed data
            return solver
        made.append(solver)
        return OomSolver(solver, 0, 1.0) if len(made) == 1 else solver

    monkeypatch.setattr(runner, "make_propagator", failing_first)
    cfg = load_config(write_tiny(tmp_path))
    summary = Experiment(cfg).sweep()
    bad, good = summary.results
    assert bad.status == "failed" and bad.failed_iteration == 1
    assert bad.reason.startswith("DeviceMemoryError: out of memory on cpu (CUDA out of memory. "
                                 "Tried to allocate 8.00 GiB (test)): 2 shot(s) of a 40 x 60 padded grid")
    assert "need about" in bad.reason and "other " in bad.reason  # observed data counted
    assert "strategy 'boundary'" in bad.reason  # the tiny config keeps every frame
    assert good.ok


def test_cli_invert_out_of_memory_is_one_clear_line(tmp_path, monkeypatch, capsys):
    eager_observed_only(monkeypatch)
    path = write_tiny(tmp_path, memory=BOUNDARY)
    with pytest.raises(SystemExit):
        main(["model", str(path), "--quiet"])
    capsys.readouterr()
    monkeypatch.setattr(eager_boundary, "run", _oom)
    with pytest.raises(SystemExit) as e:
        main(["invert", str(path), "--impl", "eager", "--storage", "gpu", "--dtype", "fp16", "--quiet"])
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == "" and "Traceback" not in err
    assert "FAILED at iteration 1: DeviceMemoryError: out of memory on cpu" in err
    for advice in ("a smaller batch", "storage 'cpu' or 'disk'", "storage dtype 'int8'"):
        assert advice in err
    rec = store.read_job(store.job_path(tmp_path / "runs" / "tiny", Job("eager", "gpu", "fp16")))
    assert rec.status == "failed" and "need about" in rec.attrs["reason"]

