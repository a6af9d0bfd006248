"""GPU experiments: time split fwd/bwd, and source-cell freezing effect on the seed trajectory."""
import sys, time, json, numpy as np, torch
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda')
p = bench.make_problem('seed'); bench.model_observed(p, dev)
out = {}
# fwd / bwd split for c gpu fp32
solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=50, impl='c', memory=bench.memory_options('gpu','fp32'))
vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
idx = np.arange(8)
for rep in range(4):
    torch.cuda.synchronize(); t0=time.perf_counter()
    r = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp]); torch.cuda.synchronize(); t1=time.perf_counter()
    (r - p.observed[idx]).pow(2).mean().backward(); torch.cuda.synchronize(); t2=time.perf_counter()
    vp.grad=None
out['fwd_s']=t1-t0; out['bwd_s']=t2-t1
with torch.no_grad():
    torch.cuda.synchronize(); t0=time.perf_counter(); solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp.detach()]); torch.cuda.synchronize(); out['fwd_nograd_s']=time.perf_counter()-t0
print(out, flush=True)
# trajectories: contract vs source cells frozen
def invert(freeze):
    solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=50, impl='c', memory=bench.memory_options('gpu','fp32'))
    vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
    if freeze:
        mask = torch.ones_like(vp); mask[p.sources[:,1], p.sources[:,0]] = 0
        vp.register_hook(lambda g: g * mask)
    opt = torch.optim.Adam([vp], lr=25.0, eps=1e-16); rng = np.random.default_rng(0)
    vt = torch.tensor(p.vp_true, device=dev); losses=[]; rm=[float((vp-vt).pow(2).mean().sqrt())]
    for it in range(30):
        i = rng.choice(20, 8, replace=False); opt.zero_grad()
        loss = (solver(p.wavelet, p.sources[i], p.receivers[i], models=[vp]) - p.observed[i]).pow(2).mean()
        loss.backward(); opt.step(); losses.append(float(loss)); rm.append(float((vp.detach()-vt).pow(2).mean().sqrt()))
    return dict(loss0=losses[0], loss_end=losses[-1], ratio=losses[0]/losses[-1], rmse0=rm[0], rmse_end=rm[-1],
                vsrc=[float(vp[z,x]) for x,z in p.sources[:4]])
for f in (False, True):
    out[f'freeze_{f}'] = invert(f); print(f, out[f'freeze_{f}'], flush=True)
import os; json.dump(out, open(os.environ['OUT']+'/exp.json','w'), indent=1)
