# Device call X2 (session of 2026-11-29 night): k_grad_p1 with its PML Abar staged in shared
# memory (FWI_GRAD_STAGE=1, a temporary runtime knob) against the per-neighbour loads, the big
# case's shot groups with lanes, then tile shapes (FWI_BX x FWI_BY build variants).
# Usage (device): source tools/probes/dev_prelude.sh; bash tools/probes/stage_tiles.sh
b() { python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32,c-gpu-int8 --iters 7 2>&1 | grep -E "^\| seed"; }
for st in 0 1; do echo "== 32x8 stage $st"; FWI_GRAD_STAGE=$st b; done
echo "== GPU tests of test_compiled with stage 1"
FWI_GRAD_STAGE=1 python3 -m pytest -q -m gpu tests/test_compiled.py -p no:cacheprovider 2>&1 | grep -E "^FAILED|passed|failed" | head -6
for st in 0 1; do echo "== kernels stage $st"
  FWI_GRAD_STAGE=$st python3 -m fwi_cli.bench --problem seed --configs c-gpu-fp32 --iters 3 --kernels 2>&1 | grep -E "k_" | head -6; done
for sg in auto off; do echo "== big stage 1, shot groups $sg"
  if [ $sg = auto ]; then unset FWI_SHOT_GROUP; else export FWI_SHOT_GROUP=$sg; fi
  FWI_GRAD_STAGE=1 python3 -m fwi_cli.bench --problem big --configs c-gpu-fp32 --iters 3 2>&1 | grep -E "^\| big"; done
unset FWI_SHOT_GROUP
for d in "-DFWI_BX=16 -DFWI_BY=16" "-DFWI_BX=32 -DFWI_BY=16" "-DFWI_BX=64 -DFWI_BY=4"; do
  for st in 0 1; do echo "== [$d] stage $st"; FWI_CUDA_DEFINES="$d" FWI_GRAD_STAGE=$st b; done; done
