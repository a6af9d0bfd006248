"""Host tiers (cpu, disk) on the seed problem: A/B of the pipeline changes (session of 2026-11-29, 23:00) in one
process, variants alternated; where the caller's thread waits; the iteration's kernel timeline.

Usage (device): python3 tools/probes/tiers_ab.py OUT_DIR [reps]

Variants (module switches and monkeypatches; the kernels are the same build):
  old - prefetch ignored, the disk tier writes its last group too, one writer thread, four host
        buffers, and finish_forward waits for the copies (cpu) / the writers (disk), as before;
  s2  - run S2's defaults: prefetch loads the next range, the last disk group stays in host
        memory, two writers, four buffers, finish_forward does not wait, files closed in close();
  new - four writers, six buffers, the files' descriptors closed on the closer thread.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from fwi_cli.bench import make_problem, memory_options, model_observed, time_config
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import Propagator
from fwi_cli.storage import disk, staged

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timeline import timeline  # noqa: E402

out_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a local smoke run
p = make_problem("seed" if dev.type == "cuda" else "cpu")
model_observed(p, dev)

DISK_END = disk.DiskRingStore._end_forward


def old_cpu_end(self):
    if self._cuda:
        self._side.synchronize()


def old_disk_end(self):
    DISK_END(self)
    self._res.write_q.join()
    self._check_errors()


SYNC_CLOSE = disk._DiskResources.close_files


def sync_close(self):
    for fd in self.fds:
        os.close(fd)
    self.fds = []


def variant(name):
    staged.LOAD_AHEAD = name != "old"
    disk.TAIL_RESIDENT = name != "old"
    disk.N_WRITERS = {"old": 1, "s2": 2}.get(name, 4)
    disk.N_HOST_BUFFERS = 6 if name == "new" else 4
    disk._DiskResources.close_files = SYNC_CLOSE if name == "new" else sync_close
    if name == "old":
        staged.CpuRingStore._end_forward = old_cpu_end
        disk.DiskRingStore._end_forward = old_disk_end
    else:
        staged.CpuRingStore._end_forward = staged.StagedRingStore._end_forward
        disk.DiskRingStore._end_forward = DISK_END


waits = defaultdict(float)  # wall seconds on the caller's thread, per label


def timed(cls, name, label):
    real = getattr(cls, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            waits[label] += time.perf_counter() - t0

    setattr(cls, name, wrapper)


timed(disk.DiskRingStore, "__init__", "disk create")
timed(disk.DiskRingStore, "close", "disk close")
timed(disk._DiskResources, "take_buffer", "put waits buffer")
timed(disk.DiskRingStore, "_group_buffer", "waits group")
timed(staged.CpuRingStore, "__init__", "cpu create")
timed(staged.CpuRingStore, "close", "cpu close")
timed(staged.StagedRingStore, "finish_forward", "finish_forward")

configs = ["c-cpu-fp16", "c-cpu-int8", "c-disk-fp16", "c-disk-bf16", "c-disk-int8"]
results = defaultdict(list)
order = ["old", "s2", "new"] * reps
for name in order:
    variant(name)
    for cfg in configs:
        _, storage, dtype = cfg.split("-")
        waits.clear()
        row = time_config(p, dev, "c", storage, dtype, iters=5, warmup=1)
        results[(name, cfg)].append(row["s_per_iter_median"])
        n = 6  # iterations run by time_config, the warm-up included
        where = ", ".join(f"{k} {v / n * 1e3:.2f}" for k, v in sorted(waits.items()) if v / n > 5e-5)
        print(f"{name:12s} {cfg:12s} {row['s_per_iter_median']:.4f} s  peak {row.get('peak_bytes', 0) / 1e6:.0f} MB"
              f"  | ms/iter: {where}", flush=True)

print("\n| variant | " + " | ".join(configs) + " |")
print("|---|" + "---|" * len(configs))
for name in dict.fromkeys(order):
    cells = [" / ".join(f"{v:.4f}" for v in results[(name, c)]) for c in configs]
    print(f"| {name} | " + " | ".join(cells) + " |")
for name in ("old", "s2", "new"):
    print(f"median of {name}: " + ", ".join(f"{c} {statistics.median(results[(name, c)]):.4f}" for c in configs))

# the kernel timeline of one c-disk-fp16 and one c-cpu-fp16 iteration (new)
from torch.profiler import ProfilerActivity, profile  # noqa: E402

variant("new")
for storage in ("disk", "cpu") if dev.type == "cuda" else ():
    solver = Propagator(Acoustic(device=dev, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt, nt=p.nt,
                        pml_width=p.pml, impl="c", memory=memory_options(storage, "fp16"))
    vp = torch.tensor(p.vp_init, device=dev, requires_grad=True)
    idx = np.arange(p.batch)

    def fwd_bwd():
        idx_dev = torch.from_numpy(idx).to(dev)  # noqa: B023
        rec = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])  # noqa: B023
        (rec - p.observed[idx_dev]).pow(2).mean().backward()
        vp.grad = None  # noqa: B023

    fwd_bwd()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fwd_bwd()
        torch.cuda.synchronize()
    path = os.path.join(out_dir, f"trace_{storage}_fp16.json")
    prof.export_chrome_trace(path)
    print(f"c-{storage}-fp16 " + timeline(path))
