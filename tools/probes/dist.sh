# Multi-GPU measurements for #10 (after dev_prelude). Runs on nvidia-h200-x2.
nvidia-smi -L; nvidia-smi topo -m 2>&1 | head -4; env | grep -E 'NCCL|MULTICAST|NVSHMEM'
python3 -c 'import torch; print("gpus", torch.cuda.device_count(), torch.__version__)'
C=configs/marmousi_bdy.yaml; R=/tmp/runs; J=marmousi_bdy
ts() { date +%s.%N; }
timeout 200 python3 -m pytest -q tests/test_distributed.py -p no:cacheprovider 2>&1 | tail -3
for B in 8 20; do
 for D in fp32 int8; do
  timeout 60 python3 -m fwi_cli invert $C --impl c --storage gpu --dtype $D -q --set output_dir=$R/g1b$B --set inversion.batch_shots=$B 2>&1 | tail -2
  timeout 60 torchrun --standalone --nproc-per-node 2 -m fwi_cli invert $C --impl c --storage gpu --dtype $D -q --set output_dir=$R/g2b$B --set inversion.batch_shots=$B 2>&1 | tail -2
  python3 tools/probes/distcmp.py 1gpu-b$B-$D=$R/g1b$B/$J/c-gpu-$D.zarr 2gpu-b$B-$D=$R/g2b$B/$J/c-gpu-$D.zarr
 done
done
t0=$(ts); timeout 150 python3 -m fwi_cli sweep $C -q --set output_dir=$R/s2 --gpus 0,1 2>&1 | tail -3; t1=$(ts)
echo "SWEEP 2 GPUs (--gpus 0,1) end to end: $(python3 -c "print(round($t1-$t0,1))") s"
t0=$(ts); timeout 200 python3 -m fwi_cli sweep $C -q --set output_dir=$R/s1 2>&1 | tail -3; t1=$(ts)
echo "SWEEP 1 GPU sequential end to end: $(python3 -c "print(round($t1-$t0,1))") s"
python3 - <<'PY'
import glob, numpy as np
from fwi_cli.experiment import store
for f in sorted(glob.glob('/tmp/runs/s1/marmousi_bdy/*-*-*.zarr')):
    a = store.read_job(f); b = store.read_job(f.replace('/s1/', '/s2/'))
    print(f.split('/')[-1], a.status, b.status, 'vp_final equal' if np.array_equal(a.vp_final, b.vp_final) else
          f'vp_final rel {np.linalg.norm(a.vp_final-b.vp_final)/np.linalg.norm(a.vp_final):.1e}',
          f'iter med {np.median(a.iter_time[2:])*1e3:.0f}/{np.median(b.iter_time[2:])*1e3:.0f} ms')
PY
