# Device call X4: GPU tests, the whole seed table, big, and the iteration's timeline (gaps.py)
# after the host-sync changes (87da0c2) and the fused fp16 codec merge.
source tools/probes/dev_prelude.sh
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy --json "$OUT/seed.json" 2>&1 | grep "^| seed"
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 --json "$OUT/big.json" 2>&1 | grep "^| big"
python3 tools/probes/gaps.py $OUT/trace.json 2>&1 | grep -v -i warn | grep -v "^  "
