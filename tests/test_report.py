"""Reports: PNG figures and the summary table, on full and partial sweeps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _experiment_tiny import eager_observed_only, write_tiny

from fwi_cli.errors import FwiArgumentError
from fwi_cli.experiment import Experiment, Job, load_config, store
from fwi_cli.report import load_run, make_report
from fwi_cli.report.figures import memory_components, summary_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MATRIX = [{"impl": "eager", "storage": ["gpu", "cpu"], "dtype": ["fp32", "int8"]}]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A run directory of a finished 4-job tiny sweep (copied per test that edits it)."""
    tmp = tmp_path_factory.mktemp("swept")
    with pytest.MonkeyPatch.context() as mp:
        eager_observed_only(mp)
        cfg = load_config(write_tiny(tmp, matrix=MATRIX, inversion={"iterations": 2}))
        assert Experiment(cfg).sweep().ok
    return cfg.run_dir


def _copy(run_dir, tmp_path):
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def test_report_writes_pngs_and_summary(swept, tmp_path):
    run_dir = _copy(swept, tmp_path)
    rep = make_report(run_dir)
    names = [p.name for p in rep.files]
    assert names == ["convergence.png", "models.png", "memory.png", "summary.md"]
    assert all(p.parent == run_dir / "report" for p in rep.files)
    for p in rep.files[:3]:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 10_000
    assert rep.n_complete == 4 and rep.n_failed == 0 and rep.missing == []
    md = (run_dir / "report" / "summary.md").read_text()
    for label in ("eager·gpu·fp32", "eager·gpu·int8", "eager·cpu·fp32", "eager·cpu·int8"):
        assert f"| {label} | complete |" in md
    assert "| eager·gpu·fp32 | complete |" in md and "anchor | anchor" in md


def test_report_on_partial_sweep_lists_failed_and_missing(swept, tmp_path):
    run_dir = _copy(swept, tmp_path)
    shutil.rmtree(store.job_path(run_dir, Job("eager", "cpu", "int8")))
    failed = store.job_path(run_dir, Job("eager", "cpu", "fp32"))
    store.begin_job(failed, Job("eager", "cpu", "fp32"), {})
    store.finish_job(failed, status="failed", loss=np.full(2, np.nan), rmse=np.full(3, np.nan),
                     vp_final=np.zeros((20, 40)), iter_time=np.full(2, np.nan),
                     attrs={"reason": "loss is nan at iteration 1", "failed_iteration": 1})
    store.begin_job(store.job_path(run_dir, Job("eager", "gpu", "int8")), Job("eager", "gpu", "int8"), {})
    rep = make_report(run_dir)
    assert rep.n_complete == 1 and rep.n_failed == 1
    assert [j.label for j in rep.missing] == ["eager·gpu·int8", "eager·cpu·int8"]
    md = (run_dir / "report" / "summary.md").read_text()
    assert "- eager·cpu·fp32: at iteration 1: loss is nan at iteration 1" in md
    assert "## Not run yet\n\neager·gpu·int8, eager·cpu·int8" in md
    assert all(p.exists() for p in rep.files)


def test_report_gap_to_anchor_in_summary(swept):
    run = load_run(swept)
    anchor = run.anchor("eager")
    assert anchor.label == "eager·gpu·fp32"
    other = next(r for r in run.complete if r.label == "eager·cpu·int8")
    other.loss = other.loss.copy()
    other.rmse = other.rmse.copy()
    other.loss[-1] = anchor.loss[-1] * 1.01
    other.rmse[-1] = anchor.rmse[-1] - 0.25
    md = summary_markdown(run)
    row = next(line for line in md.splitlines() if line.startswith("| eager·cpu·int8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:6] == ["+1.000 %", "-0.25"]


def test_report_memory_components_stack_to_peak(swept):
    run = load_run(swept)
    rec = run.complete[0]
    rec.attrs = {**rec.attrs, "memory": {"peak_bytes": 100 * 2**20, "boundary_bytes": 30 * 2**20,
                                         "boundary_device_bytes": 20 * 2**20,
                                         "frame_bytes": 5 * 2**20, "record_bytes": 2 * 2**20,
                                         "observed_bytes": 8 * 2**20}}
    c = memory_components(rec)
    assert c == {"context": 73.0, "frame": 5.0, "frame_off": 0.0, "observed": 8.0, "record": 2.0,
                 "ring_device": 20.0, "ring_off": 10.0, "peak": 100.0}
    assert c["context"] + c["frame"] + c["record"] + c["ring_device"] == c["peak"]


def test_report_memory_components_frames_in_host_memory_leave_the_device_bar(swept):
    run = load_run(swept)
    rec = run.complete[0]
    rec.attrs = {**rec.attrs, "memory": {"peak_bytes": 100 * 2**20, "boundary_bytes": 30 * 2**20,
                                         "boundary_device_bytes": 1 * 2**20,
                                         "frame_bytes": 5 * 2**20, "frame_device_bytes": 0,
                                         "record_bytes": 2 * 2**20, "observed_bytes": 8 * 2**20}}
    c = memory_components(rec)
    assert c["frame"] == 0.0 and c["frame_off"] == 5.0 and c["ring_off"] == 29.0
    assert c["context"] == 97.0  # peak - device ring - device frames - record


def test_report_without_job_stores_is_error(tmp_path):
    with pytest.raises(FwiArgumentError, match="does not exist"):
        make_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FwiArgumentError, match="holds no finished job store"):
        make_report(tmp_path / "empty")
