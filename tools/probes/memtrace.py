"""Live CUDA allocations at the peak of bench-style seed iterations (one config per argv)."""
import sys, json, os, collections, numpy as np, torch
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda')
p = bench.make_problem('seed'); bench.model_observed(p, dev)
for cfg in sys.argv[1:]:
    storage, dtype = cfg.split('-')
    torch.cuda.empty_cache(); torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=500000, stacks='python')
    torch.cuda.reset_peak_memory_stats()
    solver = Propagator(Acoustic(device=dev, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt,
                        pml_width=p.pml, impl='c', memory=bench.memory_options(storage, dtype))
    vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
    opt = torch.optim.Adam([vp], lr=25.0, eps=1e-16)
    rng = np.random.default_rng(0)
    for it in range(3):
        idx = rng.choice(20, 8, replace=False)
        opt.zero_grad()
        rec = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
        loss = (rec - p.observed[idx]).pow(2).mean()
        loss.backward(); opt.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    tr = snap['device_traces'][0]
    live = {}; cur = 0; best = (0, None)
    for k, e in enumerate(tr):
        a = e['action']
        if a == 'alloc':
            live[e['addr']] = e; cur += e['size']
        elif a == 'free_requested' and e['addr'] in live:
            cur -= live.pop(e['addr'])['size']
        if cur > best[0]:
            best = (cur, dict(live))
    def where(e):
        fr = [f for f in e.get('frames', []) if 'fwi_cli' in f['filename'] or 'memtrace' in f['filename']]
        return ' < '.join(f"{os.path.basename(f['filename'])}:{f['line']}:{f['name']}" for f in fr[:3]) or '?'
    print(f'== {cfg}: peak above base {peak/1e6:.1f} MB; traced live at peak {best[0]/1e6:.1f} MB (trace starts after base)')
    agg = collections.Counter()
    for e in best[1].values():
        agg[where(e)] += e['size']
    for w, s in agg.most_common(25):
        print(f'{s/1e6:8.2f} MB  {w}')
    del solver, vp, opt, rec, loss
