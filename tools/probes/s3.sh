# Session 2026-11-29, 23:00, third call: the host-tier pipeline with four writers, six host buffers and
# the files closed on the closer thread. All GPU tests, A/B (old / S2 / new), the whole seed table
# with the accuracy, the big case, and the 14-job sweep end to end.
set -u
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
python3 tools/probes/tiers_ab.py "$OUT" 2 2>&1 | grep -v -i warn | grep -v "^  "
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 7 --accuracy --json "$OUT/seed.json" 2>&1 | grep "^| seed" | sort -u
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 --json "$OUT/big.json" 2>&1 | grep "^| big" | sort -u
t0=$(date +%s.%N); python3 -m fwi_cli sweep configs/marmousi_bdy.yaml -q --set output_dir=/tmp/runs/s3 > "$OUT/sweep.log" 2>&1; rc=$?; t1=$(date +%s.%N)
echo "sweep rc=$rc wall $(python3 -c "print(round($t1 - $t0, 1))") s"; tail -20 "$OUT/sweep.log"
