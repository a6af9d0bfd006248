# Device call X5: early interior blocks (k_main / k_adj_main skip the PDL wait, FWI_EARLY) —
# GPU tests, seed A/B, big A/B, timeline, then the whole seed table with the faster setting.
source tools/probes/dev_prelude.sh
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
best=1; best_t=9
for e in 0 1 0 1; do
  line=$(FWI_EARLY=$e python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8 --iters 7 2>&1 | grep -E "^\| seed" | head -2)
  echo "== FWI_EARLY=$e"; echo "$line"
done
for e in 0 1; do echo "== big FWI_EARLY=$e"; FWI_EARLY=$e python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep -E "^\| big" | head -2; done
python3 tools/probes/gaps.py $OUT/trace.json 2>&1 | grep -v -i warn | grep -v "^  "
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy --json "$OUT/seed.json" 2>&1 | grep "^| seed" | head -10
