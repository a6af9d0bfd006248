"""Tiny experiment files for the experiment/CLI/report tests (seconds on 2 cores).

A 20 x 40 cell Marmousi2 crop at 50 m, nt = 150, 4 shots, 2 per batch, 3 iterations,
``impl: eager`` with ``memory: {strategy: full}`` (storage/dtype only label the jobs).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

TINY = {
    "name": "tiny",
    "output_dir": "runs",
    "device": "cpu",
    "seed": 0,
    "model": {"dataset": "marmousi", "true": "true", "init": "smooth", "decimate": 4,
              "crop": [0, 20, 100, 140]},
    "grid": {"dt": 0.004, "nt": 150, "spatial_order": 4, "pml_width": 10},
    "source": {"wavelet": "ricker", "freq": 5.0, "delay": 0.2},
    "acquisition": {"nshots": 4, "nrec": 20, "src_z": 1, "rec_z": 2, "src_span": [0.1, 0.9]},
    "inversion": {"optimizer": "adam", "lr": 10.0, "eps": 1.0e-16, "iterations": 3,
                  "batch_shots": 2},
    "memory": {"strategy": "full"},
    "matrix": [{"impl": "eager", "storage": "gpu", "dtype": ["fp32", "int8"]}],
}


def tiny_dict(**changes) -> dict:
    """TINY with top-level keys replaced (sections are replaced whole unless a dict is
    merged: pass ``inversion={"iterations": 2}`` to change one key of a section)."""
    d = copy.deepcopy(TINY)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    return d


def write_tiny(tmp_path: Path, filename: str = "tiny.yaml", **changes) -> Path:
    """Write a tiny experiment file into ``tmp_path`` with ``output_dir`` inside it."""
    d = tiny_dict(**changes)
    if "output_dir" not in changes:
        d["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
    return path


def eager_observed_only(monkeypatch) -> None:
    """Model observed data with impl eager (the compiled backend is tested elsewhere)."""
    from fwi_cli.experiment import runner

    monkeypatch.setattr(runner, "OBSERVED_IMPLS", ("eager",))
