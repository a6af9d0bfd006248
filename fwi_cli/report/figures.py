"""The report of a run directory: the seed page's figures and a summary table.

``make_report(run_dir)`` reads ``observed.zarr`` and every job store of ``run_dir`` and
writes into ``run_dir/report/``:

* ``convergence.png`` — data misfit (log scale) and model RMSE (m/s) per iteration; colour
  = dtype (fp32 black, fp16 blue, bf16 green, int8 red), line style = storage (gpu solid,
  cpu dashed, disk dotted); impl "eager" dash-dot with circle markers; a grey line at the
  starting RMSE.
* ``models.png`` — true, initial and fp32-anchor models, then one panel per other job with
  its final RMSE (3 columns, common colour scale = range of the true model).
* ``memory.png`` — one stacked bar per job of the gradient's memory by component, fixed
  parts at the bottom, boundary ring on top: working + context = peak - device ring -
  seed frame - record; seed frame; observed data; synthetic record; boundary ring
  (hatched where it lives off the compute device, cpu/disk tiers, as the seed frames of impl
  "c" then do).
* ``summary.md`` — final loss / RMSE per job and their gap to the impl's fp32 anchor
  (``<impl>·gpu·fp32``, else another fp32 job of that impl): loss gap in % of the anchor's
  loss, RMSE gap in m/s.

Only complete jobs are drawn; failed and missing jobs are listed in the summary, so a
partial sweep reports what it has. Figures use matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fwi_cli.errors import FwiArgumentError
from fwi_cli.experiment import store
from fwi_cli.experiment.matrix import Job

DTYPE_COLOUR = {"fp32": "k", "fp16": "tab:blue", "bf16": "tab:green", "int8": "tab:red"}
STORAGE_STYLE = {"gpu": "-", "cpu": "--", "disk": ":"}
MB = 2.0**20


@dataclass
class Run:
    """What a run directory holds.

    Attributes:
        run_dir: the directory.  name: the experiment's name.
        jobs: complete and failed job stores, in matrix order.
        expected: the jobs of the matrix (from the stores' config), in order.
        observed: the observed store (None when missing).
        config: the resolved config of the first job store.
    """

    run_dir: Path
    name: str
    jobs: list[store.JobRecord]
    expected: list[Job]
    observed: store.ObservedStore | None
    config: dict

    @property
    def complete(self) -> list[store.JobRecord]:
        return [j for j in self.jobs if j.status == store.STATUS_COMPLETE]

    @property
    def failed(self) -> list[store.JobRecord]:
        return [j for j in self.jobs if j.status != store.STATUS_COMPLETE]

    @property
    def missing(self) -> list[Job]:
        """Jobs of the matrix with no finished (complete or failed) store."""
        done = {j.job for j in self.jobs}
        return [j for j in self.expected if j not in done]

    def anchor(self, impl: str) -> store.JobRecord | None:
        """The impl's fp32 anchor: ``<impl>·gpu·fp32``, else its first complete fp32 job."""
        cands = [j for j in self.complete if j.job.impl == impl and j.job.dtype == "fp32"]
        for j in cands:
            if j.job.storage == "gpu":
                return j
        return cands[0] if cands else None


@dataclass
class ReportResult:
    """Files written by :func:`make_report` and the counts of jobs found."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    n_complete: int = 0
    n_failed: int = 0
    missing: list[Job] = field(default_factory=list)


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory.

    Raises:
        FwiArgumentError: the directory does not exist or holds no job store.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise FwiArgumentError(f"run directory {d} does not exist (run `fwi sweep CONFIG` first)")
    records = [r for r in store.list_jobs(d) if r.status in (store.STATUS_COMPLETE, store.STATUS_FAILED)]
    if not records:
        raise FwiArgumentError(f"{d} holds no finished job store (*.zarr); run `fwi sweep CONFIG` first")
    with_config = [r for r in records if r.attrs.get("config")]
    with_config.sort(key=lambda r: r.status != store.STATUS_COMPLETE)
    config = with_config[0].attrs["config"] if with_config else {}
    expected: list[Job] = []
    try:
        from fwi_cli.experiment.config import validate_config
        from fwi_cli.experiment.matrix import expand

        cfg = validate_config(config, str(d))
        expected = expand(cfg.matrix)
    except Exception:  # stores from an older schema: fall back to what is there
        expected = []
    order = {j: k for k, j in enumerate(expected)}
    records.sort(key=lambda r: (order.get(r.job, len(order)), r.job.dirname))
    for r in records:
        if r.job not in order:
            expected.append(r.job)
    try:
        observed = store.read_observed(store.observed_path(d))
    except FileNotFoundError:
        observed = None
    return Run(d, config.get("name", d.name), records, expected, observed, config)


def _style(job: Job) -> dict:
    colour = DTYPE_COLOUR.get(job.dtype, "gray")
    if job.impl == "eager":
        return dict(color=colour, ls="-.", lw=1.6, marker="o", markersize=3, markevery=5)
    return dict(color=colour, ls=STORAGE_STYLE.get(job.storage, "-"), lw=1.6)


def plot_convergence(run: Run, path: Path) -> Path:
    """Loss (log scale) and model RMSE per iteration of every complete job."""
    fig = Figure(figsize=(14, 5), layout="constrained")
    ax_loss, ax_rmse = fig.subplots(1, 2)
    for r in run.complete:
        ax_loss.plot(np.arange(1, len(r.loss) + 1), r.loss, label=r.label, **_style(r.job))
        ax_rmse.plot(np.arange(len(r.rmse)), r.rmse, label=r.label, **_style(r.job))
    ax_loss.set_yscale("log")
    ax_loss.set_title("data misfit (loss)")
    ax_rmse.set_title("model RMSE vs true (m/s)")
    for ax in (ax_loss, ax_rmse):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if run.complete:
        ax_rmse.axhline(float(run.complete[0].rmse[0]), color="gray", lw=0.8, alpha=0.6)
        ax_loss.legend(fontsize=7, ncol=2)
        ax_rmse.legend(fontsize=7, ncol=2)
    else:
        ax_loss.text(0.5, 0.5, "no complete job", ha="center", transform=ax_loss.transAxes)
    fig.suptitle(f"{run.name} · convergence")
    fig.savefig(path, dpi=110)
    return path


def plot_models(run: Run, path: Path) -> Path:
    """True, initial and anchor models, then one panel per other complete job."""
    anchor = next((a for a in (run.anchor(i) for i in ("c", "eager")) if a is not None), None)
    panels: list[tuple[str, np.ndarray | None]] = []
    if run.observed is not None:
        obs = run.observed
        panels += [("true", obs.vp_true),
                   (f"initial (rmse {_rmse(obs.vp_init, obs.vp_true):.1f})", obs.vp_init)]
    if anchor is not None:
        panels.append((f"{anchor.label} (rmse {anchor.rmse[-1]:.1f})", anchor.vp_final))
    panels += [(f"{r.label} (rmse {r.rmse[-1]:.1f})", r.vp_final)
               for r in run.complete if r is not anchor]
    ncols = 3
    nrows = max(1, -(-len(panels) // ncols))
    ref = run.observed.vp_true if run.observed is not None else (
        panels[0][1] if panels else np.zeros((1, 1)))
    vmin, vmax = float(np.min(ref)), float(np.max(ref))
    nz, nx = ref.shape
    dh = float((run.observed.attrs.get("dh") if run.observed is not None else None) or 1.0)
    ext = [0, nx * dh / 1000, nz * dh / 1000, 0]
    aspect = nz / nx * 15 / ncols
    fig = Figure(figsize=(15, max(2.5, (aspect + 0.8) * nrows)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    for ax, (title, m) in zip(axes, panels, strict=False):
        im = ax.imshow(m, cmap="jet", vmin=vmin, vmax=vmax, aspect="auto", extent=ext)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (km)")
        ax.set_ylabel("z (km)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    iters = len(run.complete[0].loss) if run.complete else 0
    fig.suptitle(f"{run.name} · final vp after {iters} iterations · boundary storage x dtype",
                 fontsize=13)
    fig.savefig(path, dpi=90)
    return path


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def memory_components(rec: store.JobRecord) -> dict[str, float]:
    """The stacked-bar components of a job's gradient memory, in MB.

    Keys: context (working + context), frame (seed frames on the device), frame_off (seed
    frames in host memory), observed, record, ring_device, ring_off (ring held off the compute
    device), peak (measured peak above the pre-job baseline, or NaN when unknown).
    """
    m = rec.attrs.get("memory") or {}

    def mb(key: str) -> float:
        v = m.get(key)
        return float(v) / MB if v is not None else 0.0

    ring = mb("boundary_bytes")
    ring_dev = mb("boundary_device_bytes") if m.get("boundary_device_bytes") is not None else ring
    ring_dev = min(ring_dev, ring)
    peak = float(m["peak_bytes"]) / MB if m.get("peak_bytes") is not None else float("nan")
    frame, record = mb("frame_bytes"), mb("record_bytes")
    frame_dev = min(mb("frame_device_bytes"), frame) if m.get("frame_device_bytes") is not None else frame
    context = max(peak - ring_dev - frame_dev - record, 0.0) if np.isfinite(peak) else 0.0
    return {"context": context, "frame": frame_dev, "frame_off": frame - frame_dev,
            "observed": mb("observed_bytes"), "record": record, "ring_device": ring_dev,
            "ring_off": ring - ring_dev, "peak": peak}


_LAYERS = [("working + context", "context", "tab:gray", None),
           ("seed frame", "frame", "tab:purple", None),
           ("observed data", "observed", "tab:blue", None),
           ("synthetic record", "record", "tab:green", None),
           ("boundary ring", "ring_device", "tab:red", None),
           ("boundary ring (host / disk tier)", "ring_off", "mistyrose", "//"),
           ("seed frame (host memory)", "frame_off", "thistle", "//")]


def plot_memory(run: Run, path: Path) -> Path:
    """Stacked bars of each complete job's gradient memory by component (MB)."""
    jobs = run.complete
    comps = [memory_components(r) for r in jobs]
    labels = [r.label for r in jobs]
    fig = Figure(figsize=(max(8.0, 0.9 * len(jobs) + 4.5), 5.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(jobs))
    bottom = np.zeros(len(jobs))
    totals = [sum(c[k] for _, k, _, _ in _LAYERS) for c in comps]
    big = 0.04 * max(totals) if totals else 0.0  # label ring segments taller than this
    for name, key, colour, hatch in _LAYERS:
        vals = np.array([c[key] for c in comps]) if comps else np.zeros(0)
        if key in ("ring_off", "frame_off") and not np.any(vals > 0):
            continue
        ax.bar(x, vals, bottom=bottom, label=name, color=colour, edgecolor="white", lw=0.5,
               hatch=hatch)
        if key in ("ring_device", "ring_off"):
            for i, v in enumerate(vals):
                if v > big:
                    ax.text(i, bottom[i] + v / 2, f"{v:.1f}", ha="center", va="center",
                            fontsize=7, color="white" if key == "ring_device" else "black")
        bottom += vals
    top = float(bottom.max()) if bottom.size else 1.0
    for i, c in enumerate(comps):
        tag = f"{bottom[i]:.1f} MB" if np.isfinite(c["peak"]) else f"{bottom[i]:.1f} MB\n(peak n/a)"
        ax.text(i, bottom[i] + 0.01 * top, tag, ha="center", va="bottom", fontsize=7,
                fontweight="bold")
    ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=8)
    methods = {(r.attrs.get("memory") or {}).get("peak_method") for r in jobs}
    where = "GPU" if "cuda_max_memory_allocated_above_baseline" in methods else "process (RSS)"
    ax.set_ylabel(f"peak {where} memory of a gradient (MB)")
    inv = run.config.get("inversion", {})
    grid = run.config.get("grid", {})
    ax.set_title(f"{run.name} · gradient memory by component "
                 f"(B={inv.get('batch_shots', '?')}, nt={grid.get('nt', '?')})")
    if jobs:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no complete job", ha="center", transform=ax.transAxes)
    ax.margins(y=0.15)
    fig.savefig(path, dpi=110)
    return path


def _gap(rec: store.JobRecord, anchor: store.JobRecord | None) -> tuple[str, str]:
    if anchor is None:
        return "n/a", "n/a"
    if rec is anchor:
        return "anchor", "anchor"
    dl = 100.0 * (rec.loss[-1] - anchor.loss[-1]) / anchor.loss[-1]
    dr = rec.rmse[-1] - anchor.rmse[-1]
    return _pct(dl), f"{dr:+.2f}"


def _pct(x: float) -> str:
    """A signed percentage: 3 decimals, or 2 significant digits when below 0.001 %."""
    if x == 0:
        return "0 %"
    return f"{x:+.3f} %" if abs(x) >= 1e-3 else f"{x:+.1e} %"


def summary_markdown(run: Run) -> str:
    """The Markdown summary: one row per finished job, then failures and missing jobs."""
    lines = [f"# {run.name} — summary", ""]
    if run.observed is not None:
        a = run.observed.attrs
        lines.append(f"Observed data: {a.get('nshots')} shots x {a.get('nt')} steps x "
                     f"{a.get('nrec')} receivers, modelled by impl `{a.get('impl')}` on "
                     f"{a.get('device')} ({a.get('device_name')}).")
    if run.complete:
        r0 = run.complete[0]
        lines.append(f"Start: loss {r0.loss[0]:.4e} (first iteration), RMSE {r0.rmse[0]:.1f} m/s; "
                     f"{len(r0.loss)} iterations.")
    lines += ["", "| job | status | final loss | final RMSE (m/s) | loss gap to anchor | "
              "RMSE gap (m/s) | loss reduction | s/iter | peak (MB) | ring (MB) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in run.jobs:
        t, m = r.attrs.get("timing") or {}, r.attrs.get("memory") or {}
        iter_s = t.get("iter_s")
        peak = m.get("peak_bytes")
        ring = m.get("boundary_bytes")
        cells = [r.label, r.status or "?"]
        if r.status == store.STATUS_COMPLETE:
            gl, gr = _gap(r, run.anchor(r.job.impl))
            cells += [f"{r.loss[-1]:.4e}", f"{r.rmse[-1]:.2f}", gl, gr,
                      f"{r.loss[0] / r.loss[-1]:.1f}x"]
        else:
            cells += ["—"] * 5
        cells += [f"{iter_s:.3f}" if iter_s is not None else "n/a",
                  f"{peak / MB:.1f}" if peak is not None else "n/a",
                  f"{ring / MB:.1f}" if ring is not None else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    ca, ea = run.anchor("c"), run.anchor("eager")
    lines.append("")
    lines.append("Gaps are to the job's own impl's fp32 anchor (`<impl>·gpu·fp32`): loss in % "
                 "of the anchor's final loss, RMSE in m/s.")
    if ca is not None and ea is not None:
        dl = 100.0 * (ea.loss[-1] - ca.loss[-1]) / ca.loss[-1]
        lines.append(f"Between impls: {ea.label} vs {ca.label}: final loss {_pct(dl)}, "
                     f"RMSE {ea.rmse[-1] - ca.rmse[-1]:+.2f} m/s.")
    if run.failed:
        lines += ["", "## Failed jobs", ""]
        for r in run.failed:
            lines.append(f"- {r.label}: at iteration {r.attrs.get('failed_iteration')}: "
                         f"{r.attrs.get('reason')}")
    if run.missing:
        lines += ["", "## Not run yet", "", ", ".join(j.label for j in run.missing)]
    return "\n".join(lines) + "\n"


def make_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportResult:
    """Write convergence.png, models.png, memory.png and summary.md for a run directory.

    Args:
        run_dir: ``<output_dir>/<name>`` of a (possibly partial) sweep.
        out_dir: where to write (default ``run_dir/report``).

    Raises:
        FwiArgumentError: no such directory, or no finished job store in it.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    res = ReportResult(out, n_complete=len(run.complete), n_failed=len(run.failed),
                       missing=run.missing)
    res.files.append(plot_convergence(run, out / "convergence.png"))
    res.files.append(plot_models(run, out / "models.png"))
    res.files.append(plot_memory(run, out / "memory.png"))
    summary = out / "summary.md"
    summary.write_text(summary_markdown(run), encoding="utf-8")
    res.files.append(summary)
    return res
