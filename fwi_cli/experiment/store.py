"""Zarr v3 stores of a run directory: the only module that writes them (DESIGN §6).

Layout of ``<output_dir>/<name>/``::

    observed.zarr                 data (shot, time, receiver) float32 — shared by all jobs
                                  wavelet (time,), src_x (shot,), rec_x (receiver,),
                                  vp_true / vp_init (z, x) float32
                                  attrs: status, impl (which impl modelled it), hash, ...
    <impl>-<storage>-<dtype>.zarr loss (iteration,), rmse (update,) [update 0 = start model],
                                  vp_final (z, x), iter_time (iteration,),
                                  shots (iteration, batch)
                                  attrs: label, impl, storage, dtype, config, status,
                                  timing {total_s, iter_s}, memory {...}, versions, device

Every array carries ``dimension_names`` so ``xarray.open_zarr`` reads the store.

Completion protocol: a store is (re)created from scratch with ``status: "running"``; the
arrays and all other attributes are written next, and ``status`` ("complete" or "failed")
is written last, alone. A store that is missing, unreadable or not ``complete`` is not
done; the next run deletes and rewrites it. So a killed sweep never leaves a half-written
store marked complete. (Zarr writes each file through a temporary name and a rename, so a
file is never seen half-written either.)

Write failures (a full disk, a read-only directory) raise a
:class:`~fwi_cli.errors.StorageError` naming the store and the OS error; the partial store
is removed first, so nothing half-written is left behind and the next run redoes it.
Changing the start model of a complete observed store marks it ``running`` while it works,
so an interrupted change is remodelled rather than trusted.
"""

from __future__ import annotations

import errno
import functools
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fwi_cli.errors import StorageError
from fwi_cli.experiment.matrix import Job

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
OBSERVED = "observed.zarr"


def observed_path(run_dir: str | Path) -> Path:
    """``<run_dir>/observed.zarr``."""
    return Path(run_dir) / OBSERVED


def job_path(run_dir: str | Path, job: Job) -> Path:
    """``<run_dir>/<impl>-<storage>-<dtype>.zarr``."""
    return Path(run_dir) / job.store_name


def _jsonable(x: Any) -> Any:
    """Attributes as strict JSON: NaN/Inf become None, numpy scalars plain numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def read_attrs(path: str | Path) -> dict | None:
    """The group attributes of a store, or None when it is missing or unreadable."""
    p = Path(path)
    if not (p / "zarr.json").is_file():
        return None
    try:
        return dict(zarr.open_group(str(p), mode="r").attrs)
    except Exception:  # a store cut off mid-write reads as "not there"
        return None


def store_status(path: str | Path) -> str | None:
    """``status`` of a store ("running", "complete", "failed"), None if missing/unreadable."""
    attrs = read_attrs(path)
    return None if attrs is None else attrs.get("status")


def is_complete(path: str | Path, expected_hash: str | None = None) -> bool:
    """True when the store says ``status: complete`` (and, if given, its hash matches)."""
    attrs = read_attrs(path)
    if attrs is None or attrs.get("status") != STATUS_COMPLETE:
        return False
    return expected_hash is None or attrs.get("hash") == expected_hash


def _writes(what: str):
    """Decorator of a store writer ``f(path, ...)``: an OSError removes the partial store and
    becomes a StorageError naming ``what``, the store and the OS error."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except StorageError:
                raise
            except OSError as exc:
                code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
                why = f"[{code}] {exc.strerror}" if code and exc.strerror else str(exc)
                shutil.rmtree(path, ignore_errors=True)
                msg = (f"cannot write {what} {path}: {why}; the partial store was removed "
                       "(rerun to redo it); free space there or set output_dir to a "
                       "writable directory")
            raise StorageError(msg)

        return inner

    return wrap


def _fresh_group(path: Path, attrs: dict) -> zarr.Group:
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(path), mode="w")
    g.attrs.update(_jsonable({**attrs, "status": STATUS_RUNNING}))
    return g


def _put(g: zarr.Group, name: str, data: np.ndarray, dims: list[str], chunks=None) -> None:
    data = np.ascontiguousarray(data)
    a = g.create_array(
        name, shape=data.shape, dtype=data.dtype, dimension_names=dims,
        chunks=chunks if chunks is not None else data.shape or "auto",
    )
    a[...] = data


# --------------------------------------------------------------------------- observed
@dataclass
class ObservedStore:
    """Contents of ``observed.zarr``.

    Attributes:
        data: (nshots, nt, nrec) float32 observed record.
        vp_true, vp_init: (nz, nx) float32 models.
        attrs: the store's attributes.
    """

    data: np.ndarray
    vp_true: np.ndarray
    vp_init: np.ndarray
    attrs: dict


@_writes("the observed store")
def write_observed(
    path: str | Path,
    data: np.ndarray,  # (nshots, nt, nrec)
    *,
    wavelet: np.ndarray,  # (nt,)
    sources: np.ndarray,  # (nshots, 2)
    receivers: np.ndarray,  # (nshots, nrec, 2)
    vp_true: np.ndarray,  # (nz, nx)
    vp_init: np.ndarray,  # (nz, nx)
    attrs: dict,
) -> None:
    """Write ``observed.zarr`` from scratch; ``status: complete`` last.

    Args:
        path: the store's directory.
        data: (nshots, nt, nrec) float32 record.
        wavelet, sources, receivers, vp_true, vp_init: the problem that made it.
        attrs: extra attributes (impl, hash, device, versions, ...).
    """
    p = Path(path)
    ns, nt, nr = data.shape
    g = _fresh_group(p, attrs)
    _put(g, "data", data.astype(np.float32, copy=False), ["shot", "time", "receiver"],
         chunks=(1, nt, nr))
    _put(g, "wavelet", np.asarray(wavelet, np.float32), ["time"])
    _put(g, "src_x", np.asarray(sources)[:, 0], ["shot"])
    _put(g, "rec_x", np.asarray(receivers)[0, :, 0], ["receiver"])
    _put(g, "vp_true", np.asarray(vp_true, np.float32), ["z", "x"])
    _put(g, "vp_init", np.asarray(vp_init, np.float32), ["z", "x"])
    g.attrs.update({"status": STATUS_COMPLETE})


