# First device call of a session (after `source tools/probes/dev_prelude.sh`), ~5 min: the
# standard check of the shipped kernels. Last outputs: W20 (whole table), W22 (int8 rows and the
# GPU tests of the fused int8 codec), docs/benchmarks.md. Planned for the next session: this on
# main, then `bash tools/probes/branches.sh patches/*.patch` for the three compile-checked
# branches (exp-fp16-fused: fused fp16 codec; exp-lanes-graphs: CUDA graphs of a chunk with
# FWI_GRAPHS=1; exp-lanes-rows: 2 rows per thread with -DFWI_ROWS=2); merge what passes and wins.
# 1. all GPU tests (the codec tests and the CUDA batches of 1, 3, 4 shots included)
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
# 2. the whole seed table (JSON with the accuracy under $OUT) and the big case
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy --json "$OUT/seed.json" 2>&1 | grep "^| seed"
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep "^| big"
# 3. where an iteration's time goes, per kernel (W18: 30.7 us per step)
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32 --iters 3 --kernels 2>&1 | grep -E "k_|^\| seed" | head -8
