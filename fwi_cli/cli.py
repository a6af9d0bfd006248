"""The ``fwi`` command line (Typer): parse, call the library, print.

Commands (DESIGN §6)::

    fwi model  CONFIG [--force]                         observed data -> <out>/<name>/observed.zarr
    fwi invert CONFIG --impl c --storage gpu --dtype int8   one job -> <impl>-<storage>-<dtype>.zarr
    fwi sweep  CONFIG [--only GLOB]                     every matrix job, skipping complete ones
    fwi sweep  CONFIG --gpus 0,1,2,3 | --workers N      the same, jobs run concurrently
    fwi report RUN_DIR|CONFIG                           figures + summary.md -> RUN_DIR/report/

Every command takes repeatable ``--set key.path=value`` overrides and ``--quiet``.

``torchrun --nproc-per-node N -m fwi_cli invert|sweep ...`` splits every shot batch over N
ranks (see :mod:`fwi_cli.experiment.distributed`); rank 0 alone prints and writes.
``--gpus``/``--workers`` run whole jobs in parallel worker processes
(:mod:`fwi_cli.experiment.parallel`). See docs/distributed.md.

Exit codes: 0 success; 1 a job failed (its store says why); 2 a user error (bad file, key,
value, option; CFL violation; a full disk; a run directory in use by another fwi process),
printed as one line ``fwi: error: ...`` on stderr; 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM): both unwind normally, so disk-tier files are removed and the job being run is left
not complete (a rerun redoes it). Any other exception is a bug and shows its traceback.

Warnings about the problem (:class:`~fwi_cli.errors.FwiWarning`, e.g. too few grid points
per wavelength) are printed once, as ``fwi: warning: ...`` on stderr, when the observed data
are modelled (also with ``--quiet``); they are kept in the stores' ``warnings`` attribute.

Progress: a rich progress display when stdout is a terminal, plain lines otherwise, nothing
with ``--quiet``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import warnings
from pathlib import Path

import typer

from fwi_cli.errors import FwiArgumentError, FwiError, FwiWarning

try:  # typer >= 0.2x vendors click; older typer re-exports click's exceptions
    from typer import TyperException as _UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException as _UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Full-waveform inversion of the 2D acoustic wave equation: model, invert, sweep, report.",
)

SET_HELP = "override a config key, e.g. --set inversion.lr=10 (repeatable)"
QUIET_HELP = "print no progress"


# --------------------------------------------------------------------------- progress
class _Warnings:
    """Prints the problem's warnings to stderr when the observed data are modelled."""

    def __init__(self, notes=()) -> None:
        self.notes = list(notes)

    def warn(self, ev) -> None:
        if ev.kind == "observed_start":
            for note in self.notes:
                typer.echo(f"fwi: warning: {' '.join(note.split())}", err=True)

    def __call__(self, ev) -> None:
        self.warn(ev)


class _PlainProgress(_Warnings):
    """One line per event, for logs and pipes."""

    def __call__(self, ev) -> None:
        self.warn(ev)
        pos = f"[{ev.index}/{ev.total}]" if ev.total else ""
        if ev.kind in ("observed_start", "observed_done", "observed_reused"):
            what = {"observed_start": "modelling observed data ->",
                    "observed_done": "observed data written:",
                    "observed_reused": "observed data up to date:"}[ev.kind]
            typer.echo(f"{what} {ev.message}")
        elif ev.kind == "job_start":
            typer.echo(f"{pos} {ev.job.label}: start")
        elif ev.kind == "iteration":
            typer.echo(f"{pos} {ev.job.label}: iter {ev.iteration}/{ev.iterations} "
                       f"loss {ev.loss:.4e} rmse {ev.rmse:.1f}")
        elif ev.kind == "job_skip":
            typer.echo(f"{pos} {ev.job.label}: skipped ({ev.message})")
        elif ev.kind == "job_end":
            tail = "" if ev.status == "complete" else f" ({ev.message})"
            typer.echo(f"{pos} {ev.job.label}: {ev.status}{tail}")


