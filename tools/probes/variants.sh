# Kernel build variants (FWI_CUDA_DEFINES, backend.py) on the seed problem, then the standard
# check with the fastest: GPU tests, the whole seed table, the big case. ~8 min on the H200.
# Usage (device): source tools/probes/dev_prelude.sh; bash tools/probes/variants.sh "A" "B" ...
best=""; best_t=9
for d in "$@"; do
  line=$(FWI_CUDA_DEFINES="$d" python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8 --iters 7 2>&1 | grep -E "^\| seed" | head -2)
  echo "== [$d]"; echo "$line"
  t=$(echo "$line" | head -1 | awk -F'|' '{print $4}' | tr -d ' ')
  if python3 -c "import sys; sys.exit(0 if float('$t') < float('$best_t') else 1)"; then best="$d"; best_t=$t; fi
done
echo "== best [$best] $best_t"
export FWI_CUDA_DEFINES="$best"
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -5
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy --json "$OUT/seed_final.json" 2>&1 | grep -E "^\| seed" | head -10
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 --json "$OUT/big_final.json" 2>&1 | grep -E "^\| big" | head -2
