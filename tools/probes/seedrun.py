"""The gradient iteration the host-tier probes time: an anchor problem with its observed data,
and a closure running forward + misfit + backward of the first `shots` shots for one tier/dtype.

    from seedrun import observed_problem, iteration      # (scripts run from tools/probes)
"""
import numpy as np
import torch

from fwi_cli import bench
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator


def observed_problem(name="seed", device="cuda"):
    """(problem, device) with the observed data modelled on the device."""
    dev = torch.device(device)
    p = bench.make_problem(name)
    bench.model_observed(p, dev)
    return p, dev


def iteration(p, dev, storage, dtype, shots=8):
    """A callable running one gradient of the first `shots` shots (synchronised on CUDA)."""
    solver = Propagator(Acoustic(device=dev), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt, pml_width=p.pml,
                        impl="c", memory=bench.memory_options(storage, dtype))
    vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
    idx = np.arange(shots)

    def it():
        r = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
        (r - p.observed[idx]).pow(2).mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        vp.grad = None

    return it
