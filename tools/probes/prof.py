"""Profile one seed c-gpu-fp32 iteration: per-kernel CUDA time (torch.profiler) + fwd/bwd wall."""
import os, sys, time, json, numpy as np, torch
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda')
p = bench.make_problem(sys.argv[1] if len(sys.argv) > 1 else 'seed'); bench.model_observed(p, dev)
dtype = sys.argv[2] if len(sys.argv) > 2 else 'fp32'
storage = sys.argv[3] if len(sys.argv) > 3 else 'gpu'
solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=p.pml, impl='c',
                    memory=bench.memory_options(storage, dtype))
vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
idx = np.arange(8)
def it():
    r = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp]); torch.cuda.synchronize(); t1 = time.perf_counter()
    (r - p.observed[idx]).pow(2).mean().backward(); torch.cuda.synchronize()
    vp.grad = None
    return t1
res = []
for rep in range(4):
    torch.cuda.synchronize(); t0 = time.perf_counter(); t1 = it(); t2 = time.perf_counter()
    res.append((t1 - t0, t2 - t1))
print('fwd/bwd s:', res[-3:], flush=True)
if os.environ.get('NOPROF'):
    sys.exit(0)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
    it()
print(prof.key_averages().table(sort_by='cuda_time_total', row_limit=25), flush=True)
