"""Does row alignment of the storage grid matter? Forward + gradient time per padded cell-step of
seed-like problems (141 rows at 25 m, 8 shots, nt 1000, c-gpu-fp32) whose storage row pitch
nxs = nx + 2 pml + 4 and interior start column pml + 2 are, or are not, multiples of 8 floats
(32-byte sectors) or 32 floats (128-byte lines). Compare rows of equal pml only (the PML share of
the cells changes the cost per cell). Caveat (run W14b): nx also changes the number of 32-column
tiles (672 + 128 columns fill 25 tiles exactly, 673 + 128 need a 26th), so a per-cell gain here
may be tile quantisation, not alignment; branch exp-row-align (63fc4cd) measured the alignment alone (W15).

    python3 tools/probes/align.py
"""
import time

import numpy as np
import torch

from fwi_cli import bench
from fwi_cli.datasets import load_marmousi
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
from fwi_cli.signal import ricker

dev = torch.device("cuda")
smooth = load_marmousi("smooth")[::2, ::2]
nt, nshots, dt = 1000, 8, 0.002
t = np.arange(nt, dtype=np.float32) * dt
wav = ricker(t - 0.2, f=5.0)
print("pml nx | nxs nxs%8 nxs%32 start%8 | s fwd+bwd | us/step | ps/cell-step")
for pml, nx in [(50, 681), (50, 684), (54, 681), (54, 680), (62, 673), (62, 672), (62, 681), (62, 680)]:
    v = smooth[:, :nx] if nx <= smooth.shape[1] else np.pad(smooth, ((0, 0), (0, nx - smooth.shape[1])), mode="edge")
    v = np.ascontiguousarray(v, dtype=np.float32)
    nz = v.shape[0]
    src = np.stack([np.linspace(nx * 0.1, nx * 0.9, nshots).astype(np.int64), np.full(nshots, 2)], 1)
    rx = np.linspace(0, nx - 1, 200).astype(np.int64)
    rec = np.repeat(np.stack([rx, np.full(200, 4)], 1)[None], nshots, 0)
    p = Propagator(Acoustic(device=dev), shape=(nz, nx), dh=25.0, dt=dt, nt=nt, pml_width=pml, impl="c",
                   memory=bench.memory_options("gpu", "fp32"))
    vv = torch.tensor(v, device=dev, requires_grad=True)
    times = []
    for _ in range(4):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = p(wav, src, rec, models=[vv])
        r.pow(2).mean().backward()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        vv.grad = None
    s = float(np.median(times[1:]))
    nxs, nzs = nx + 2 * pml + 4, nz + 2 * pml + 4
    cells = (nz + 2 * pml) * (nx + 2 * pml) * nshots
    print(f"{pml} {nx} | {nxs} {nxs % 8} {nxs % 32} {(pml + 2) % 8} | {s:.4f} | {s / nt * 1e6:.1f} | "
          f"{s / nt / cells * 1e12:.2f}", flush=True)
