"""The benchmark harness's own arithmetic (cell counts, limits, table)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from fwi_cli import bench
from fwi_cli.signal import ricker


@pytest.fixture
def tiny_problem():
    """A 24 x 40 two-layer problem, 60 steps, 2 shots of 10 receivers (fast on CPU)."""
    vt = np.full((24, 40), 2000.0, dtype=np.float32)
    vt[12:] = 2500.0
    vi = np.full_like(vt, 2200.0)
    nt, dt = 60, 0.004
    wavelet = ricker(np.arange(nt, dtype=np.float32) * dt - 0.1, 8.0).astype(np.float32)
    src = np.array([[10, 1], [30, 1]])
    rec = np.stack([np.stack([np.arange(0, 40, 4), np.full(10, 2)], 1)] * 2)
    return bench.Problem("tiny", vt, vi, 50.0, dt, nt, 5, 4, wavelet, src, rec, 2)


def test_bench_seed_problem_matches_the_anchor_definition():
    p = bench.make_problem("seed")
    assert p.shape == (141, 681) and p.dh == 25.0 and p.nt == 2000 and p.batch == 8
    assert p.sources.shape == (20, 2) and p.receivers.shape == (20, 200, 2)
    assert p.sources[0].tolist() == [68, 2] and p.sources[-1].tolist() == [612, 2]


def test_bench_cell_updates_per_iteration_is_padded_cells_x_steps_x_passes_x_shots():
    p = bench.make_problem("seed")
    assert p.padded_cells() == (141 + 100) * (681 + 100)
    assert p.cell_updates_per_iteration() == pytest.approx(241 * 781 * 2000 * 3 * 8)
    # anchors.md: "about 9.0 G cell-updates ... -> 30 ms at the limit"
    assert p.cell_updates_per_iteration() / bench.LIMIT_CELL_UPDATES == pytest.approx(0.0301, rel=1e-2)


def test_bench_limit_is_bandwidth_over_bytes_per_update():
    assert bench.LIMIT_CELL_UPDATES == pytest.approx(4.8e12 / 16)


def test_bench_big_and_cpu_problems():
    big, cpu = bench.make_problem("big"), bench.make_problem("cpu")
    assert big.shape == (281, 1361) and big.nt == 4000 and big.receivers.shape[1] == 400
    assert cpu.shape == (71, 341) and cpu.nt == 1000 and cpu.pml == 20 and cpu.batch == 4
    with pytest.raises(ValueError, match="unknown benchmark problem"):
        bench.make_problem("huge")


def test_bench_table_reports_rate_and_fraction_of_limit():
    row = {"problem": "seed", "impl": "c", "storage": "gpu", "dtype": "fp32", "s_per_iter_median": 0.1,
           "s_min": 0.09, "s_max": 0.11, "peak_bytes": 296e6, "ring_bytes": 210.4e6,
           "cell_updates_per_s": 90e9, "fraction_of_limit": 0.3}
    line = bench.format_table([row]).splitlines()[-1]
    assert "c·gpu·fp32" in line and "0.1000" in line and "296" in line and "90.0" in line and "30 %" in line


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_bench_kernel_profile_names_the_propagator_ops(tiny_problem):
    """On CPU the profile lists the compiled forward and backward ops, timed per step."""
    rows = bench.kernel_profile(tiny_problem, torch.device("cpu"), "c", "gpu", "fp32")
    names = {r["name"]: r for r in rows}
    assert "fwi::forward_steps" in names and "fwi::backward_steps" in names
    fwd = names["fwi::forward_steps"]
    assert fwd["calls"] >= 1 and fwd["total_ms"] > 0
    assert fwd["us_per_step"] == pytest.approx(fwd["total_ms"] * 1e3 / tiny_problem.nt)
    assert [r["total_ms"] for r in rows] == sorted((r["total_ms"] for r in rows), reverse=True)
    table = bench.format_kernels(rows)
    assert "`fwi::forward_steps`" in table and table.count("\n") == len(rows) + 1
    assert "FWI_PDL" not in os.environ  # restored


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_bench_batch_option_sets_the_shots_and_reports_shot_groups(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FWI_SHOT_GROUP", "1")  # on CPU only when asked: one shot per group
    out = tmp_path / "rows.json"
    assert bench.main(["--problem", "cpu", "--device", "cpu", "--configs", "c-gpu-fp32", "--batch", "2",
                       "--iters", "1", "--warmup", "0", "--json", str(out)]) == 0
    import json

    row = json.loads(out.read_text())["rows"][0]
    assert row["batch"] == 2 and row["shot_groups"] == [1, 1]
    cpu = bench.make_problem("cpu")
    assert row["cell_updates_per_s"] * row["s_per_iter_median"] == pytest.approx(
        cpu.padded_cells() * cpu.nt * 3 * 2)
    for bad in ("0", "5"):  # the cpu problem has 4 shots
        with pytest.raises(SystemExit) as exc:
            bench.main(["--problem", "cpu", "--device", "cpu", "--batch", bad])
        assert exc.value.code == 2
    assert "--batch must lie in [1, 4]" in capsys.readouterr().err
