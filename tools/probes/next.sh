# First device call of a session (after `source tools/probes/dev_prelude.sh`), ~4 min: the
# standard check of the shipped kernels. Last outputs: X6 (GPU tests, A/B), X7 (whole table),
# docs/benchmarks.md. The seed gpu·fp32 row and the big case sit at their targets within the
# spread between lent machines (0.0591-0.0603 s, 0.2975-0.3024 s); the disk rows vary most.
# 1. all GPU tests
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -8
# 2. the whole seed table (JSON with the accuracy under $OUT) and the big case
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-fp16,c-gpu-bf16,c-gpu-int8,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 --accuracy --json "$OUT/seed.json" 2>&1 | grep "^| seed"
python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32,c-gpu-int8 --iters 3 2>&1 | grep "^| big"
# 3. the iteration's timeline: kernels busy against the span, gaps (X4: 2.1 ms, mostly the preamble)
python3 tools/probes/gaps.py "$OUT/trace.json" 2>&1 | grep -v -i warn | grep -v "^  "
# 4. the branch prepared last session (compile-checked, CPU-tested): interior tiles launched first
#    (exp-early-order; FWI_TILE_ORDER=rows gives the old order in the same build). Here, first:
#    mkdir -p patches && git diff main exp-early-order > patches/exp-early-order.patch
#    then on the device: bash tools/probes/branches.sh patches/exp-early-order.patch
#    (and, in that tree, FWI_TILE_ORDER=rows for the A/B within one build).
