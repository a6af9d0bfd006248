"""The benchmark harness's own arithmetic (cell counts, limits, table)."""

from __future__ import annotations

import pytest

from fwi_cli import bench


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