class _RichProgress(_Warnings):
    """A live rich display: sweep position, the job's iteration, its loss."""

    def __init__(self, notes=()) -> None:
        super().__init__(notes)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        )
        self.sweep_task = None
        self.job_tasks: dict = {}  # job label -> its bar (several run at once with --gpus)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, ev) -> None:
        self.warn(ev)
        p = self.progress
        if ev.kind in ("observed_start", "observed_done", "observed_reused"):
            what = {"observed_start": "modelling observed data",
                    "observed_done": "observed data written:",
                    "observed_reused": "observed data up to date:"}[ev.kind]
            p.console.print(f"{what} {ev.message}")
            return
        if self.sweep_task is None and ev.total:
            self.sweep_task = p.add_task("jobs", total=ev.total, info="")
        if ev.kind == "job_start":
            if ev.job.label in self.job_tasks:
                p.remove_task(self.job_tasks.pop(ev.job.label))
            self.job_tasks[ev.job.label] = p.add_task(f"[{ev.index}/{ev.total}] {ev.job.label}",
                                                      total=ev.iterations, info="")
        elif ev.kind == "iteration" and ev.job.label in self.job_tasks:
            p.update(self.job_tasks[ev.job.label], completed=ev.iteration,
                     info=f"loss {ev.loss:.3e}  rmse {ev.rmse:.1f}")
        elif ev.kind in ("job_end", "job_skip"):
            if ev.job.label in self.job_tasks:
                p.remove_task(self.job_tasks.pop(ev.job.label))
            p.advance(self.sweep_task)
            mark = "skipped (complete)" if ev.kind == "job_skip" else ev.status
            tail = f": {ev.message}" if ev.kind == "job_end" and ev.status != "complete" else ""
            p.console.print(f"[{ev.index}/{ev.total}] {ev.job.label}: {mark}{tail}")


@contextlib.contextmanager
def _progress(quiet: bool, ex=None):
    notes = ex.problem.warnings if ex is not None else ()
    if quiet or (ex is not None and not ex.is_writer):  # torchrun ranks > 0 print nothing
        yield _Warnings(notes)
    elif sys.stdout.isatty():
        with _RichProgress(notes) as rp:
            yield rp
    else:
        yield _PlainProgress(notes)


# --------------------------------------------------------------------------- helpers
def _experiment(config: str, sets: list[str] | None):
    from fwi_cli.experiment import Experiment, load_config
    from fwi_cli.experiment.distributed import init_from_env

    cfg = load_config(config, sets or [])
    return Experiment(cfg, dist=init_from_env())  # dist is None unless started by torchrun


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None or x != x else format(x, spec)


def _result_line(res) -> str:
    import numpy as np

    loss = res.loss[np.isfinite(res.loss)]
    rmse = res.rmse[np.isfinite(res.rmse)]
    head = f"{res.job.label:18s} "
    if loss.size:
        head += (f"loss {loss[0]:.3e} -> {loss[-1]:.3e} rmse {rmse[0]:.1f} -> {rmse[-1]:.1f} "
                 f"({_fmt(res.timing.get('iter_s'), '.3f')} s/iter)")
    if not res.ok:
        head += f" FAILED at iteration {res.failed_iteration}: {res.reason}"
    return head


def _check_choice(option: str, value: str, allowed) -> None:
    if value not in allowed:
        raise FwiArgumentError(f"{option} must be one of {', '.join(allowed)} (got {value!r})")


