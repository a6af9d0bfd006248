"""Experiment files: schema defaults, every bad field reported, overrides, problem checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _experiment_tiny import tiny_dict, write_tiny

from fwi_cli.errors import ConfigError
from fwi_cli.experiment import load_config, validate_config
from fwi_cli.experiment.problem import build_problem

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_config_defaults_fill_every_section():
    cfg = validate_config({"name": "d", "matrix": [{"impl": "c", "storage": "gpu", "dtype": "fp32"}]})
    r = cfg.resolved()
    assert r["output_dir"] == "runs" and r["device"] == "auto" and r["seed"] == 0
    assert r["model"] == {"dataset": "marmousi", "true": "true", "init": "smooth", "decimate": 2,
                          "crop": None, "dh": None}
    assert r["grid"] == {"dt": 0.002, "nt": 2000, "spatial_order": 4, "pml_width": 50}
    assert r["source"] == {"wavelet": "ricker", "freq": 5.0, "delay": 0.2}
    assert r["acquisition"] == {"nshots": 20, "nrec": 200, "src_z": 2, "rec_z": 4,
                                "src_span": [0.1, 0.9]}
    assert r["inversion"] == {"optimizer": "adam", "lr": 25.0, "eps": 1e-16, "iterations": 30,
                              "batch_shots": 8}
    assert r["memory"] == {"strategy": "boundary", "transfer_interval": 8, "pinned_memory": True,
                           "disk_dir": None}
    assert r["matrix"] == [{"impl": ["c"], "storage": ["gpu"], "dtype": ["fp32"]}]


def test_config_shipped_files_are_valid():
    bdy = load_config(REPO / "configs" / "marmousi_bdy.yaml")
    assert bdy.name == "marmousi_bdy" and bdy.model.true == "true"
    assert bdy.memory.strategy == "boundary" and bdy.inversion.iterations == 30
    smoke = load_config(REPO / "configs" / "smoke.yaml")
    assert smoke.name == "smoke" and smoke.memory.strategy == "boundary"
    assert smoke.resolved()["matrix"] == bdy.resolved()["matrix"]


def test_config_unknown_keys_name_file_and_path(tmp_path):
    d = tiny_dict(inversion={"lrr": 3.0})
    d["modle"] = {}
    p = _write(tmp_path, yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ")
    assert "inversion.lrr: unknown key" in msg and "modle: unknown key" in msg
    assert "allowed: optimizer, lr, eps, iterations, batch_shots" in msg
    assert "\n" not in msg


def test_config_each_bad_field_reported(tmp_path):
    d = tiny_dict(inversion={"lr": -1.0}, grid={"nt": 0}, device="gpu")
    d["matrix"] = [{"impl": "fortran", "storage": "tape", "dtype": "fp64"}]
    p = _write(tmp_path, yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    for key in ("inversion.lr:", "grid.nt:", "device:", "matrix.0.impl:", "matrix.0.storage:",
                "matrix.0.dtype:"):
        assert key in msg, key
    assert "'fortran'" in msg and "'fp64'" in msg


def test_config_missing_name_reported(tmp_path):
    d = tiny_dict()
    del d["name"]
    with pytest.raises(ConfigError, match="name: required key is missing"):
        load_config(_write(tmp_path, yaml.safe_dump(d)))


def test_config_batch_larger_than_nshots_is_error(tmp_path):
    p = write_tiny(tmp_path, inversion={"batch_shots": 5})
    with pytest.raises(ConfigError, match=r"inversion\.batch_shots: must be <= acquisition\.nshots = 4"):
        load_config(p)


def test_config_malformed_yaml_gives_line(tmp_path):
    p = _write(tmp_path, "name: x\nmatrix:\n  - {impl: c, storage: gpu\ngrid: {dt: 0.1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: line 4: invalid YAML")


def test_config_missing_file_is_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_config_non_mapping_file_is_error(tmp_path):
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="empty file"):
        load_config(_write(tmp_path, "", "empty.yaml"))


def test_config_empty_matrix_is_error(tmp_path):
    with pytest.raises(ConfigError, match="matrix: "):
        load_config(write_tiny(tmp_path, matrix=[]))


def test_config_set_overrides_typed_values(tmp_path):
    p = write_tiny(tmp_path)
    cfg = load_config(p, ["inversion.lr=7", "matrix.0.dtype=[fp16, bf16]", "model.crop=[0, 10, 5, 30]",
                          "memory.pinned_memory=false", "seed=3"])
    assert cfg.inversion.lr == 7.0 and cfg.seed == 3
    assert cfg.matrix[0].dtype == ["fp16", "bf16"]
    assert cfg.model.crop == (0, 10, 5, 30)
    assert cfg.memory.pinned_memory is False


def test_config_set_bad_key_and_value_are_errors(tmp_path):
    p = write_tiny(tmp_path)
    with pytest.raises(ConfigError, match=r"inversion\.lrr: unknown key"):
        load_config(p, ["inversion.lrr=1"])
    with pytest.raises(ConfigError, match=r"inversion\.lr: must be greater than 0"):
        load_config(p, ["inversion.lr=0"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(p, ["inversion.lr"])
    with pytest.raises(ConfigError, match="is not an index"):
        load_config(p, ["matrix.4.impl=c"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(p, ["seed.x=1"])


def test_config_true_preset_and_yaml_booleans(tmp_path):
    p = _write(tmp_path, "name: b\nmodel: {true: true, init: smooth}\n"
                         "memory: {pinned_memory: false}\n"
                         "matrix: [{impl: c, storage: gpu, dtype: fp32}]\n")
    cfg = load_config(p)
    assert cfg.model.true == "true"
    assert cfg.memory.pinned_memory is False


def test_config_marmousi_needs_a_preset(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.init: must be a Marmousi preset"):
        load_config(write_tiny(tmp_path, model={"init": "nope.npy"}))


def test_problem_crop_outside_model_is_error(tmp_path):
    cfg = load_config(write_tiny(tmp_path, model={"crop": [0, 20, 300, 400]}))
    with pytest.raises(ConfigError, match=r"model\.crop: \[0, 20, 300, 400\] reaches outside"):
        build_problem(cfg)


def test_problem_depths_and_span_outside_model_are_errors(tmp_path):
    cfg = load_config(write_tiny(tmp_path, acquisition={"src_z": 20, "rec_z": 25,
                                                        "src_span": [0.1, 1.0]}))
    with pytest.raises(ConfigError) as e:
        build_problem(cfg)
    msg = str(e.value)
    assert "acquisition.src_z: 20 lies below" in msg and "acquisition.rec_z: 25 lies below" in msg
    assert "acquisition.src_span" in msg


def test_problem_cfl_violation_is_error(tmp_path):
    cfg = load_config(write_tiny(tmp_path, grid={"dt": 0.02}))
    with pytest.raises(ConfigError, match=r"grid\.dt: 0\.02 s is above the CFL limit"):
        build_problem(cfg)


def test_problem_npy_models_resolved_next_to_the_file(tmp_path):
    rng = np.random.default_rng(1)
    true = (2000 + 100 * rng.random((12, 30))).astype(np.float32)
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "true.npy", true)
    np.save(tmp_path / "m" / "init.npy", np.full_like(true, 2000.0))
    p = write_tiny(tmp_path, model={"dataset": "npy", "true": "m/true.npy", "init": "m/init.npy",
                                    "decimate": 1, "crop": None, "dh": 20.0})
    prob = build_problem(load_config(p))
    np.testing.assert_array_equal(prob.vp_true, true)
    assert prob.dh == 20.0 and prob.shape == (12, 30)
    cfg = load_config(p, ["model.true=m/absent.npy"])
    with pytest.raises(ConfigError, match=r"model\.true: no such \.npy file: m/absent\.npy"):
        build_problem(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_problem_cuda_without_cuda_is_error(tmp_path):
    p = write_tiny(tmp_path, device="cuda:0")
    with pytest.raises(ConfigError, match=rf"{p}: device: cuda:0 asked for but CUDA is not available"):
        build_problem(load_config(p))
