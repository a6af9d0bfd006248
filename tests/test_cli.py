"""The command line: exit codes, one-line user errors (no traceback), the four commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _experiment_tiny import eager_observed_only, write_tiny

from fwi_cli.cli import main
from fwi_cli.errors import BackendUnavailableError
from fwi_cli.experiment import Job, runner, store


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fwi: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in err


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    return write_tiny(tmp_path)


def test_cli_missing_file_is_one_line_exit_2(capsys, tmp_path):
    for cmd in ("model", "invert", "sweep", "report"):
        code, _, err = _run(capsys, cmd, str(tmp_path / "absent.yaml"))
        if cmd == "report":
            _one_line_error(code, err, "absent.yaml", "does not exist")
        else:
            _one_line_error(code, err, "absent.yaml", "no such file")


def test_cli_bad_key_and_bad_value_exit_2(capsys, tiny):
    code, _, err = _run(capsys, "sweep", str(tiny), "--set", "inversion.lrr=3")
    _one_line_error(code, err, str(tiny), "inversion.lrr: unknown key")
    code, _, err = _run(capsys, "model", str(tiny), "--set", "inversion.lr=-1", "--set", "grid.nt=0")
    _one_line_error(code, err, "inversion.lr: must be greater than 0", "grid.nt: must be greater than 0")
    code, _, err = _run(capsys, "sweep", str(tiny), "--set", "inversion.lr")
    _one_line_error(code, err, "expected key.path=value")


def test_cli_cfl_violation_exit_2(capsys, tiny):
    code, _, err = _run(capsys, "sweep", str(tiny), "--set", "grid.dt=0.05")
    _one_line_error(code, err, "grid.dt: 0.05 s is above the CFL limit")


def test_cli_bad_options_exit_2(capsys, tiny):
    code, _, err = _run(capsys, "invert", str(tiny), "--impl", "fortran")
    _one_line_error(code, err, "--impl must be one of c, eager")
    code, _, err = _run(capsys, "sweep", str(tiny), "--frobnicate")
    _one_line_error(code, err, "No such option: --frobnicate")
    code, _, err = _run(capsys, "sweep")
    _one_line_error(code, err, "Missing argument")
    code, _, err = _run(capsys, "sweep", str(tiny), "--only", "c-*")
    _one_line_error(code, err, "--only 'c-*' matches no job")


def test_cli_user_error_has_no_traceback_in_a_real_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "fwi_cli", "sweep", "absent.yaml"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "fwi: error: absent.yaml: cannot read the experiment file (no such file)\n"


def test_cli_model_sweep_report_pipeline(capsys, tiny):
    code, out, _ = _run(capsys, "model", str(tiny))
    assert code == 0 and "observed.zarr: written in" in out and "impl eager" in out
    code, out, _ = _run(capsys, "model", str(tiny), "--quiet")
    assert code == 0 and out == ""
    code, out, err = _run(capsys, "sweep", str(tiny))
    assert code == 0 and err == ""
    assert "observed data up to date" in out
    assert "[1/2] eager·gpu·fp32: iter 3/3 loss " in out and "[2/2] eager·gpu·int8: complete" in out
    assert "2 job(s) run, 0 already complete, 0 failed" in out
    code, out, _ = _run(capsys, "sweep", str(tiny), "--quiet")
    assert code == 0 and out == ""
    run_dir = tiny.parent / "runs" / "tiny"
    code, out, _ = _run(capsys, "report", str(run_dir))
    assert code == 0 and "report/convergence.png" in out and "2 complete, 0 failed" in out
    code, out, _ = _run(capsys, "report", str(tiny), "--set", "name=tiny", "--quiet")
    assert code == 0 and out == ""
    code, _, err = _run(capsys, "report", str(run_dir), "--set", "name=x")
    _one_line_error(code, err, "--set needs an experiment YAML")


def test_cli_invert_runs_one_job(capsys, tiny):
    code, out, _ = _run(capsys, "invert", str(tiny), "--impl", "eager", "--storage", "cpu",
                        "--dtype", "bf16", "--set", "inversion.iterations=2")
    assert code == 0 and "eager·cpu·bf16" in out and "store: " in out
    rec = store.read_job(store.job_path(tiny.parent / "runs" / "tiny", Job("eager", "cpu", "bf16")))
    assert rec.status == "complete" and rec.loss.shape == (2,)


def test_cli_failed_job_exits_1_with_summary(capsys, tmp_path, monkeypatch):
    eager_observed_only(monkeypatch)
    real = runner.make_propagator

    def fake(problem, impl, memory=None):
        if impl == "c":
            raise BackendUnavailableError("kernels not built (test)")
        return real(problem, impl, memory)

    monkeypatch.setattr(runner, "make_propagator", fake)
    path = write_tiny(tmp_path, matrix=[{"impl": ["c", "eager"], "storage": "gpu", "dtype": "fp32"}])
    code, out, err = _run(capsys, "sweep", str(path), "--quiet")
    assert code == 1 and out == ""
    assert "fwi: job c·gpu·fp32 failed at iteration 1: BackendUnavailableError: kernels not built (test)" in err
    assert "1 of 2 job(s) failed" in err
    assert store.is_complete(store.job_path(tmp_path / "runs" / "tiny", Job("eager", "gpu", "fp32")))
