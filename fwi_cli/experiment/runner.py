"""Running an experiment: observed data once, then one inversion per matrix job.

One job is the seed page's loop, verbatim in substance::

    solver = Propagator(...impl, memory...)                 # fresh for every job
    vp = tensor(vp_init, requires_grad=True); opt = Adam([vp], lr, eps)
    rng = numpy.random.default_rng(seed)                    # same batches in every job
    rmse[0] = rmse(vp_init)
    for k in 1..iterations:
        idx = rng.choice(nshots, batch_shots, replace=False)
        loss_k = mean((solver(w, src[idx], rec[idx], [vp]) - observed[idx])^2)
        loss_k.backward(); opt.step(); rmse[k] = rmse(vp)

with rmse(v) = sqrt(mean((v - vp_true)^2)) in m/s. A non-finite loss or model stops the job
as ``failed`` with the iteration and reason; so does any :class:`~fwi_cli.errors.FwiError`
the propagator raises (an unavailable backend, a storage failure, a model driven past the
CFL limit by too large a step) and running out of memory (the reason then gives the
estimated need and the advice of :func:`~fwi_cli.propagator.api.out_of_memory_message`).
The failed job's store keeps the iterations done, and the sweep goes on with the next job.
Other exceptions are bugs and propagate. Device memory of a failed job is released
(references dropped, the CUDA cache emptied) before the next job starts.

Writers of a run directory hold its :class:`~fwi_cli.experiment.lock.RunLock`, so a second
sweep on the same directory stops at once with a clear message. Under ``torchrun`` (a
:class:`~fwi_cli.experiment.distributed.DistContext`) every rank computes its share of each
shot batch and rank 0 alone holds the lock, writes the stores and reports progress; the
concurrent sweep (:mod:`~fwi_cli.experiment.parallel`) holds the lock in its parent process
and runs its workers with ``lock=False``. Failing to write a store
(full disk, permissions) raises a :class:`~fwi_cli.errors.StorageError` and stops the sweep:
the partial store is removed and never marked complete.

Progress is reported through a callback receiving :class:`Progress` events; nothing here
prints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import fwi_cli
from fwi_cli.errors import (
    BackendUnavailableError,
    CFLError,
    DeviceMemoryError,
    FwiArgumentError,
    FwiError,
)
from fwi_cli.experiment import store
from fwi_cli.experiment.config import ExperimentConfig
from fwi_cli.experiment.distributed import DistContext, check_batch
from fwi_cli.experiment.lock import RunLock
from fwi_cli.experiment.matrix import Job, expand, select
from fwi_cli.experiment.problem import (
    Problem,
    build_problem,
    job_hash,
    make_propagator,
    memory_options,
    observed_hash,
)
from fwi_cli.propagator.api import is_out_of_memory, out_of_memory_message

OBSERVED_IMPLS = ("c", "eager")  # first that works models the observed data


@dataclass
class Progress:
    """A progress event.

    Attributes:
        kind: "observed_start", "observed_done", "observed_reused", "job_start",
            "iteration", "job_skip" or "job_end".
        job: the job concerned (None for observed events).
        index, total: 1-based position of the job in the sweep, and the number of jobs.
        iteration, iterations: 1-based iteration just finished, and the total.
        loss, rmse: values after that iteration (loss of the batch, RMSE in m/s).
        status: "complete"/"failed" at "job_end"; "complete" at "job_skip".
        message: free text (the observed impl, a failure reason, why a job is skipped).
    """

    kind: str
    job: Job | None = None
    index: int = 0
    total: int = 0
    iteration: int = 0
    iterations: int = 0
    loss: float | None = None
    rmse: float | None = None
    status: str | None = None
    message: str = ""


ProgressFn = Callable[[Progress], None]


def _noop(_: Progress) -> None:
    return None


@dataclass
class ObservedResult:
    """Outcome of :meth:`Experiment.ensure_observed`.

    Attributes:
        path: the observed store.  impl: which impl modelled the data.
        reused: True when an up-to-date store was found and kept.
        hash: hash of the config parts that define the data.
        seconds: modelling time (0 when reused).
    """

    path: Path
    impl: str
    reused: bool
    hash: str
    seconds: float = 0.0


@dataclass
class JobResult:
    """Outcome of one job (what its store holds).

    Attributes:
        job: the job.  status: "complete" or "failed".
        loss: (iterations,) NaN where not reached.  rmse: (iterations + 1,) m/s.
        vp_final: (nz, nx) last model.  iter_time: (iterations,) s.
        shots: (iterations, batch_shots) shot indices of each iteration.
        reason: why it failed (None when complete).  failed_iteration: 1-based, or None.
        timing, memory: the store's ``timing`` and ``memory`` attributes.
        path: the store (None when not written).
    """

    job: Job
    status: str
    loss: np.ndarray
    rmse: np.ndarray
    vp_final: np.ndarray
    iter_time: np.ndarray
    shots: np.ndarray
    reason: str | None = None
    failed_iteration: int | None = None
    timing: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == store.STATUS_COMPLETE


@dataclass
class SweepSummary:
    """Outcome of a sweep: results of the jobs run, and those skipped as already complete."""

    observed: ObservedResult
    results: list[JobResult] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- environment
def versions() -> dict:
    """Versions of fwi and the libraries a result depends on."""
    import zarr

    return {
        "fwi": fwi_cli.__version__, "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "zarr": zarr.__version__,
        "cuda": torch.version.cuda, "platform": platform.platform(),
    }


def device_attrs(device: torch.device) -> dict:
    """``device`` (e.g. "cuda:0"), ``device_name`` and ``threads`` for a store."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return {"device": f"cuda:{idx}", "device_name": torch.cuda.get_device_name(idx),
                "threads": torch.get_num_threads()}
    return {"device": str(device), "device_name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so that an RSS delta
    measures what the next block of work allocates; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMeter:
    """Peak memory of a block of work, above the level when :meth:`start` was called.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus the allocation at start
    (method ``cuda_max_memory_allocated_above_baseline``). CPU: the process resident set
    size sampled every ``interval`` s, minus its value at start after returning free heap pages
    to the OS (``rss_sampled_above_start``; approximate: memory the allocator caches from
    earlier work can be reused unseen); None where /proc is absent.
    """

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.baseline = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method: str | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            self.method = "cuda_max_memory_allocated_above_baseline"
            return
        _release_free_heap()
        rss = _rss_bytes()
        if rss is None:
            return
        self.baseline = self._peak = rss
        self.method = "rss_sampled_above_start"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def stop(self) -> int | None:
        """Stop measuring; returns the peak bytes above the start level (None if unknown)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.baseline)
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        rss = _rss_bytes()
        if rss is not None:
            self._peak = max(self._peak, rss)
        return int(self._peak - self.baseline)


# --------------------------------------------------------------------------- observed
def model_observed(problem: Problem, batch: int) -> tuple[np.ndarray, str, str | None]:
    """Model the observed data of every shot, in fp32, without gradient.

    Uses impl "c" when it works, else "eager" (the compiled backend being unavailable is
    not an error here).

    Args:
        problem: the experiment's problem (true model, acquisition, wavelet).
        batch: shots per propagator call.

    Returns:
        (data, impl, note): data (nshots, nt, nrec) float32; the impl that made it; why
        "c" was not used (None when it was).
    """
    note = None
    vp = torch.tensor(problem.vp_true, device=problem.device)
    nshots = problem.sources.shape[0]
    for impl in OBSERVED_IMPLS:
        try:
            solver = make_propagator(problem, impl)
            parts = []
            with torch.no_grad():
                for s in range(0, nshots, batch):
                    rec = solver(problem.wavelet, problem.sources[s : s + batch],
                                 problem.receivers[s : s + batch], models=[vp])
                    parts.append(rec[..., 0].cpu().numpy())
            return np.concatenate(parts, 0), impl, note
        except (BackendUnavailableError, ImportError) as exc:
            if impl == OBSERVED_IMPLS[-1]:
                raise
            note = f"impl {impl} unavailable: {exc}"
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- one job
def compute_job(
    cfg: ExperimentConfig,
    problem: Problem,
    job: Job,
    observed: torch.Tensor,  # (nshots, nt, nrec, 1) on problem.device
    progress: ProgressFn | None = None,
    index: int = 1,
    total: int = 1,
    dist: DistContext | None = None,
) -> JobResult:
    """Run one inversion (no store written).

    Args:
        cfg: the experiment (inversion settings, memory options, seed).
        problem: models, acquisition, wavelet, device.
        job: impl / storage / dtype of the gradient.
        observed: (nshots, nt, nrec, 1) float32 observed data on the compute device.
        progress: receives "iteration" events.
        index, total: position of the job in its sweep (for the events).
        dist: the process group when started by torchrun: each rank models its share of
            every batch and the loss and gradient are summed over the ranks (see
            :mod:`~fwi_cli.experiment.distributed`); None for one process.

    Returns:
        The :class:`JobResult` (status "failed" with reason on a non-finite loss/model, a
        FwiError of the propagator, or out-of-memory).
    """
    progress = progress or _noop
    inv = cfg.inversion
    n_iter, nshots = inv.iterations, problem.sources.shape[0]
    dev = problem.device
    loss = np.full(n_iter, np.nan)
    rmse = np.full(n_iter + 1, np.nan)
    iter_time = np.full(n_iter, np.nan)
    shots = np.full((n_iter, inv.batch_shots), -1, dtype=np.int64)
    rmse[0] = problem.rmse(problem.vp_init)
    vp_final = problem.vp_init.copy()
    status, reason, failed_it = store.STATUS_COMPLETE, None, None
    report = None
    solver = vp = opt = rec = value = None
    it = 0
    oom: str | None = None

    meter = PeakMeter(dev)
    meter.start()
    t_start = time.perf_counter()
    try:
        solver = make_propagator(problem, job.impl, memory_options(cfg, job))
        vp = torch.tensor(problem.vp_init, device=dev, requires_grad=True)
        opt = torch.optim.Adam([vp], lr=inv.lr, eps=inv.eps)
        rng = np.random.default_rng(cfg.seed)
        for it in range(n_iter):
            t0 = time.perf_counter()
            idx = rng.choice(nshots, inv.batch_shots, replace=False)
            shots[it] = idx
            opt.zero_grad()
            if dist is None:
                # The shot index goes to the device before the forward (a copy from host memory
                # waits for the device), and the loss is read only after the backward is queued:
                # the host runs ahead of the GPU through the whole iteration, with no idle gap
                # between the forward and the backward (docs/internals.md, "Host syncs").
                idx_dev = torch.from_numpy(idx).to(dev)
                rec = solver(problem.wavelet, problem.sources[idx], problem.receivers[idx], models=[vp])
                value = (rec - observed[idx_dev]).pow(2).mean()
                value.backward()
                lval = float(value.detach().cpu())
            else:  # the gradient is already summed over the ranks
                lval = dist.loss_and_grad(solver, problem, vp, idx, observed)
            if not math.isfinite(lval):  # no update from a non-finite loss
                status, failed_it = store.STATUS_FAILED, it + 1
                reason = f"loss is {lval} at iteration {it + 1}"
                break
            opt.step()
            rec = value = None
            if report is None:
                report = copy.deepcopy(solver.memory_report())
            vp_np = vp.detach().cpu().numpy()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            iter_time[it] = time.perf_counter() - t0
            loss[it] = lval
            rmse[it + 1] = problem.rmse(vp_np)
            if not np.all(np.isfinite(vp_np)):
                status, failed_it = store.STATUS_FAILED, it + 1
                reason = f"the model became non-finite at iteration {it + 1}"
                break
            vp_final = vp_np
            progress(Progress("iteration", job, index, total, it + 1, n_iter, lval, float(rmse[it + 1])))
    except FwiError as exc:
        status, failed_it = store.STATUS_FAILED, it + 1
        reason = f"{type(exc).__name__}: {exc}"
        if it > 0 and isinstance(exc, FwiArgumentError):  # the updates made the model unusable
            kind = "raised the velocity past the CFL limit" if isinstance(exc, CFLError) else \
                "made the model invalid"
            reason += (f" (the Adam updates of iterations 1-{it} {kind}: lower inversion.lr "
                       f"= {inv.lr:g})")
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        status, failed_it = store.STATUS_FAILED, it + 1
        oom = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    rec = value = opt = vp = None  # release the failed iteration's tensors before reporting
    if oom is not None:
        prop = solver if solver is not None else make_propagator(problem, job.impl, memory_options(cfg, job))
        obs_bytes = int(observed.element_size() * observed.nelement()) if observed.device == dev else 0
        reason = f"{DeviceMemoryError.__name__}: " + out_of_memory_message(
            prop, inv.batch_shots, int(problem.receivers.shape[1]), oom, extra_bytes=obs_bytes)
        prop = None
    total_s = time.perf_counter() - t_start
    solver = None
    if status != store.STATUS_COMPLETE and dev.type == "cuda":
        torch.cuda.empty_cache()
    peak = meter.stop()

    done = iter_time[np.isfinite(iter_time)]
    timing = {
        "total_s": total_s,
        "iter_s": float(np.median(done)) if done.size else None,
        "iter_s_mean": float(np.mean(done)) if done.size else None,
        "first_iter_s": float(done[0]) if done.size else None,
        "iterations_done": int(done.size),
    }
    memory = _memory_attrs(report, peak, meter, observed)
    return JobResult(job, status, loss, rmse, vp_final, iter_time, shots, reason, failed_it,
                     timing, memory)


def _memory_attrs(report, peak: int | None, meter: PeakMeter, observed: torch.Tensor) -> dict:
    rep = dataclasses.asdict(report) if report is not None else {}
    return {
        "peak_bytes": peak,
        "peak_method": meter.method,
        "baseline_bytes": meter.baseline if meter.method else None,
        "boundary_bytes": rep.get("ring_bytes"),
        "boundary_device_bytes": rep.get("device_ring_bytes"),
        "frame_bytes": rep.get("frame_bytes"),
        "frame_device_bytes": rep.get("device_frame_bytes"),
        "snapshot_bytes": rep.get("snapshot_bytes"),
        "record_bytes": rep.get("record_bytes"),
        "observed_bytes": int(observed.element_size() * observed.nelement()),
        "strategy": rep.get("strategy"),
        "storage": rep.get("storage"),
        "storage_dtype": rep.get("storage_dtype"),
        "extra": rep.get("extra", {}),
    }


# --------------------------------------------------------------------------- experiment
class Experiment:
    """An experiment file made runnable: its problem, jobs and run directory.

    Args:
        cfg: a validated configuration.
        device: overrides the configuration's device.
        dist: the process group when started by torchrun (its device overrides both):
            rank 0 alone locks, writes and reports progress; all ranks compute.
        lock: False when another process holds the run directory's lock for this one
            (the workers of a concurrent sweep).

    Raises:
        ConfigError: anything wrong with the problem (see :func:`build_problem`).
        FwiArgumentError: fewer shots per batch than ranks.
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | None = None,
                 dist: DistContext | None = None, lock: bool = True) -> None:
        self.cfg = cfg
        self.dist = dist
        if dist is not None:
            check_batch(cfg.inversion.batch_shots, dist, cfg.path)
            device = dist.device
        self.problem = build_problem(cfg, device)
        self.jobs = expand(cfg.matrix, cfg.path)
        self.run_dir = cfg.run_dir
        self.obs_hash = observed_hash(cfg, self.problem)
        self._observed: torch.Tensor | None = None
        self.lock = RunLock(self.run_dir) if lock and self.is_writer else contextlib.nullcontext()

    @property
    def is_writer(self) -> bool:
        """True unless this is a rank other than 0 of a distributed run."""
        return self.dist is None or self.dist.is_writer

    def _on_writer(self, fn, *args, **kwargs):
        """``fn(...)`` here, or on rank 0 alone with its result handed to every rank."""
        if self.dist is None:
            return fn(*args, **kwargs)
        return self.dist.on_writer(fn, *args, **kwargs)

    @contextlib.contextmanager
    def _locked(self):
        """Hold the run-directory lock; under torchrun every rank learns whether rank 0 got
        it (so no rank waits in a collective for a rank 0 that stopped)."""
        self._on_writer(lambda: self.lock.__enter__() and None)
        try:
            yield
        finally:
            self.lock.__exit__(None, None, None)

    # ------------------------------------------------------------------ observed
    def ensure_observed(self, progress: ProgressFn | None = None, force: bool = False) -> ObservedResult:
        """Model ``observed.zarr`` unless an up-to-date complete one exists (or ``force``).

        Raises:
            RunLockedError: another process is writing this run directory.
            StorageError: the store cannot be written (it is removed, never left complete).
        """
        with self._locked():
            return self._on_writer(self._ensure_observed, progress, force)

    def _ensure_observed(self, progress: ProgressFn | None, force: bool) -> ObservedResult:
        progress = progress or _noop
        path = store.observed_path(self.run_dir)
        if not force and store.is_complete(path, self.obs_hash):
            store.update_observed_init(path, self.problem.vp_init)
            impl = (store.read_attrs(path) or {}).get("impl", "?")
            progress(Progress("observed_reused", message=f"{path} (impl {impl})"))
            return ObservedResult(path, impl, True, self.obs_hash)
        progress(Progress("observed_start", message=str(path)))
        t0 = time.perf_counter()
        p = self.problem
        data, impl, note = model_observed(p, self.cfg.inversion.batch_shots)
        seconds = time.perf_counter() - t0
        attrs = {
            "impl": impl, "impl_note": note, "hash": self.obs_hash, "dtype": "fp32",
            "dt": p.dt, "nt": p.nt, "dh": p.dh, "shape": list(p.shape),
            "nshots": int(p.sources.shape[0]), "nrec": int(p.receivers.shape[1]),
            "src_z": int(p.sources[0, 1]), "rec_z": int(p.receivers[0, 0, 1]),
            "seconds": seconds, "config": self.cfg.resolved(), "versions": versions(),
            "warnings": list(p.warnings), **device_attrs(p.device),
        }
        store.write_observed(path, data, wavelet=p.wavelet, sources=p.sources,
                             receivers=p.receivers, vp_true=p.vp_true, vp_init=p.vp_init,
                             attrs=attrs)
        self._observed = None
        progress(Progress("observed_done", message=f"{path} (impl {impl}, {seconds:.1f} s)"))
        return ObservedResult(path, impl, False, self.obs_hash, seconds)

    def observed(self) -> torch.Tensor:
        """The observed data as (nshots, nt, nrec, 1) float32 on the compute device."""
        if self._observed is None:
            obs = store.read_observed(store.observed_path(self.run_dir))
            self._observed = torch.from_numpy(obs.data)[..., None].to(self.problem.device)
        return self._observed

    # ------------------------------------------------------------------ jobs
    def job_hash(self, job: Job) -> str:
        return job_hash(self.cfg, job, self.obs_hash)

    def run_job(self, job: Job, progress: ProgressFn | None = None, index: int = 1, total: int = 1) -> JobResult:
        """Run one job and write its store (observed data must exist: see ensure_observed).

        Raises:
            RunLockedError: another process is writing this run directory.
            StorageError: the job's store cannot be written (it is removed).
        """
        with self._locked():
            return self._run_job(job, progress, index, total)

    def _run_job(self, job: Job, progress: ProgressFn | None, index: int, total: int) -> JobResult:
        progress = (progress or _noop) if self.is_writer else _noop
        path = store.job_path(self.run_dir, job)
        observed = self.observed()
        progress(Progress("job_start", job, index, total, 0, self.cfg.inversion.iterations))
        dev = device_attrs(self.problem.device)
        if self.dist is not None:
            dev["distributed"] = self.dist.describe()
        self._on_writer(store.begin_job, path, job, {
            "config": self.cfg.resolved(), "hash": self.job_hash(job),
            "observed_hash": self.obs_hash, **dev})
        res = compute_job(self.cfg, self.problem, job, observed, progress, index, total, self.dist)
        attrs = {
            "config": self.cfg.resolved(), "hash": self.job_hash(job),
            "observed_hash": self.obs_hash,
            "observed_impl": (store.read_attrs(store.observed_path(self.run_dir)) or {}).get("impl"),
            "timing": res.timing, "memory": res.memory, "versions": versions(), **dev,
            "reason": res.reason, "failed_iteration": res.failed_iteration,
            "seed": self.cfg.seed, "command": " ".join(sys.argv),
            "warnings": list(self.problem.warnings),
        }
        self._on_writer(store.finish_job, path, status=res.status, loss=res.loss, rmse=res.rmse,
                        vp_final=res.vp_final, iter_time=res.iter_time, attrs=attrs,
                        shots=res.shots)
        res.path = path
        progress(Progress("job_end", job, index, total, int(np.sum(np.isfinite(res.loss))),
                          self.cfg.inversion.iterations,
                          _last_finite(res.loss), _last_finite(res.rmse), res.status,
                          res.reason or ""))
        return res

    def sweep(self, only: str | None = None, progress: ProgressFn | None = None) -> SweepSummary:
        """Run every job (matching ``only``) in order, skipping those already complete.

        A job counts as complete when its store says ``status: complete`` and was made
        from the same configuration and observed data (else it is redone). Failed jobs do
        not stop the sweep.

        Raises:
            ConfigError: ``only`` matches no job.
            RunLockedError: another process is writing this run directory (nothing is
                written then).
            StorageError: a store cannot be written (the sweep stops; rerun to resume).
        """
        jobs = select(self.jobs, only, self.cfg.path)
        with self._locked():
            return self._sweep(jobs, progress)

    def _sweep(self, jobs: list[Job], progress: ProgressFn | None) -> SweepSummary:
        progress = (progress or _noop) if self.is_writer else _noop
        obs = self.ensure_observed(progress)
        summary = SweepSummary(obs)
        for i, job in enumerate(jobs, 1):
            path = store.job_path(self.run_dir, job)
            if self._on_writer(store.is_complete, path, self.job_hash(job)):  # ranks agree
                summary.skipped.append(job)
                progress(Progress("job_skip", job, i, len(jobs), status=store.STATUS_COMPLETE,
                                  message="already complete"))
                continue
            summary.results.append(self.run_job(job, progress, i, len(jobs)))
        return summary


def _last_finite(a: np.ndarray) -> float | None:
    ok = a[np.isfinite(a)]
    return float(ok[-1]) if ok.size else None
