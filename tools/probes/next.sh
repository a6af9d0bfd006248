# First device call of a session (after `source tools/probes/dev_prelude.sh`), ~4 min: the
# standard check of the shipped kernels. Last outputs: S3 (docs/benchmarks.md, first section):
# seed c·gpu·fp32 0.0584 s, big 0.2929 s, cpu tier 0.059-0.065 s, disk tier 0.064-0.069 s.
# 1. all GPU tests
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
# 2. the whole seed table (JSON with the accuracy under $OUT) and the big case
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy --json "$OUT/seed.json" 2>&1 | grep "^| seed"
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep "^| big"
# 3. the iteration's timeline: kernels busy against the span, gaps (X4: 2.1 ms, mostly the preamble)
python3 tools/probes/gaps.py "$OUT/trace.json" 2>&1 | grep -v -i warn | grep -v "^  "
# 4. the host tiers, where the machines vary most (S3: disk 0.064-0.069 s, cpu 0.059-0.065 s):
python3 tools/probes/tiers_ab.py "$OUT" 2 2>&1 | grep -E "^\| |^median|profiled"
