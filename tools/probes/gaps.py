"""Is the seed iteration host-bound? Wall times of its parts against the kernels' device time.

Usage (device): python3 tools/probes/gaps.py [trace.json]

1. the host's cost per launch: a forward on a tiny grid (the GPU idles, the host launches);
2. the seed batch (c, gpu, fp32): forward alone (no_grad), forward + backward, each as wall time
   with PDL on, and with FWI_PDL=0;
3. one forward + backward under torch.profiler with PDL on: the union of kernel intervals, the
   idle gaps between kernels (sum, count over 2 us) and which kernel pairs they sit between.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from fwi_cli.bench import make_problem, memory_options, model_observed
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator

dev = torch.device("cuda")


def wall(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return min(ts)


# 1. host cost per launch
nt = 4000
tiny = Propagator(Acoustic(device=dev, spatial_order=4), shape=(8, 8), dh=10.0, dt=1e-3, nt=nt, pml_width=4,
                  impl="c")
w = torch.zeros(nt, device=dev)
w[10] = 1.0
s1 = np.array([[3, 3]])
r1 = np.array([[[4, 4]]])
v8 = torch.full((8, 8), 2000.0, device=dev)
with torch.no_grad():
    t = wall(lambda: tiny(w, s1, r1, models=[v8]))
print(f"tiny forward: {t * 1e3:.1f} ms for {nt} steps = {t / nt * 1e6:.2f} us per step (2 launches per step)")

# 2. the seed batch
p = make_problem("seed")
model_observed(p, dev)
solver = Propagator(Acoustic(device=dev, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt,
                    pml_width=p.pml, impl="c", memory=memory_options("gpu", "fp32"))
vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
idx = np.arange(p.batch)
wav = torch.tensor(p.wavelet, device=dev)


def fwd():
    with torch.no_grad():
        solver(wav, p.sources[idx], p.receivers[idx], models=[vp])


def fwd_bwd():
    idx_dev = torch.from_numpy(idx).to(dev)  # before the forward, as the runner and bench do
    rec = solver(wav, p.sources[idx], p.receivers[idx], models=[vp])
    (rec - p.observed[idx_dev]).pow(2).mean().backward()
    vp.grad = None


for pdl in ("1", "0"):
    os.environ["FWI_PDL"] = pdl
    tf, tb = wall(fwd), wall(fwd_bwd)
    print(f"PDL={pdl}: forward {tf * 1e3:.1f} ms ({tf / p.nt * 1e6:.2f} us/step), forward+backward "
          f"{tb * 1e3:.1f} ms, backward alone ~{(tb - tf) * 1e3:.1f} ms ({(tb - tf) / p.nt * 1e6:.2f} us/step)")
os.environ["FWI_PDL"] = "1"

# 3. the timeline under the profiler (CUPTI slows the host somewhat)
from torch.profiler import ProfilerActivity, profile  # noqa: E402

fwd_bwd()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
    fwd_bwd()
    torch.cuda.synchronize()
path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/trace.json"
prof.export_chrome_trace(path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timeline import timeline  # noqa: E402

print(timeline(path))
