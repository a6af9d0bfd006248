"""One seed-size forward+backward (B=8) for ncu."""
import numpy as np, torch
from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
dev = torch.device('cuda')
p = bench.make_problem('seed')
solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=p.pml, impl='c',
                    memory=bench.memory_options('gpu', 'fp32'))
vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
idx = np.arange(8)
r = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
r.pow(2).mean().backward(); torch.cuda.synchronize()
print('ok')
