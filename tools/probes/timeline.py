"""Kernel timeline of a torch.profiler chrome trace: busy time against the span, idle gaps."""

from __future__ import annotations

import json
from collections import Counter


def timeline(path: str, top: int = 8) -> str:
    """Summary of the CUDA kernels in the trace at ``path``: span, busy, gaps and the kernel
    pairs with the most idle time between them."""
    ev = json.load(open(path))["traceEvents"]
    k = sorted((e for e in ev if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    busy, gaps, pairs = 0.0, [], Counter()
    end = k[0]["ts"]
    for a, b in zip([None] + k[:-1], k, strict=True):
        s, d = b["ts"], b["dur"]
        if s > end and a is not None:
            gaps.append(s - end)
            if s - end > 2.0:
                pairs[(a["name"][:40], b["name"][:40])] += s - end
        busy += max(0.0, s + d - max(s, end))
        end = max(end, s + d)
    span = end - k[0]["ts"]
    lines = [f"profiled: span {span / 1e3:.1f} ms, kernels busy {busy / 1e3:.1f} ms, gaps {sum(gaps) / 1e3:.1f} ms "
             f"({sum(g > 2 for g in gaps)} over 2 us, {len(k)} kernels; largest {max(gaps, default=0) / 1e3:.2f} ms)"]
    for (a, b), us in pairs.most_common(top):
        lines.append(f"  {us / 1e3:7.2f} ms  {a} -> {b}")
    return "\n".join(lines)
