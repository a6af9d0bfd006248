"""Where the first job's set-up time goes in a fresh sweep process."""
import time, sys
T = time.perf_counter()
def lap(msg):
    global T
    t = time.perf_counter(); print(f"{t-T:7.3f} s  {msg}", flush=True); T = t
import numpy as np, torch
from fwi_cli.experiment import Experiment, load_config, store
from fwi_cli.experiment import runner
lap("imports")
ex = Experiment(load_config("configs/marmousi_bdy.yaml", ["output_dir=/tmp/fj"])); lap("Experiment")
ex.ensure_observed(); lap("observed")
obs = ex.observed(); lap("observed() read to device")
job = ex.jobs[0]
dev = runner.device_attrs(ex.problem.device); lap("device_attrs")
store.begin_job(store.job_path(ex.run_dir, job), job, {"config": ex.cfg.resolved(), "hash": ex.job_hash(job)}); lap("begin_job")
meter = runner.PeakMeter(ex.problem.device); meter.start(); lap("PeakMeter.start")
solver = runner.make_propagator(ex.problem, job.impl, runner.memory_options(ex.cfg, job)); lap("make_propagator")
vp = torch.tensor(ex.problem.vp_init, device=ex.problem.device, requires_grad=True)
opt = torch.optim.Adam([vp], lr=25.0, eps=1e-16); lap("Adam")
idx = np.arange(8)
for k in range(2):
    rec = solver(ex.problem.wavelet, ex.problem.sources[idx], ex.problem.receivers[idx], models=[vp]); (torch.cuda.synchronize() if torch.cuda.is_available() else None); lap(f"forward {k}")
    v = (rec - obs[torch.from_numpy(idx).to(vp.device)]).pow(2).mean(); float(v); lap(f"loss {k}")
    v.backward(); (torch.cuda.synchronize() if torch.cuda.is_available() else None); lap(f"backward {k}")
    opt.step(); (torch.cuda.synchronize() if torch.cuda.is_available() else None); lap(f"Adam step {k}")
    ex.problem.rmse(vp.detach().cpu().numpy()); lap(f"rmse {k}")
