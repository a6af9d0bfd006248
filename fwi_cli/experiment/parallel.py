"""Concurrent sweep: independent matrix jobs in worker processes, one per device.

``fwi sweep CONFIG --gpus 0,1,2,3`` starts one worker process per listed GPU (worker w
computes on ``cuda:<gpus[w]>``); ``--workers N`` starts N CPU workers, each with
``threads // N`` torch threads (tests, CI, many-core hosts). Each worker runs whole jobs,
one at a time, through the same :meth:`Experiment.run_job
<fwi_cli.experiment.runner.Experiment.run_job>` as the sequential sweep, so a job's store
is the one the sequential sweep writes (same hash, same completion protocol).

Protocol (the parent process never touches a GPU):

1. The parent takes the run directory's :class:`~fwi_cli.experiment.lock.RunLock` and keeps
   it until every worker has stopped; workers run with ``lock=False`` (they write only
   the stores the parent hands them, never the same one twice), so a second sweep on the
   directory still stops at once.
2. An up-to-date observed store is reused by the parent; otherwise the first worker models
   it and the jobs wait for it.
3. Jobs already complete (same hash) are skipped, as in the sequential sweep; the others
   are handed out to whichever worker is free, longest first (:func:`relative_cost`), so
   that the slow eager jobs do not all start last and leave the other workers idle at the
   end (longest-processing-time-first scheduling; ties keep matrix order).
4. A failed job does not stop the sweep. A :class:`~fwi_cli.errors.FwiError` outside a job
   (a store that cannot be written) stops handing out jobs; the jobs running finish, then
   it is raised. A worker that dies (killed, out of host memory) raises
   :class:`WorkerError` once the others have finished: its store is left not complete and
   the next sweep redoes it. Ctrl-C / SIGTERM stop the workers (they unwind like the
   sequential sweep, so disk-tier files are removed) before the parent re-raises.

Progress events of the workers (tagged with the job's position in the sweep) reach the
parent's callback in the order they arrive.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass

import torch

from fwi_cli.errors import FwiArgumentError, FwiError, FwiWarning
from fwi_cli.experiment import store
from fwi_cli.experiment.matrix import Job, select
from fwi_cli.experiment.runner import Experiment, JobResult, Progress, ProgressFn, SweepSummary

# Seconds per iteration of each impl / storage relative to c·gpu, measured on the seed
# problem (H200, docs/benchmarks.md): eager ≈ 3.1×, host tiers ≈ 1.1–1.4×. Only the order
# matters: it decides which jobs a concurrent sweep starts first.
IMPL_COST = {"c": 1.0, "eager": 3.0}
STORAGE_COST = {"gpu": 1.0, "cpu": 1.15, "disk": 1.3}

POLL_S = 0.2  # how often the parent checks that its workers are alive
STOP_GRACE_S = 30.0  # how long stopped workers get to unwind before they are killed


class WorkerError(FwiError, RuntimeError):
    """A worker process of a concurrent sweep died or hit a bug; the message says which."""


def relative_cost(job: Job) -> float:
    """A job's expected run time relative to a c·gpu job (orders the hand-out)."""
    return IMPL_COST.get(job.impl, 1.0) * STORAGE_COST.get(job.storage, 1.0)


def handout_order(jobs: list[Job]) -> list[Job]:
    """``jobs`` in the order a concurrent sweep starts them: longest first, ties in order."""
    return sorted(jobs, key=lambda job: -relative_cost(job))  # sorted() is stable


