"""Where a host tier's extra time goes: per config, wall of one iteration, GPU kernel sum, memcpy sum,
gaps; then cProfile (main thread) of cpu-fp16. argv: configs like gpu-fp16 cpu-fp16."""
import cProfile, pstats, sys, time, numpy as np, torch
from torch.profiler import profile, ProfilerActivity
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda'); p = bench.make_problem('seed'); bench.model_observed(p, dev)
for cfg in sys.argv[1:]:
    storage, dtype = cfg.split('-')
    solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=p.pml, impl='c',
                        memory=bench.memory_options(storage, dtype))
    vp = torch.tensor(p.vp_init, device=dev, requires_grad=True); idx = np.arange(8)
    def it():
        r = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
        (r - p.observed[idx]).pow(2).mean().backward(); torch.cuda.synchronize(); vp.grad = None
    for _ in range(2): it()
    ts = []
    for _ in range(3):
        t = time.perf_counter(); it(); ts.append(time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t = time.perf_counter(); it(); wall_prof = time.perf_counter() - t
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kern = sum(e.device_time for e in ev if 'emcpy' not in e.name and 'emset' not in e.name) / 1e3
    mcpy = sum(e.device_time for e in ev if 'emcpy' in e.name) / 1e3
    other = {}
    for e in ev:
        if not e.name.startswith('k_') and 'emcpy' not in e.name:
            other[e.name[:50]] = other.get(e.name[:50], 0) + e.device_time / 1e3
    top = sorted(other.items(), key=lambda kv: -kv[1])[:6]
    print(f"{cfg}: wall {np.median(ts)*1e3:.1f} ms (profiled {wall_prof*1e3:.1f}); GPU kernels {kern:.1f} ms, memcpy {mcpy:.1f} ms; "
          f"non-fwi kernels: " + ", ".join(f"{k} {v:.2f}" for k, v in top), flush=True)
    if cfg == 'cpu-fp16':
        pr = cProfile.Profile(); pr.enable()
        for _ in range(3): it()
        pr.disable(); st = pstats.Stats(pr); st.sort_stats('tottime').print_stats(12)