# --------------------------------------------------------------------------- commands
@app.command()
def model(
    config: str = typer.Argument(..., help="experiment YAML"),
    set_: list[str] = typer.Option(None, "--set", "-s", help=SET_HELP),
    force: bool = typer.Option(False, "--force", help="remodel even if up to date"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Model the observed data once -> <output_dir>/<name>/observed.zarr."""
    ex = _experiment(config, set_)
    with _progress(quiet, ex) as prog:
        res = ex.ensure_observed(prog, force=force)
    if not quiet and ex.is_writer:
        state = "reused (up to date)" if res.reused else f"written in {res.seconds:.1f} s"
        typer.echo(f"{res.path}: {state}, impl {res.impl}")


@app.command()
def invert(
    config: str = typer.Argument(..., help="experiment YAML"),
    impl: str = typer.Option("c", "--impl", help="c | eager"),
    storage: str = typer.Option("gpu", "--storage", help="gpu | cpu | disk"),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 | fp16 | bf16 | int8"),
    set_: list[str] = typer.Option(None, "--set", "-s", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Run one inversion job (always rerun) -> <output_dir>/<name>/<impl>-<storage>-<dtype>.zarr."""
    from fwi_cli.experiment import Job
    from fwi_cli.experiment.config import IMPLS
    from fwi_cli.propagator.options import STORAGE_DTYPES, STORAGES

    _check_choice("--impl", impl, IMPLS)
    _check_choice("--storage", storage, STORAGES)
    _check_choice("--dtype", dtype, STORAGE_DTYPES)
    ex = _experiment(config, set_)
    with _progress(quiet, ex) as prog:
        ex.ensure_observed(prog)
        res = ex.run_job(Job(impl, storage, dtype), prog)
    if not ex.is_writer:  # rank 0 of a torchrun group reports
        raise typer.Exit(0 if res.ok else 1)
    if not quiet or not res.ok:
        typer.echo(_result_line(res), err=not res.ok)
    if not quiet:
        typer.echo(f"store: {res.path}")
    if not res.ok:
        raise typer.Exit(1)


@app.command()
def sweep(
    config: str = typer.Argument(..., help="experiment YAML"),
    only: str = typer.Option(None, "--only", help="run only jobs matching this glob, e.g. 'c-gpu-*'"),
    gpus: str = typer.Option(None, "--gpus", help="run jobs concurrently, one worker process per "
                             "listed GPU, e.g. --gpus 0,1,2,3, or --gpus all"),
    workers: int = typer.Option(None, "--workers", help="run jobs concurrently in N CPU worker "
                                "processes"),
    set_: list[str] = typer.Option(None, "--set", "-s", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Run every job of the matrix, skipping jobs already complete.

    Jobs run one after another, or concurrently with --gpus / --workers.
    """
    from fwi_cli.experiment import parallel

    devices = parallel.worker_devices(gpus, workers)
    ex = _experiment(config, set_)
    with _progress(quiet, ex) as prog:
        summary = ex.sweep(only, prog) if devices is None else \
            parallel.sweep(ex, devices, only, prog)
    if not ex.is_writer:  # rank 0 of a torchrun group reports
        raise typer.Exit(1 if summary.failed else 0)
    if not quiet:
        for res in summary.results:
            typer.echo(_result_line(res))
        n_run, n_skip = len(summary.results), len(summary.skipped)
        typer.echo(f"{n_run} job(s) run, {n_skip} already complete, {len(summary.failed)} failed "
                   f"-> {ex.run_dir}")
    if summary.failed:
        for res in summary.failed:
            typer.echo(f"fwi: job {res.job.label} failed at iteration {res.failed_iteration}: "
                       f"{res.reason}", err=True)
        typer.echo(f"fwi: {len(summary.failed)} of {len(summary.results) + len(summary.skipped)} "
                   "job(s) failed; rerun `fwi sweep` to retry them", err=True)
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="run directory (or the experiment YAML that made it)"),
    set_: list[str] = typer.Option(None, "--set", "-s", help=SET_HELP + "; with a YAML only"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Draw convergence.png, models.png, memory.png and summary.md into RUN_DIR/report/."""
    from fwi_cli.report import make_report

    target = Path(run_dir)
    if target.is_file():
        from fwi_cli.experiment import load_config

        target = load_config(run_dir, set_ or []).run_dir
    elif set_:
        raise FwiArgumentError("--set needs an experiment YAML, not a run directory, as argument")
    rep = make_report(target)
    if not quiet:
        for p in rep.files:
            typer.echo(str(p))
        typer.echo(f"{rep.n_complete} complete, {rep.n_failed} failed, "
                   f"{len(rep.missing)} missing job(s)")


# --------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Console entry point.

    User errors (:class:`~fwi_cli.errors.FwiError`, bad command-line usage) become one line
    ``fwi: error: ...`` on stderr and exit code 2; Ctrl-C exits 130, SIGTERM 143 (after the
    same clean-up as Ctrl-C).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        args = ["--help"]
    caught: list[int] = []  # the signal that stopped us (typer may turn Ctrl-C into exit 130)

    def on_signal(signum, frame) -> None:
        caught.append(signum)
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FwiWarning)  # shown by the progress printers
            rv = app(args=args, prog_name="fwi", standalone_mode=False)
    except _UsageError as exc:  # bad usage: unknown option, missing argument
        msg = " ".join(exc.format_message().split())
        typer.echo(f"fwi: error: {msg}", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except FwiError as exc:
        if not getattr(exc, "reported_elsewhere", False):  # torchrun: rank 0 reports it
            typer.echo(f"fwi: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort) as exc:  # older typer/click: Ctrl-C as Abort
        if not caught:
            caught.append(signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)
        rv = None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if caught:
        term = caught[0] == signal.SIGTERM
        typer.echo(f"fwi: {'terminated' if term else 'interrupted'}; complete stores are kept, "
                   "rerun to resume", err=True)
        sys.exit(143 if term else 130)
    sys.exit(rv if isinstance(rv, int) else 0)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``with`` blocks and ``finally`` clean up."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()
