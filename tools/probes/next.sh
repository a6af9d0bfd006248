# First device call of the next session (after `source tools/probes/dev_prelude.sh`), ~4 min:
# 1. all GPU tests on the current kernels (lazy pass 3, 17635db; CPU twin 412145e is CPU-only)
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | tail -1
# 2. the whole seed table after the lazy pass 3 (run W6 measured only gpu fp32/int8 and cpu int8)
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy 2>&1 | grep "^| seed"
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep "^| big"
# 3. bytes through L2 per kernel now (run W5 counted 248 MB per step with k_p3)
bash tools/probes/ncu3.sh 2>&1 | grep -E "==|lts__t_bytes|gpu__time"
# 4. is a whole-shot-on-chip step viable? (docs/internals.md, "A sketch of that design")
for o in "" "-DCLUSTER=8 -DV_SMEM=0"; do nvcc -O3 -std=c++17 -arch=sm_90 $o tools/probes/cluster_probe.cu -o /tmp/cp && /tmp/cp; done
