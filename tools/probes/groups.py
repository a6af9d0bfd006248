"""Shots in groups: one propagator call per group, one backward (argv: problem storage-dtype B g1/g2/..)."""
import sys, time, statistics, numpy as np, torch
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
name, cfg, B = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage, dtype = cfg.split('-')
p = bench.make_problem(name)
solver = Propagator(Acoustic(device=dev, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt,
                    pml_width=p.pml, impl='c', memory=bench.memory_options(storage, dtype))
vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
idx = np.random.default_rng(0).choice(len(p.sources), B, replace=False)
ref = None
for spec in sys.argv[4:]:
    sizes = [int(s) for s in spec.split('/')]
    assert sum(sizes) == B
    times = []
    for it in range(4):
        sync(); t0 = time.perf_counter()
        vp.grad = None
        start, loss = 0, 0.0
        for n in sizes:
            sel = idx[start:start + n]; start += n
            rec = solver(p.wavelet, p.sources[sel], p.receivers[sel], models=[vp])
            loss = loss + rec.pow(2).sum()
        loss.backward()
        sync(); times.append(time.perf_counter() - t0)
    g = vp.grad.detach().clone()
    if ref is None:
        ref = g
    rel = float((g - ref).norm() / ref.norm())
    print(f"{name} {cfg} B={B} groups {spec:>12}: {statistics.median(times[1:]):.4f} s "
          f"(min {min(times[1:]):.4f}) per forward+gradient; grad rel vs first {rel:.1e}", flush=True)
