python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devsite/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -m fwi_cli.propagator.backend 2>&1 | tail -3