def worker_devices(gpus: str | None, workers: int | None) -> list[str] | None:
    """The devices of a concurrent sweep's workers, from ``--gpus`` / ``--workers``.

    Args:
        gpus: comma-separated CUDA indices, e.g. "0,1,2,3" (one worker each), or "all"
            (every visible GPU).
        workers: number of CPU workers.

    Returns:
        e.g. ["cuda:0", "cuda:1"] or ["cpu", "cpu"]; None when neither is given (the
        sequential sweep).

    Raises:
        FwiArgumentError: both given, a malformed or repeated index, a GPU that does not
            exist, or fewer than one worker.
    """
    if gpus is not None and workers is not None:
        raise FwiArgumentError("give --gpus or --workers, not both (--gpus runs one worker per "
                               "listed GPU, --workers N runs N CPU workers)")
    if workers is not None:
        if workers < 1:
            raise FwiArgumentError(f"--workers must be at least 1 (got {workers})")
        return ["cpu"] * workers
    if gpus is None:
        return None
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus.strip().lower() == "all":
        if have == 0:
            raise FwiArgumentError("--gpus all: no CUDA GPU is visible here; use --workers N "
                                   "for CPU workers")
        return [f"cuda:{i}" for i in range(have)]
    try:
        ids = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise FwiArgumentError(f"--gpus takes comma-separated GPU indices such as 0,1,2,3, "
                               f"or all (got {gpus!r})") from None
    if not ids:
        raise FwiArgumentError("--gpus needs at least one GPU index, e.g. --gpus 0,1")
    if len(set(ids)) != len(ids):
        raise FwiArgumentError(f"--gpus lists a GPU twice ({gpus}); list each GPU once")
    bad = [i for i in ids if not 0 <= i < have]
    if bad:
        raise FwiArgumentError(f"--gpus {gpus}: GPU {bad[0]} does not exist ({have} CUDA "
                               "device(s) here); use --workers N for CPU workers")
    return [f"cuda:{i}" for i in ids]


@dataclass
class _Worker:
    wid: int
    device: str
    proc: mp.process.BaseProcess
    tasks: mp.queues.Queue
    task: tuple | None = None  # running: ("observed",) or ("job", index, total, job)


def sweep(ex: Experiment, devices: list[str], only: str | None = None,
          progress: ProgressFn | None = None) -> SweepSummary:
    """Run every job (matching ``only``) in worker processes, skipping complete ones.

    Args:
        ex: the experiment (built in this process; its device is not used here).
        devices: one entry per worker ("cuda:N" or "cpu"), see :func:`worker_devices`.
        only: glob(s) selecting jobs, as for :meth:`Experiment.sweep`.
        progress: receives the workers' events.

    Returns:
        The :class:`SweepSummary`, results in matrix order.

    Raises:
        FwiArgumentError: no devices, or ``ex`` belongs to a torchrun process group.
        ConfigError: ``only`` matches no job.
        RunLockedError: another process is writing the run directory.
        StorageError: a store could not be written (raised once the running jobs end).
        WorkerError: a worker died or hit a bug.
    """
    if not devices:
        raise FwiArgumentError("a concurrent sweep needs at least one worker device")
    if ex.dist is not None:
        raise FwiArgumentError("--gpus/--workers run independent jobs; they cannot be combined "
                               "with torchrun (which splits each job's shots over ranks)")
    progress = progress or (lambda _ev: None)
    jobs = select(ex.jobs, only, ex.cfg.path)
    with ex.lock:
        return _Pool(ex, devices, progress).run(jobs)


