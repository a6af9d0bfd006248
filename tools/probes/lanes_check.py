"""Compiled CUDA (shots in lanes) against compiled CPU for 1-5 and 8 shots, both strategies:
relative L2 of the record and the gradient (should be ~1e-6). Prints one line per case."""
import sys
import traceback

import numpy as np
import torch

from fwi_cli.equations import Acoustic
from fwi_cli.propagator import BoundaryOptions, MemoryOptions, Propagator
from fwi_cli.signal import ricker
from fwi_cli.datasets import load_marmousi

v = load_marmousi("smooth")[::4, ::4][:40, 100:170].copy()
nz, nx = v.shape
nt, dt = 300, 0.004
wav = ricker(np.arange(nt) * dt - 0.15, 6.0)


def run(device, strategy, nshots, order=4):
    mem = MemoryOptions(strategy, BoundaryOptions(storage="gpu") if strategy == "boundary" else None)
    p = Propagator(Acoustic(device, order), (nz, nx), 50.0, dt, nt, pml_width=10, impl="c", memory=mem)
    vv = torch.tensor(v, device=device, requires_grad=True)
    src = np.stack([np.array([4 + 8 * s, 1 + s % 3]) for s in range(nshots)])
    rx = np.arange(0, nx, 3)
    rec = np.stack([np.stack([rx, np.full(len(rx), 3)], 1)] * nshots)
    r = p(wav, src, rec, [vv])
    (0.5 * r.pow(2).sum()).backward()
    return r.detach().cpu(), vv.grad.detach().cpu()


def rel(a, b):
    return float((a - b).norm() / b.norm())


for strategy in ("full", "boundary"):
    for nshots in (1, 2, 3, 5, 8):
        try:
            rg, gg = run("cuda", strategy, nshots)
            rc, gc = run("cpu", strategy, nshots)
            print(f"{strategy} B={nshots}: record {rel(rg, rc):.2e} grad {rel(gg, gc):.2e}", flush=True)
        except Exception:
            print(f"{strategy} B={nshots}: FAILED", flush=True)
            traceback.print_exc(limit=-3, file=sys.stdout)
