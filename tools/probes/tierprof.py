"""Where a host tier's extra time goes: per config, wall of one iteration, GPU kernel sum, memcpy sum,
gaps; then cProfile (main thread) of cpu-fp16. argv: configs like gpu-fp16 cpu-fp16."""
import cProfile, pstats, sys, time, numpy as np, torch
from torch.profiler import profile, ProfilerActivity
from seedrun import observed_problem, iteration
p, dev = observed_problem('seed')
for cfg in sys.argv[1:]:
    storage, dtype = cfg.split('-')
    it = iteration(p, dev, storage, dtype)
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
