"""Sensitivity of the seed trajectory to CPML parameters (investigation for issue 9)."""
import json, os, numpy as np, torch
from fwi_cli import bench
from fwi_cli.propagator import grid, Propagator
from fwi_cli.equations import Acoustic
dev = torch.device('cuda')
def invert(R=1e-5, pml_freq=None, pml=50):
    grid.PML_REFLECTION = R
    p = bench.make_problem('seed'); p.pml = pml
    obs = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=pml, impl='c', pml_freq=pml_freq)
    with torch.no_grad(): observed = obs(p.wavelet, p.sources, p.receivers, models=[torch.tensor(p.vp_true, device=dev)])
    solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=pml, impl='c', memory=bench.memory_options('gpu','fp32'), pml_freq=pml_freq)
    vp = torch.tensor(p.vp_init, device=dev, requires_grad=True); vt = torch.tensor(p.vp_true, device=dev)
    opt = torch.optim.Adam([vp], lr=25.0, eps=1e-16); rng = np.random.default_rng(0); L=[]
    for it in range(30):
        i = rng.choice(20, 8, replace=False); opt.zero_grad()
        loss = (solver(p.wavelet, p.sources[i], p.receivers[i], models=[vp]) - observed[i]).pow(2).mean(); loss.backward(); opt.step(); L.append(float(loss))
    return dict(R=R, pml_freq=pml_freq, pml=pml, loss0=L[0], loss_end=L[-1], ratio=L[0]/L[-1], rmse_end=float((vp.detach()-vt).pow(2).mean().sqrt()))
out = [invert(), invert(R=1e-3), invert(R=1e-8), invert(pml_freq=1e-6), invert(pml=100)]
for o in out: print(o, flush=True)
json.dump(out, open(os.environ['OUT'] + '/exp2.json', 'w'), indent=1)
