"""Torch ops dispatched (and CPU seconds) for one seed-size ring through a host tier, CPU device."""
import sys, time, torch
from torch.profiler import profile, ProfilerActivity
from fwi_cli.propagator import BoundaryOptions
from fwi_cli.storage import make_ring_store
from fwi_cli.propagator.compiled import HOST_CHUNK
nt, B, C = 2000, 8, 3288
chunk = max(8, HOST_CHUNK)
x = torch.randn(chunk, B, C)
for dt in ("fp16", "int8", "bf16"):
    store = make_ring_store(nt, B, C, torch.device("cpu"), BoundaryOptions(storage="cpu", storage_dtype=dt, transfer_interval=8))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for n0 in range(0, nt, chunk):
            store.put(n0, x[:min(chunk, nt - n0)])
        store.finish_forward()
        t1 = time.perf_counter()
        for n0 in reversed(range(0, nt, chunk)):
            store.get(n0, min(chunk, nt - n0))
        t2 = time.perf_counter()
    store.close()
    ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    top = sorted(((e.count, e.key) for e in prof.key_averages() if e.key.startswith("aten::")), reverse=True)[:5]
    print(f"{dt}: chunk {chunk}: aten ops {ops}, put {t1-t0:.3f} s, get {t2-t1:.3f} s; top {top}")
