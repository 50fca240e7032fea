"""docs/benchmarks.png: added latency and throughput by concurrency (matplotlib, from the
[bench] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import added
from .targets import TTFT_P50_MS, TTFT_P99_MS


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["streaming"]
    levels = [r["concurrency"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(levels, [added(r, "p50") for r in rows], "o-", label="added TTFT p50")
    left.plot(levels, [added(r, "p99") for r in rows], "s-", label="added TTFT p99")
    if all("floor" in r for r in rows):
        floor_added = [added(r, "p50", "floor") for r in rows]
        left.plot(levels, floor_added, "^--", color="grey", label="pass-through floor, p50")
    left.axhline(TTFT_P50_MS, color="tab:blue", ls=":", lw=1, label="target p50 (1 ms)")
    left.axhline(TTFT_P99_MS, color="tab:orange", ls=":", lw=1, label="target p99 (5 ms)")
    left.set_xscale("log", base=2)
    left.set_yscale("symlog", linthresh=1)
    left.set_xticks(levels, [str(c) for c in levels])
    left.set_xlabel("concurrent streams")
    left.set_ylabel("proxy − direct TTFT (ms)")
    left.set_title("Added time to first token")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    right.plot(levels, [r["direct"]["events_per_s"] for r in rows], "o-", label="direct")
    right.plot(levels, [r["proxy"]["events_per_s"] for r in rows], "s-", label="through proxy")
    if all("floor" in r for r in rows):
        floor_rate = [r["floor"]["events_per_s"] for r in rows]
        right.plot(levels, floor_rate, "^--", color="grey", label="pass-through floor")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xticks(levels, [str(c) for c in levels])
    right.set_xlabel("concurrent streams")
    right.set_ylabel("streamed content events / s")
    right.set_title("Throughput")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8)
    for r in rows:
        ratio = r["proxy"]["events_per_s"] / r["direct"]["events_per_s"]
        right.annotate(
            f"{ratio:.0%}",
            (r["concurrency"], r["proxy"]["events_per_s"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    fig.suptitle(f"kimi-proxy vs direct upstream — {results['machine']['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
