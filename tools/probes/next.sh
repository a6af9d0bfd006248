# First device call of a session (after `source tools/probes/dev_prelude.sh`), ~4 min: the
# standard check of the shipped kernels (run W8 of docs/benchmarks.md is its last output).
# 1. all GPU tests
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | tail -1
# 2. the whole seed table and the big case
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy 2>&1 | grep "^| seed"
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep "^| big"
# 3. bytes through L2 per kernel (W8: 234 MB per step)
bash tools/probes/ncu3.sh 2>&1 | grep -E "==|lts__t_bytes|gpu__time"
