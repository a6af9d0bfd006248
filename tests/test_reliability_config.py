"""Bad input: field ranges, hostile YAML, bad .npy models, and fuzzing of the config loader.

What test_experiment_config.py already covers (unknown keys, negative lr, nt = 0, unknown
impl/storage/dtype, batch > nshots, empty matrix, malformed YAML line, missing file, depths
and crop outside the model, CFL) is not repeated here.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
import yaml
from _experiment_tiny import TINY, tiny_dict, write_tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwi_cli.errors import ConfigError, FwiWarning
from fwi_cli.experiment import load_config, validate_config
from fwi_cli.experiment.problem import build_problem


def _write(tmp_path: Path, text: str | bytes, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    "section, key, value, needle",
    [
        ("inversion", "lr", -1.0, "inversion.lr: must be greater than 0"),
        ("inversion", "eps", 0.0, "inversion.eps: must be greater than 0"),
        ("inversion", "iterations", 0, "inversion.iterations: must be greater than or equal to 1"),
        ("inversion", "batch_shots", 0, "inversion.batch_shots: must be greater than or equal to 1"),
        ("inversion", "optimizer", "sgd", "inversion.optimizer: must be 'adam'"),
        ("grid", "dt", -0.001, "grid.dt: must be greater than 0"),
        ("grid", "nt", -5, "grid.nt: must be greater than 0"),
        ("grid", "spatial_order", 6, "grid.spatial_order: must be 2, 4 or 8"),
        ("grid", "pml_width", 0, "grid.pml_width: must be greater than or equal to 1"),
        ("source", "freq", 0, "source.freq: must be greater than 0"),
        ("source", "delay", -0.1, "source.delay: must be greater than or equal to 0"),
        ("source", "wavelet", "gabor", "source.wavelet: must be 'ricker'"),
        ("acquisition", "nshots", 0, "acquisition.nshots: must be greater than or equal to 1"),
        ("acquisition", "nrec", 0, "acquisition.nrec: must be greater than or equal to 1"),
        ("acquisition", "src_z", -1, "acquisition.src_z: must be greater than or equal to 0"),
        ("acquisition", "src_span", [0.9, 0.1], "acquisition.src_span: must be [a, b]"),
        ("model", "decimate", 0, "model.decimate: must be greater than or equal to 1"),
        ("model", "dataset", "segy", "model.dataset: must be 'marmousi' or 'npy'"),
        ("model", "crop", [5, 5, 0, 10], "model.crop: must be [z0, z1, x0, x1]"),
        ("model", "crop", [0, 10], "model.crop"),
        ("memory", "strategy", "checkpoint", "memory.strategy: must be 'boundary' or 'full'"),
        ("memory", "transfer_interval", 0, "memory.transfer_interval: must be greater than or equal to 1"),
        ("memory", "pinned_memory", "perhaps", "memory.pinned_memory: must be a valid boolean"),
    ],
)
def test_config_field_out_of_range_names_key(tmp_path, section, key, value, needle):
    p = write_tiny(tmp_path, **{section: {key: value}})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and needle in msg and "\n" not in msg


@pytest.mark.parametrize("text", ["nan", ".nan", ".inf", "-.inf", "1e400"])
@pytest.mark.parametrize("key", ["inversion.lr", "grid.dt", "source.freq", "model.dh"])
def test_config_non_finite_floats_are_errors(tmp_path, key, text):
    with pytest.raises(ConfigError, match=rf"{key}: must be a finite number"):
        load_config(write_tiny(tmp_path), [f"{key}={text}"])


def test_config_negative_seed_is_error(tmp_path):
    with pytest.raises(ConfigError, match=r"seed: must be greater than or equal to 0"):
        load_config(write_tiny(tmp_path, seed=-1))


def test_config_wrong_types_are_errors(tmp_path):
    d = tiny_dict(name=12, grid={"nt": "many"}, acquisition={"nshots": 2.5}, model={"crop": "all"})
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, yaml.safe_dump(d)))
    msg = str(e.value)
    for key in ("name:", "grid.nt:", "acquisition.nshots:", "model.crop:"):
        assert key in msg, key


def test_config_duplicate_jobs_are_errors(tmp_path):
    matrix = [{"impl": "eager", "storage": "gpu", "dtype": ["fp32", "fp32"]},
              {"impl": ["c", "eager"], "storage": "gpu", "dtype": "int8"},
              {"impl": "eager", "storage": "gpu", "dtype": "int8"}]
    with pytest.raises(ConfigError) as e:
        load_config(write_tiny(tmp_path, matrix=matrix))
    msg = str(e.value)
    assert "matrix.0: job eager·gpu·fp32 is listed twice in this block" in msg
    assert "matrix.2: job eager·gpu·int8 duplicates one of matrix.1" in msg


def test_config_empty_list_in_block_is_error(tmp_path):
    with pytest.raises(ConfigError, match=r"matrix\.0\.dtype: must name at least one"):
        load_config(write_tiny(tmp_path, matrix=[{"impl": "c", "storage": "gpu", "dtype": []}]))


def test_config_long_bad_value_is_shortened(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write_tiny(tmp_path, device="x" * 500))
    assert len(str(e.value)) < 300 and "..." in str(e.value)


# --------------------------------------------------------------------------- hostile YAML
@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: x\ngrid: {dt: !!float abc}\n", "could not convert string to float"),
        ("name: x\nseed: !!int abc\n", "invalid literal for int"),
        ("name: x\nseed: !!timestamp abc\n", "cannot be converted"),
        ("name: x\nmemory: {pinned_memory: !!bool maybe}\n", "cannot be converted"),
        ("name: !!python/object:os.system {}\n", "line 1: invalid YAML"),
        ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("name: x\n\tgrid: 1\n", "line 2: invalid YAML"),
        ("? [a, b]\n: 1\n", "line 1: invalid YAML (found unhashable key)"),
    ],
)
def test_config_hostile_yaml_is_config_error(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and needle in str(e.value)


def test_config_recursive_alias_is_config_error(tmp_path):
    p = _write(tmp_path, "name: x\nmatrix: &m [*m]\n")
    with pytest.raises(ConfigError, match="matrix"):
        load_config(p)


def test_config_not_utf8_or_unreadable_is_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the experiment file"):
        load_config(_write(tmp_path, b"name: \xff\xfe\n"))
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="cannot read the experiment file"):
        load_config(tmp_path / ("n" * 5000 + ".yaml"))


# --------------------------------------------------------------------------- .npy models
def _npy_config(tmp_path, true, init=None, **model):
    np.save(tmp_path / "true.npy", true)
    np.save(tmp_path / "init.npy", true if init is None else init)
    m = {"dataset": "npy", "true": "true.npy", "init": "init.npy", "decimate": 1, "crop": None,
         "dh": 50.0, **model}
    return load_config(write_tiny(tmp_path, model=m))


def _good_model(shape=(20, 40)):
    return np.full(shape, 2000.0, np.float32)


@pytest.mark.parametrize(
    "arr, needle",
    [
        (np.full((4, 20, 40), 2000.0, np.float32), "must hold a 2D (nz, nx) real numeric array, got shape (4, 20, 40)"),
        (np.full(40, 2000.0), "got shape (40,)"),
        (np.full((20, 40), True), "dtype bool"),
        (np.full((20, 40), 2000 + 0j), "dtype complex128"),
        (np.full((20, 40), "2000"), "dtype <U4"),
        (np.zeros((0, 40), np.float32), "empty array of shape (0, 40)"),
    ],
)
def test_problem_npy_of_wrong_shape_or_dtype_is_error(tmp_path, arr, needle):
    cfg = _npy_config(tmp_path, arr, _good_model())
    with pytest.raises(ConfigError) as e:
        build_problem(cfg)
    assert "model.true:" in str(e.value) and needle in str(e.value)


def test_problem_npy_with_nan_or_negative_velocity_is_error(tmp_path):
    bad = _good_model()
    bad[3, 7] = np.nan
    bad[5, 1] = np.inf
    with pytest.raises(ConfigError, match=r"model\.init: velocities must be finite \(m/s\): 2 "
                                          r"NaN/Inf value\(s\), the first at \[z, x\] = \[3, 7\]"):
        build_problem(_npy_config(tmp_path, _good_model(), bad))
    neg = _good_model()
    neg[2, 9] = -1500.0
    with pytest.raises(ConfigError, match=r"model\.true: velocities must be positive \(m/s\): "
                                          r"min -1500 at \[z, x\] = \[2, 9\]"):
        build_problem(_npy_config(tmp_path, neg))


def test_problem_npy_models_of_different_shapes_is_error(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.init: shape \(20, 41\) differs"):
        build_problem(_npy_config(tmp_path, _good_model(), _good_model((20, 41))))


def test_problem_unreadable_npy_files_are_errors(tmp_path):
    cfg = _npy_config(tmp_path, _good_model())
    (tmp_path / "true.npy").write_text("not numpy at all")
    with pytest.raises(ConfigError, match=r"model\.true: cannot read .*true\.npy as a \.npy array"):
        build_problem(cfg)
    np.save(tmp_path / "true.npy", _good_model())
    data = (tmp_path / "true.npy").read_bytes()
    (tmp_path / "true.npy").write_bytes(data[: len(data) // 2])  # truncated copy
    with pytest.raises(ConfigError, match=r"model\.true: cannot read"):
        build_problem(cfg)
    np.save(tmp_path / "true.npy", np.array([{"v": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=r"model\.true: cannot read"):
        build_problem(cfg)
    np.savez(tmp_path / "arch.npz", v=_good_model())
    (tmp_path / "arch.npz").rename(tmp_path / "true.npy")
    with pytest.raises(ConfigError, match=r"model\.true: .*is an \.npz archive"):
        build_problem(cfg)


def test_problem_source_above_nyquist_or_delay_past_record_is_error(tmp_path):
    with pytest.raises(ConfigError, match=r"source\.freq: 200 Hz is at or above the Nyquist frequency 1/\(2 grid\.dt\) = 125 Hz"):
        build_problem(load_config(write_tiny(tmp_path, source={"freq": 200.0})))
    with pytest.raises(ConfigError, match=r"source\.delay: 0\.6 s is past the end of the record \(grid\.nt x grid\.dt = 0\.6 s\)"):
        build_problem(load_config(write_tiny(tmp_path, source={"delay": 0.6})))


def test_problem_observed_record_larger_than_memory_is_error(tmp_path):
    cfg = load_config(write_tiny(tmp_path, grid={"nt": 10**12}))
    with pytest.raises(ConfigError, match=r"the observed record needs .* GiB, more than this machine's"):
        build_problem(cfg)


# --------------------------------------------------------------------------- numerics
def test_problem_too_few_points_per_wavelength_warns_with_the_figure(tmp_path):
    # tiny: vmin 1500 m/s, dh 50 m, Ricker 5 Hz -> fmax about 12.6 Hz -> about 2.4 points
    cfg = load_config(write_tiny(tmp_path))
    with pytest.warns(FwiWarning, match=r"2\.\d\d grid points per wavelength \(vmin 1500 m/s, "
                                        r"fmax 12\.\d Hz, dh 50 m\) is below 5, the minimum for spatial_order 4"):
        prob = build_problem(cfg)
    assert len(prob.warnings) == 1 and str(cfg.path) in prob.warnings[0]


def test_problem_enough_points_per_wavelength_is_silent(tmp_path, recwarn):
    # Marmousi at 12.5 m: 1500 m/s / 12.6 Hz / 12.5 m = 9.5 points >= 5
    prob = build_problem(load_config(write_tiny(tmp_path, model={"decimate": 1, "crop": [0, 20, 400, 440]},
                                                grid={"dt": 0.001, "nt": 600})))
    assert prob.warnings == []
    assert not [w for w in recwarn if issubclass(w.category, FwiWarning)]


# --------------------------------------------------------------------------- fuzzing
_SCHEMA_KEYS = [f"{sec}.{k}" for sec, body in TINY.items() if isinstance(body, dict) for k in body]
_KEYS = ["name", "output_dir", "device", "seed", "matrix", "matrix.0", "matrix.0.impl",
         "matrix.0.dtype", "model.typo", "grid"] + _SCHEMA_KEYS

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12),
    st.sampled_from(["true", "no", "c", "eager", "gpu", "disk", "int8", "fp16", "npy", "marmousi",
                     "smooth", "1e400", "-0", "cuda:9", "auto", "x.npy", "~", "[1, 2]"]),
)
_values = st.recursive(_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(st.text(string.ascii_lowercase, max_size=6), kids, max_size=4)),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_config_fuzz_text_raises_only_config_error(tmp_path, text):
    p = _write(tmp_path, text, "fuzz.yaml")
    try:
        load_config(p)
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_config_fuzz_bytes_raise_only_config_error(tmp_path, data):
    p = _write(tmp_path, data, "fuzz.yaml")
    try:
        load_config(p)
    except ConfigError:
        pass


def _set_path(d, dotted: str, value):
    """Set a dotted key of a nested document; skip paths through values or short lists."""
    node = d
    parts = dotted.split(".")
    try:
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
    except (IndexError, ValueError, AttributeError, TypeError):
        return


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(_KEYS), _values), min_size=1, max_size=4))
def test_config_fuzz_values_raise_only_config_error(tmp_path, edits):
    d = tiny_dict()
    for key, value in edits:
        _set_path(d, key, value)
    try:
        text = yaml.safe_dump(d)
    except yaml.YAMLError:
        return
    p = _write(tmp_path, text, "fuzz.yaml")
    try:
        cfg = load_config(p)
    except ConfigError:
        return
    assert cfg.name  # a config that loads is usable: the problem raises only ConfigError too
    try:
        build_problem(cfg)
    except ConfigError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sets=st.lists(st.text(string.printable, max_size=30), max_size=3))
def test_config_fuzz_overrides_raise_only_config_error(tmp_path, sets):
    p = tmp_path / "tiny.yaml"
    if not p.exists():
        write_tiny(tmp_path)
    try:
        load_config(p, sets)
    except ConfigError:
        pass


@settings(max_examples=100, deadline=None)
@given(data=_values)
def test_config_fuzz_validate_any_document_raises_only_config_error(data):
    try:
        validate_config(data, "fuzz")
    except ConfigError:
        pass
