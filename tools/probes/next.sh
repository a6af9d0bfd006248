# First device call of the next session (after `source tools/probes/dev_prelude.sh`), ~3 min:
# 1. GPU tests of the stores and the compiled path (this session's CPU-only commits d9eddde, d67f8d1,
#    94b0009 changed the cpu/disk tiers' block runs and the disk read-ahead)
python3 -m pytest -q -m gpu tests/test_storage_tiers.py tests/test_compiled.py -p no:cacheprovider 2>&1 | tail -1
# 2. host tiers after the block runs (before, run V2: cpu fp16 0.117, disk fp16 0.123, bf16 0.109, int8 0.107 s)
python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-cpu-fp16,c-cpu-bf16,c-cpu-int8,c-disk-fp16,c-disk-bf16,c-disk-int8 --iters 5 2>&1 | grep "^| seed"
# 3. is the CPU thread still the bottleneck? (run V6: cpu fp16 148.5 ms vs gpu fp16 97.2 ms on that machine)
python3 tools/probes/tierprof.py gpu-fp16 cpu-fp16 disk-int8 2>&1 | grep -v -i warn | head -30
# 4. branch chunk-graphs (ae7710c, compile-checked only; .devsite/chunk-graphs.patch = git diff main...chunk-graphs):
#    FWI_GRAPHS=1 replays each chunk's launches from a CUDA graph. GPU tests (incl. the bit-identity test
#    test_compiled_cuda_chunk_graphs_change_no_bit), then an A/B; merge if exact and faster.
patch -s -p1 < .devsite/chunk-graphs.patch && python3 -m fwi_cli.propagator.backend 2>&1 | tail -1
python3 -m pytest -q -m gpu tests/test_compiled.py tests/test_storage_tiers.py -p no:cacheprovider 2>&1 | tail -1
for G in 0 1; do echo "FWI_GRAPHS=$G"; FWI_GRAPHS=$G python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8,c-cpu-fp16,c-cpu-int8,c-disk-int8 --iters 5 2>&1 | grep "^| seed"; done
patch -s -R -p1 < .devsite/chunk-graphs.patch
