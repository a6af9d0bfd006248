"""Benchmark harness: seconds per FWI iteration and peak memory on the anchor problems.

Problems (``../shared/bench/anchors.md``):

* ``seed``: Marmousi2 decimated 2x (141 x 681, 25 m), dt 0.002 s, nt 2000, Ricker 5 Hz
  (delay 0.2 s), 20 shots at z = 2 over 10-90 % of the width, 200 receivers at z = 4,
  batches of 8 shots from ``default_rng(0)``, Adam lr 25, eps 1e-16, order 4, PML 50.
* ``big``: the full 281 x 1361 grid at 12.5 m, dt 0.001 s, nt 4000, 400 receivers, batch 8.
* ``cpu``: Marmousi2 decimated 4x (71 x 341, 50 m), dt 0.004 s, nt 1000, 4 shots, PML 20:
  one gradient (no optimiser step).

One iteration = forward of a batch + gradient + Adam step. Peak = CUDA max_memory_allocated
above what was allocated before the solver was built (observed data excluded).
Throughput: padded cells x nt x 3 passes (forward, reconstruction + adjoint counted as two)
x shots per second, against the 300 G cell-updates/s bandwidth limit of an H200
(16 bytes per fp32 cell update at 4.8 TB/s).

``--kernels`` adds where the time goes: one more iteration of each config under
``torch.profiler``, reported per kernel (CUDA: device time of each kernel, with programmatic
dependent launch switched off so a kernel's time is its own; CPU: self time of each op),
as total milliseconds and microseconds per time step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from fwi_cli.datasets import MARMOUSI_DH, load_marmousi
from fwi_cli.equations import Acoustic
from fwi_cli.propagator import BoundaryOptions, MemoryOptions, Propagator
from fwi_cli.signal import ricker

LIMIT_CELL_UPDATES = 300e9  # cell updates per second at 4.8 TB/s, 16 B per update


@dataclass
class Problem:
    """An inversion problem to time (numpy inputs plus observed data on the device)."""

    name: str
    vp_true: np.ndarray  # (nz, nx) m/s
    vp_init: np.ndarray  # (nz, nx) m/s
    dh: float
    dt: float
    nt: int
    pml: int
    order: int
    wavelet: np.ndarray  # (nt,)
    sources: np.ndarray  # (S, 2) [x, z]
    receivers: np.ndarray  # (S, R, 2) [x, z]
    batch: int
    observed: torch.Tensor | None = None  # (S, nt, R, 1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.vp_true.shape

    def padded_cells(self) -> int:
        nz, nx = self.shape
        return (nz + 2 * self.pml) * (nx + 2 * self.pml)

    def cell_updates_per_iteration(self) -> float:
        """Padded cells x nt x 3 passes x batch."""
        return float(self.padded_cells()) * self.nt * 3 * self.batch


def make_problem(name: str) -> Problem:
    """Build one of the anchor problems ("seed", "big", "cpu")."""
    true, smooth = load_marmousi("true"), load_marmousi("smooth")
    if name == "seed":
        dec, dt, nt, nrec, nshots, batch, pml = 2, 0.002, 2000, 200, 20, 8, 50
    elif name == "big":
        dec, dt, nt, nrec, nshots, batch, pml = 1, 0.001, 4000, 400, 20, 8, 50
    elif name == "cpu":
        dec, dt, nt, nrec, nshots, batch, pml = 4, 0.004, 1000, 100, 4, 4, 20
    else:
        raise ValueError(f"unknown benchmark problem {name!r}; choose seed, big or cpu")
    vt = true[::dec, ::dec].copy()
    vi = smooth[::dec, ::dec].copy()
    nz, nx = vt.shape
    src_x = np.linspace(nx * 0.1, nx * 0.9, nshots).astype(np.int64)
    rec_x = np.linspace(0, nx - 1, nrec).astype(np.int64)
    t = np.arange(nt, dtype=np.float32) * dt
    wavelet = ricker(t - 0.2, f=5.0)
    sources = np.stack([src_x, np.full(nshots, 2, dtype=np.int64)], 1)
    receivers = np.repeat(np.stack([rec_x, np.full(nrec, 4, dtype=np.int64)], 1)[None], nshots, 0)
    return Problem(name, vt, vi, MARMOUSI_DH * dec, dt, nt, pml, 4, wavelet, sources, receivers, batch)


def memory_options(storage: str, dtype: str, disk_dir: str | None = None) -> MemoryOptions:
    """Boundary-saving options as the seed notebook sets them."""
    return MemoryOptions(strategy="boundary", boundary=BoundaryOptions(
        storage=storage, storage_dtype=dtype, transfer_interval=8, pinned_memory=True, disk_dir=disk_dir))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def model_observed(p: Problem, device: torch.device) -> float:
    """Model the observed data of all shots with impl c (fp32); returns seconds."""
    solver = Propagator(Acoustic(device=device, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt,
                        nt=p.nt, pml_width=p.pml, impl="c")
    vt = torch.tensor(p.vp_true, device=device)
    with torch.no_grad():
        solver(p.wavelet, p.sources[:1], p.receivers[:1], models=[vt])  # build + warm up
        _sync(device)
        t0 = time.perf_counter()
        p.observed = solver(p.wavelet, p.sources, p.receivers, models=[vt])
        _sync(device)
    return time.perf_counter() - t0


def time_config(p: Problem, device: torch.device, impl: str, storage: str, dtype: str,
                iters: int = 5, warmup: int = 1, optimizer_step: bool = True) -> dict:
    """Time FWI iterations of one impl x storage x dtype; returns the figures as a dict."""
    if p.observed is None:
        model_observed(p, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    solver = Propagator(Acoustic(device=device, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt,
                        nt=p.nt, pml_width=p.pml, impl=impl, memory=memory_options(storage, dtype))
    vp = torch.tensor(p.vp_init, device=device, requires_grad=True)
    opt = torch.optim.Adam([vp], lr=25.0, eps=1e-16)
    rng = np.random.default_rng(0)
    times, losses = [], []
    for it in range(warmup + iters):
        idx = rng.choice(len(p.sources), p.batch, replace=False)
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad()
        idx_dev = torch.from_numpy(idx).to(device)  # before the forward, as the runner does
        rec = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
        loss = (rec - p.observed[idx_dev]).pow(2).mean()
        loss.backward()
        if optimizer_step:
            opt.step()
        _sync(device)
        if it >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
    rep = solver.memory_report()
    out = {
        "problem": p.name, "impl": impl, "storage": storage, "dtype": dtype, "device": str(device),
        "batch": p.batch, "shot_groups": rep.extra.get("shot_groups"),
        "iters": iters, "s_per_iter_median": statistics.median(times), "s_min": min(times), "s_max": max(times),
        "ring_bytes": rep.ring_bytes, "device_ring_bytes": rep.device_ring_bytes, "frame_bytes": rep.frame_bytes,
        "loss_last": losses[-1],
    }
    if device.type == "cuda":
        out["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - base)
    cu = p.cell_updates_per_iteration()
    out["cell_updates_per_s"] = cu / out["s_per_iter_median"]
    out["fraction_of_limit"] = out["cell_updates_per_s"] / LIMIT_CELL_UPDATES
    del solver, vp, opt
    return out


def kernel_profile(p: Problem, device: torch.device, impl: str, storage: str, dtype: str,
                   top: int = 12) -> list[dict]:
    """Where one iteration's time goes (forward + gradient of one batch, after a warm-up one).

    Returns up to ``top`` rows ``{"name", "calls", "total_ms", "us_per_step"}``, largest first:
    CUDA kernels by device time (``FWI_PDL=0`` while profiling, so each kernel's time excludes
    waiting for its predecessor), or on a CPU device operators by self CPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    if p.observed is None:
        model_observed(p, device)
    solver = Propagator(Acoustic(device=device, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt,
                        nt=p.nt, pml_width=p.pml, impl=impl, memory=memory_options(storage, dtype))
    vp = torch.tensor(p.vp_init, device=device, requires_grad=True)
    idx = np.random.default_rng(0).choice(len(p.sources), p.batch, replace=False)

    idx_dev = torch.from_numpy(idx).to(device)

    def iteration():
        rec = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
        (rec - p.observed[idx_dev]).pow(2).mean().backward()
        vp.grad = None
        _sync(device)

    cuda = device.type == "cuda"
    saved = os.environ.get("FWI_PDL")
    os.environ["FWI_PDL"] = "0"
    try:
        iteration()
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            iteration()
    finally:
        if saved is None:
            del os.environ["FWI_PDL"]
        else:
            os.environ["FWI_PDL"] = saved
    rows = []
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            rows.append({"name": e.key, "calls": int(e.count), "total_ms": us / 1e3, "us_per_step": us / p.nt})
    rows.sort(key=lambda r: -r["total_ms"])
    return rows[:top]


def format_kernels(rows: list[dict]) -> str:
    """Markdown table of :func:`kernel_profile` rows."""
    lines = ["| kernel / op | calls | ms | µs per step |", "|---|---|---|---|"]
    for r in rows:
        name = r["name"] if len(r["name"]) <= 70 else r["name"][:67] + "..."
        lines.append(f"| `{name}` | {r['calls']} | {r['total_ms']:.2f} | {r['us_per_step']:.2f} |")
    return "\n".join(lines)


def accuracy(p: Problem, device: torch.device) -> dict:
    """Gradient agreement on the first batch at the starting model.

    Compares, by relative L2 and cosine: c boundary vs c full, eager boundary vs c boundary,
    and every lossy ring dtype vs fp32 (c, gpu tier).
    """
    if p.observed is None:
        model_observed(p, device)
    idx = np.random.default_rng(0).choice(len(p.sources), p.batch, replace=False)

    def grad(impl, mem):
        solver = Propagator(Acoustic(device=device, spatial_order=p.order), shape=p.shape, dh=p.dh, dt=p.dt,
                            nt=p.nt, pml_width=p.pml, impl=impl, memory=mem)
        vp = torch.tensor(p.vp_init, device=device, requires_grad=True)
        rec = solver(p.wavelet, p.sources[idx], p.receivers[idx], models=[vp])
        (rec - p.observed[idx]).pow(2).mean().backward()
        return rec.detach().double(), vp.grad.detach().double()

    def cmp(a, b):
        return {"rel_l2": float((a - b).norm() / b.norm()), "cosine": float((a * b).sum() / (a.norm() * b.norm()))}

    r_ref, g_ref = grad("c", memory_options("gpu", "fp32"))
    out = {}
    r_full, g_full = grad("c", MemoryOptions(strategy="full"))
    out["c_boundary_vs_c_full"] = {"record": cmp(r_ref, r_full), "grad": cmp(g_ref, g_full)}
    r_e, g_e = grad("eager", memory_options("gpu", "fp32"))
    out["eager_vs_c"] = {"record": cmp(r_e, r_ref), "grad": cmp(g_e, g_ref)}
    for dt in ("fp16", "bf16", "int8"):
        r, g = grad("c", memory_options("gpu", dt))
        out[f"c_{dt}_vs_fp32"] = {"record_identical": bool(torch.equal(r, r_ref)), "grad": cmp(g, g_ref)}
    return out


def format_table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows."""
    head = "| problem | config | s/iter (median) | min-max | peak MB | ring MB | G cell-upd/s | of limit |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak_bytes'] / 1e6:.0f}" if "peak_bytes" in r else "-"
        lines.append(
            f"| {r['problem']} | {r['impl']}·{r['storage']}·{r['dtype']} | {r['s_per_iter_median']:.4f} | "
            f"{r['s_min']:.4f}-{r['s_max']:.4f} | {peak} | {r['ring_bytes'] / 1e6:.1f} | "
            f"{r['cell_updates_per_s'] / 1e9:.1f} | {100 * r['fraction_of_limit']:.0f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fwi benchmark (seconds per iteration, peak memory)")
    ap.add_argument("--problem", default="seed", choices=["seed", "big", "cpu"])
    ap.add_argument("--configs", default="c-gpu-fp32", help="comma list of impl-storage-dtype")
    ap.add_argument("--batch", type=int, default=None,
                    help="shots per iteration (default: the problem's, 8 for seed and big)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--accuracy", action="store_true", help="also compare gradients (c/eager/lossy)")
    ap.add_argument("--kernels", action="store_true",
                    help="also profile one iteration per config: time per kernel (CUDA) or op (CPU)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    p = make_problem(args.problem)
    if args.batch is not None:
        if not 1 <= args.batch <= len(p.sources):
            ap.error(f"--batch must lie in [1, {len(p.sources)}] (the {args.problem} problem's "
                     f"shots), got {args.batch}")
        p.batch = args.batch
    t_obs = model_observed(p, dev)
    print(f"# {args.problem}: forward of {len(p.sources)} shots {t_obs:.3f} s on {dev}", file=sys.stderr)
    rows = []
    for cfg in [c for c in args.configs.split(",") if c]:
        impl, storage, dtype = cfg.split("-")
        rows.append(time_config(p, dev, impl, storage, dtype, iters=args.iters, warmup=args.warmup,
                                optimizer_step=args.problem != "cpu"))
        print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        if args.kernels:
            rows[-1]["kernels"] = kernel_profile(p, dev, impl, storage, dtype)
            print(f"# {cfg}: one iteration profiled\n" + format_kernels(rows[-1]["kernels"]), file=sys.stderr,
                  flush=True)
    acc = accuracy(p, dev) if args.accuracy else None
    if acc:
        print(json.dumps(acc, indent=1), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"forward_all_shots_s": t_obs, "rows": rows, "accuracy": acc}, f, indent=1)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
