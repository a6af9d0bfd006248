# Session 2026-11-29, 23:00, fourth call: the review fixes of the host tiers (tail held, buffer
# budget, writer errors, closer thread). All GPU tests, the whole seed table, big, tiers_ab.
set -u
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 7 --json "$OUT/seed.json" 2>&1 | grep "^| seed" | sort -u
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 --json "$OUT/big.json" 2>&1 | grep "^| big" | sort -u
python3 tools/probes/tiers_ab.py "$OUT" 2 2>&1 | grep -E "^\| |^median|profiled"
python3 -m fwi_cli.bench --problem seed --configs c-disk-fp16,c-disk-bf16,c-disk-int8,c-cpu-fp16 --iters 7 2>&1 | grep "^| seed" | sort -u
