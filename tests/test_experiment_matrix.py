"""Job matrix: product within a block, seed order, labels, duplicates, --only globs."""

from __future__ import annotations

import pytest

from fwi_cli.errors import ConfigError
from fwi_cli.experiment import Job, expand, select, validate_config

DESIGN_MATRIX = [
    {"impl": "c", "storage": "gpu", "dtype": "fp32"},
    {"impl": "c", "storage": ["gpu", "cpu", "disk"], "dtype": ["fp16", "bf16", "int8"]},
    {"impl": "eager", "storage": "gpu", "dtype": ["fp32", "fp16", "bf16", "int8"]},
]


def _blocks(matrix):
    return validate_config({"name": "m", "matrix": matrix}).matrix


def test_matrix_design_blocks_expand_in_seed_order():
    seed = ([("c", "gpu", "fp32")]
            + [("c", s, d) for s in ("gpu", "cpu", "disk") for d in ("fp16", "bf16", "int8")]
            + [("eager", "gpu", d) for d in ("fp32", "fp16", "bf16", "int8")])
    jobs = expand(_blocks(DESIGN_MATRIX))
    assert [(j.impl, j.storage, j.dtype) for j in jobs] == seed


def test_matrix_product_within_block_last_key_fastest():
    jobs = expand(_blocks([{"impl": ["c", "eager"], "storage": ["gpu", "cpu"], "dtype": "int8"}]))
    assert [j.label for j in jobs] == ["c·gpu·int8", "c·cpu·int8", "eager·gpu·int8", "eager·cpu·int8"]


def test_matrix_labels_dirs_and_names_round_trip():
    job = Job("c", "gpu", "int8")
    assert job.label == "c·gpu·int8" and job.dirname == "c-gpu-int8"
    assert job.store_name == "c-gpu-int8.zarr"
    assert Job.from_name("c·gpu·int8") == job == Job.from_name("c-gpu-int8.zarr")
    with pytest.raises(ValueError, match="not a job name"):
        Job.from_name("c-gpu")


def test_matrix_duplicate_jobs_are_errors():
    with pytest.raises(ConfigError, match=r"matrix\.1: job c·gpu·fp16 duplicates one of matrix\.0"):
        _blocks([{"impl": "c", "storage": "gpu", "dtype": "fp16"}, DESIGN_MATRIX[1]])
    with pytest.raises(ConfigError, match=r"matrix\.0: job c·gpu·fp32 is listed twice"):
        _blocks([{"impl": "c", "storage": "gpu", "dtype": ["fp32", "fp32"]}])


def test_matrix_empty_is_error():
    with pytest.raises(ConfigError, match="matrix: must hold at least one block"):
        expand([], "x.yaml")


def test_matrix_select_globs_on_labels_and_dirs():
    jobs = expand(_blocks(DESIGN_MATRIX))
    assert [j.label for j in select(jobs, "c-gpu-*")] == [
        "c·gpu·fp32", "c·gpu·fp16", "c·gpu·bf16", "c·gpu·int8"]
    assert [j.dirname for j in select(jobs, "*·disk·int8,eager-*-fp32")] == [
        "c-disk-int8", "eager-gpu-fp32"]
    assert select(jobs, None) == jobs
    with pytest.raises(ConfigError, match="--only 'x-\\*' matches no job"):
        select(jobs, "x-*", "cfg.yaml")