@_writes("the observed store")
def update_observed_init(path: str | Path, vp_init: np.ndarray) -> None:
    """Replace ``vp_init`` of a complete observed store (the start model is not part of
    the observed data's hash, so it may change without remodelling). The store reads as
    ``running`` while this works."""
    g = zarr.open_group(str(path), mode="r+")
    old = g["vp_init"]
    if old.shape == vp_init.shape and np.array_equal(old[...], vp_init):
        return
    g.attrs.update({"status": STATUS_RUNNING})
    del g["vp_init"]
    _put(g, "vp_init", np.asarray(vp_init, np.float32), ["z", "x"])
    g.attrs.update({"status": STATUS_COMPLETE})


def read_observed(path: str | Path) -> ObservedStore:
    """Read ``observed.zarr``; raises FileNotFoundError unless it is complete."""
    p = Path(path)
    attrs = read_attrs(p)
    if attrs is None or attrs.get("status") != STATUS_COMPLETE:
        raise FileNotFoundError(f"{p}: no complete observed store (run `fwi model CONFIG`)")
    g = zarr.open_group(str(p), mode="r")
    return ObservedStore(
        data=np.asarray(g["data"][...]), vp_true=np.asarray(g["vp_true"][...]),
        vp_init=np.asarray(g["vp_init"][...]), attrs=attrs,
    )


# --------------------------------------------------------------------------- jobs
@dataclass
class JobRecord:
    """Contents of one job store.

    Attributes:
        job: which impl/storage/dtype.
        status: "complete", "failed" or "running".
        loss: (iterations,) loss per iteration (NaN where not reached).
        rmse: (iterations + 1,) model RMSE, m/s; entry 0 is the starting model.
        vp_final: (nz, nx) final model, m/s.
        iter_time: (iterations,) seconds per iteration.
        shots: (iterations, batch_shots) shot indices of each iteration (-1: not reached).
        attrs: all attributes.
    """

    job: Job
    status: str | None
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rmse: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vp_final: np.ndarray | None = None
    iter_time: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shots: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    attrs: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.job.label


@_writes("the job store")
def begin_job(path: str | Path, job: Job, attrs: dict) -> None:
    """Create a job's store from scratch with ``status: running`` (any old one is deleted)."""
    base = {"label": job.label, "impl": job.impl, "storage": job.storage, "dtype": job.dtype}
    _fresh_group(Path(path), {**base, **attrs})


@_writes("the job store")
def finish_job(
    path: str | Path,
    *,
    status: str,
    loss: np.ndarray,  # (iterations,)
    rmse: np.ndarray,  # (iterations + 1,)
    vp_final: np.ndarray,  # (nz, nx)
    iter_time: np.ndarray,  # (iterations,)
    attrs: dict,
    shots: np.ndarray | None = None,  # (iterations, batch_shots)
) -> None:
    """Write a job's arrays and attributes into the store made by :func:`begin_job`;
    ``status`` ("complete" or "failed") goes last."""
    if status not in (STATUS_COMPLETE, STATUS_FAILED):
        raise ValueError(f"status must be {STATUS_COMPLETE!r} or {STATUS_FAILED!r}, got {status!r}")
    g = zarr.open_group(str(path), mode="r+")
    _put(g, "loss", np.asarray(loss, np.float64), ["iteration"])
    _put(g, "rmse", np.asarray(rmse, np.float64), ["update"])
    _put(g, "vp_final", np.asarray(vp_final, np.float32), ["z", "x"])
    _put(g, "iter_time", np.asarray(iter_time, np.float64), ["iteration"])
    if shots is not None:
        _put(g, "shots", np.asarray(shots, np.int64), ["iteration", "batch"])
    g.attrs.update(_jsonable({k: v for k, v in attrs.items() if k != "status"}))
    g.attrs.update({"status": status})


def read_job(path: str | Path) -> JobRecord:
    """Read a job store (arrays empty if the job never finished writing them).

    Raises:
        FileNotFoundError: the store is missing or unreadable.
    """
    p = Path(path)
    attrs = read_attrs(p)
    if attrs is None:
        raise FileNotFoundError(f"{p}: not a readable job store")
    job = Job(attrs["impl"], attrs["storage"], attrs["dtype"]) if "impl" in attrs \
        else Job.from_name(p.name)
    rec = JobRecord(job=job, status=attrs.get("status"), attrs=attrs)
    g = zarr.open_group(str(p), mode="r")
    keys = set(g.array_keys())
    if {"loss", "rmse", "vp_final"} <= keys:
        rec.loss = np.asarray(g["loss"][...])
        rec.rmse = np.asarray(g["rmse"][...])
        rec.vp_final = np.asarray(g["vp_final"][...])
        if "iter_time" in keys:
            rec.iter_time = np.asarray(g["iter_time"][...])
        if "shots" in keys:
            rec.shots = np.asarray(g["shots"][...])
    return rec


def list_jobs(run_dir: str | Path) -> list[JobRecord]:
    """Every readable job store of a run directory, sorted by file name."""
    out = []
    for p in sorted(Path(run_dir).glob("*.zarr")):
        if p.name == OBSERVED:
            continue
        try:
            out.append(read_job(p))
        except (FileNotFoundError, KeyError, ValueError):
            continue
    return out
