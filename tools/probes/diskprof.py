"""cProfile of the main thread over 3 seed iterations of one tier (after 2 warm-ups)."""
import cProfile, pstats, sys, time, numpy as np, torch
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda'); p = bench.make_problem('seed'); bench.model_observed(p, dev)
dtype, storage = sys.argv[1], sys.argv[2]
solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=p.pml, impl='c',
                    memory=bench.memory_options(storage, dtype))
vp = torch.tensor(p.vp_init, device=dev, requires_grad=True); idx = np.arange(8)
def it():
    r = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
    (r - p.observed[idx]).pow(2).mean().backward(); torch.cuda.synchronize(); vp.grad = None
for _ in range(2): it()
pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
for _ in range(3): it()
pr.disable(); print(storage, dtype, 'per iter', (time.perf_counter() - t) / 3)
st = pstats.Stats(pr); st.sort_stats('tottime').print_stats(14)
