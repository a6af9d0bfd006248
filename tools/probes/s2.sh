# Session 2026-11-29, 23:00, second call: the host-tier pipeline (prefetch, disk tail, writers, no wait at
# finish_forward) and the merged interior-first tile order. GPU tests, A/B probe, gpu rows, big.
set -u
python3 -m pytest -q -m gpu tests/test_storage_tiers.py tests/test_compiled.py tests/test_bench.py -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
python3 tools/probes/tiers_ab.py "$OUT" 2 2>&1 | grep -v -i warn
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 7 --json "$OUT/seed.json" 2>&1 | grep "^| seed" | sort -u
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep "^| big" | sort -u
