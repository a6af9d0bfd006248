# fwi — set-up, tests and the main jobs. `make install` then `make test` on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# A CPU wheel of torch lies on this kind of machine; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-fast lint smoke bench cuda-check clean

install:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'

test:
	$(BIN)/python -m pytest -q tests

lint:
	$(BIN)/ruff check fwi_cli tests

smoke:
	$(BIN)/fwi sweep configs/smoke.yaml
	$(BIN)/fwi report runs/smoke

bench:
	$(BIN)/python -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8,c-cpu-int8,c-disk-int8,eager-gpu-fp32 --json runs/bench_seed.json

# nvcc compile check of the CUDA sources (no GPU needed); run by the test suite when nvcc exists.
cuda-check:
	$(BIN)/python -m fwi_cli.propagator.backend --cuda-check

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache runs/*/ 
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