class _Pool:
    """The parent's side: starts workers, hands out tasks, relays events."""

    def __init__(self, ex: Experiment, devices: list[str], progress: ProgressFn) -> None:
        self.ex, self.devices, self.progress = ex, devices, progress
        self.ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        self.events = self.ctx.Queue()
        self.workers: list[_Worker] = []
        self.threads = max(1, torch.get_num_threads() // len(devices))
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ workers
    def _start(self, wid: int) -> _Worker:
        tasks = self.ctx.Queue()
        proc = self.ctx.Process(
            target=_worker_main, name=f"fwi-worker-{wid}", daemon=True,
            args=(wid, self.ex.cfg, self.devices[wid], self.threads, tasks, self.events),
        )
        proc.start()
        w = _Worker(wid, self.devices[wid], proc, tasks)
        self.workers.append(w)
        return w

    def _send(self, w: _Worker, task: tuple) -> None:
        w.task = task
        w.tasks.put(task)

    def _stop_all(self, graceful: bool) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                if graceful:
                    w.tasks.put(None)
                else:
                    w.proc.terminate()  # SIGTERM: the worker unwinds (see _worker_main)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(w.proc.is_alive() for w in self.workers) and time.monotonic() < deadline:
            try:  # keep the pipe empty: a worker exits only once its messages are sent
                self.events.get(timeout=0.05)
            except queue.Empty:
                pass
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join()
        self.events.close()

    # ------------------------------------------------------------------ main loop
    def run(self, jobs: list[Job]) -> SweepSummary:
        ex, total = self.ex, len(jobs)
        graceful = False
        try:
            obs_done = store.is_complete(store.observed_path(ex.run_dir), ex.obs_hash)
            observed = ex.ensure_observed(self.progress) if obs_done else None
            todo: deque = deque()
            skipped: list[Job] = []
            for i, job in enumerate(jobs, 1):
                if store.is_complete(store.job_path(ex.run_dir, job), ex.job_hash(job)):
                    skipped.append(job)
                    self.progress(Progress("job_skip", job, i, total, status=store.STATUS_COMPLETE,
                                           message="already complete"))
                else:
                    todo.append(("job", i, total, job))
            order = {id(job): k for k, job in enumerate(handout_order([t[3] for t in todo]))}
            todo = deque(sorted(todo, key=lambda task: order[id(task[3])]))
            results: dict[int, JobResult] = {}
            n_workers = min(len(self.devices), max(len(todo), 0 if obs_done else 1))
            for wid in range(n_workers):
                self._start(wid)
            if observed is None:
                self._send(self.workers[0], ("observed",))
            while True:
                if observed is not None and self.error is None:  # hand out jobs to idle workers
                    for idle in self.workers:
                        if todo and idle.task is None and idle.proc.is_alive():
                            self._send(idle, todo.popleft())
                if all(w.task is None for w in self.workers):
                    break
                msg = self._next_event()
                if msg is None:
                    continue
                kind, wid, payload = msg
                w = self.workers[wid]
                if kind == "progress":
                    self.progress(payload)
                    continue
                task, w.task = w.task, None
                if kind == "observed":
                    observed = payload
                elif kind == "result":
                    results[task[1]] = payload
                elif kind == "error":  # hand out nothing more; let the running jobs end
                    self.error = self.error or payload
            graceful = True
        finally:
            self._stop_all(graceful)
        if self.error is not None:
            raise self.error
        return SweepSummary(observed, [results[i] for i in sorted(results)], skipped)

    def _next_event(self) -> tuple | None:
        """The next worker message, or None after a poll in which a busy worker died."""
        try:
            return self.events.get(timeout=POLL_S)
        except queue.Empty:
            pass
        for w in self.workers:
            if w.task is not None and not w.proc.is_alive():
                what = "modelling the observed data" if w.task[0] == "observed" else \
                    f"running job {w.task[3].label}"
                self.error = self.error or WorkerError(
                    f"worker {w.wid} ({w.device}) died with exit code {w.proc.exitcode} while "
                    f"{what}; its store is left not complete: rerun `fwi sweep` to redo it")
                w.task = None
        return None


# --------------------------------------------------------------------------- worker side
class _Stop(KeyboardInterrupt):
    """SIGTERM in a worker: unwind like Ctrl-C so that ``finally`` blocks clean up."""


def _on_sigterm(signum, frame) -> None:
    raise _Stop()


def _worker_main(wid: int, cfg, device: str, threads: int, tasks, events) -> None:
    """A worker process: build the experiment on ``device``, then run tasks until None."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    warnings.simplefilter("ignore", FwiWarning)  # the parent reports the problem's warnings
    torch.set_num_threads(threads)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never enable NVLink multicast

    def relay(ev: Progress) -> None:
        events.put(("progress", wid, ev))

    try:
        _die_with_parent()
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        ex = Experiment(cfg, device=dev, lock=False)
        while True:
            task = tasks.get()
            if task is None:
                return
            try:
                if task[0] == "observed":
                    events.put(("observed", wid, ex.ensure_observed(relay)))
                else:
                    _, index, total, job = task
                    res = ex.run_job(job, relay, index, total)
                    events.put(("result", wid, res))
            except FwiError as exc:
                events.put(("error", wid, _portable(exc)))
    except KeyboardInterrupt:
        return  # stopped by the parent (or Ctrl-C): nothing to report
    except FwiError as exc:  # building the experiment failed
        events.put(("error", wid, _portable(exc)))
        _drain(tasks, events, wid, exc)
    except Exception:  # a bug: hand the traceback to the parent
        err = WorkerError(f"worker {wid} ({device}) failed:\n{traceback.format_exc()}")
        events.put(("error", wid, err))
        _drain(tasks, events, wid, err)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this worker when the parent dies (even by SIGKILL), so
    no orphan writes the run directory without its lock; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request was made
        raise _Stop()


def _drain(tasks, events, wid: int, err: BaseException) -> None:
    """After a failed start: answer every further task with the error, until None."""
    while True:
        task = tasks.get()
        if task is None:
            return
        events.put(("error", wid, _portable(err)))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a WorkerError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return WorkerError(f"{type(exc).__name__}: {exc}")
