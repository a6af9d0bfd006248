"""Zarr stores: round trips, dimension names, status written last, unreadable = incomplete."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from fwi_cli.experiment import Job, store


def _job_arrays(n_iter=4, shape=(5, 7), seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        loss=rng.random(n_iter), rmse=rng.random(n_iter + 1) * 300,
        vp_final=(1500 + 1000 * rng.random(shape)).astype(np.float32),
        iter_time=rng.random(n_iter), shots=rng.integers(0, 9, (n_iter, 2)),
    )


def _write_job(path, job, status=store.STATUS_COMPLETE, **arrays):
    arrays = arrays or _job_arrays()
    store.begin_job(path, job, {"config": {"name": "t"}, "hash": "h1"})
    attrs = {"timing": {"total_s": 1.5, "iter_s": 0.25}, "memory": {"peak_bytes": 10,
             "boundary_bytes": 4}, "reason": None, "nan_attr": float("nan")}
    store.finish_job(path, status=status, attrs=attrs, **arrays)
    return arrays


def test_store_job_round_trip(tmp_path):
    job = Job("c", "gpu", "int8")
    path = store.job_path(tmp_path, job)
    assert path.name == "c-gpu-int8.zarr"
    arrays = _write_job(path, job)
    rec = store.read_job(path)
    assert rec.job == job and rec.status == "complete" and rec.label == "c·gpu·int8"
    for key in ("loss", "rmse", "vp_final", "iter_time", "shots"):
        np.testing.assert_array_equal(getattr(rec, key), arrays[key])
    a = rec.attrs
    assert (a["label"], a["impl"], a["storage"], a["dtype"]) == ("c·gpu·int8", "c", "gpu", "int8")
    assert a["timing"] == {"total_s": 1.5, "iter_s": 0.25} and a["memory"]["boundary_bytes"] == 4
    assert a["config"] == {"name": "t"} and a["nan_attr"] is None
    assert store.is_complete(path) and store.is_complete(path, "h1") and not store.is_complete(path, "h2")


def test_store_arrays_carry_dimension_names(tmp_path):
    path = tmp_path / "j.zarr"
    _write_job(path, Job("eager", "gpu", "fp16"))
    g = zarr.open_group(str(path), mode="r")
    dims = {k: g[k].metadata.dimension_names for k in g.array_keys()}
    assert dims == {"loss": ("iteration",), "rmse": ("update",), "vp_final": ("z", "x"),
                    "iter_time": ("iteration",), "shots": ("iteration", "batch")}


def test_store_observed_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((3, 11, 5)).astype(np.float32)
    src = np.stack([np.array([1, 4, 7]), np.full(3, 2)], 1)
    rec = np.repeat(np.stack([np.arange(5), np.full(5, 4)], 1)[None], 3, 0)
    vp = np.full((4, 9), 2000.0, np.float32)
    path = store.observed_path(tmp_path)
    store.write_observed(path, data, wavelet=np.ones(11), sources=src, receivers=rec,
                         vp_true=vp, vp_init=vp * 0.9, attrs={"impl": "eager", "hash": "abc"})
    obs = store.read_observed(path)
    np.testing.assert_array_equal(obs.data, data)
    np.testing.assert_array_equal(obs.vp_init, vp * 0.9)
    assert obs.attrs["impl"] == "eager" and obs.attrs["status"] == "complete"
    assert store.is_complete(path, "abc") and not store.is_complete(path, "abd")
    g = zarr.open_group(str(path), mode="r")
    assert g["data"].metadata.dimension_names == ("shot", "time", "receiver")
    np.testing.assert_array_equal(g["src_x"][...], [1, 4, 7])
    store.update_observed_init(path, vp * 0.5)
    np.testing.assert_array_equal(store.read_observed(path).vp_init, vp * 0.5)


def test_store_begun_job_is_running_not_complete(tmp_path):
    path = tmp_path / "j.zarr"
    store.begin_job(path, Job("c", "cpu", "bf16"), {"hash": "h"})
    assert store.store_status(path) == "running" and not store.is_complete(path)
    assert store.read_job(path).loss.size == 0


def test_store_crash_before_status_leaves_store_incomplete(tmp_path, monkeypatch):
    path = tmp_path / "j.zarr"
    job = Job("c", "disk", "int8")
    real_put = store._put

    def crash_on_vp(g, name, *a, **k):
        if name == "vp_final":
            raise KeyboardInterrupt  # the process is stopped mid-write
        return real_put(g, name, *a, **k)

    monkeypatch.setattr(store, "_put", crash_on_vp)
    with pytest.raises(KeyboardInterrupt):
        _write_job(path, job)
    assert store.store_status(path) == "running" and not store.is_complete(path)
    monkeypatch.setattr(store, "_put", real_put)
    _write_job(path, job)  # rewritten from scratch
    assert store.is_complete(path)


def test_store_truncated_metadata_reads_as_missing(tmp_path):
    path = tmp_path / "j.zarr"
    _write_job(path, Job("c", "gpu", "fp32"))
    meta = path / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    assert store.read_attrs(path) is None and not store.is_complete(path)
    assert store.list_jobs(tmp_path) == []
    with pytest.raises(json.JSONDecodeError):
        json.loads(meta.read_text())


def test_store_failed_status_and_bad_status(tmp_path):
    path = tmp_path / "j.zarr"
    _write_job(path, Job("c", "gpu", "fp32"), status=store.STATUS_FAILED)
    assert store.store_status(path) == "failed" and not store.is_complete(path)
    with pytest.raises(ValueError, match="status must be"):
        store.finish_job(path, status="done", attrs={}, **_job_arrays())


def test_store_list_jobs_skips_observed_and_sorts(tmp_path):
    for job in (Job("eager", "gpu", "fp32"), Job("c", "gpu", "fp32")):
        _write_job(store.job_path(tmp_path, job), job)
    (tmp_path / "observed.zarr").mkdir()
    assert [r.job.dirname for r in store.list_jobs(tmp_path)] == ["c-gpu-fp32", "eager-gpu-fp32"]
