"""Figures derived from the raw results, and how the report writes them: added latency over the
direct upstream, ratios, CPU a chunk and a request, pass/fail marks."""

from __future__ import annotations

import math
from typing import Any


def ms(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def pf(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def added(row: dict[str, Any], q: str, side: str = "proxy") -> float:
    return float(row[side]["ttft_ms"][q] - row["direct"]["ttft_ms"][q])


def floor_and_proxy(row: dict[str, Any], q: str) -> str:
    """Added TTFT at percentile `q` of the floor and (bold) of the proxy."""
    return f"{ms(added(row, q, 'floor'))} / **{ms(added(row, q))}**"


def times_floor(row: dict[str, Any], q: str) -> str:
    """The proxy's added TTFT as a multiple of the pass-through floor's, same run."""
    floor = added(row, q, "floor")
    return f"{added(row, q) / floor:.1f}×" if floor > 0 else "–"


def streams_per_core_text(result: dict[str, Any], interval_ms: float) -> str:
    """How many streams at this pace one core carries: 1 s of CPU ÷ (CPU per chunk × chunks a
    second of one stream)."""
    per_chunk = cpu_us_per_chunk(result)
    if not per_chunk:
        return "–"
    return f"{1e6 / (per_chunk * 1000 / interval_ms):,.0f}"


def ratio_text(result: dict[str, Any], direct: dict[str, Any]) -> str:
    if not direct["events_per_s"]:
        return "–"
    return f"{result['events_per_s'] / direct['events_per_s']:.0%}"


def cpu_ms(result: dict[str, Any], row: dict[str, Any]) -> str:
    """CPU time of the middle process per request (warm-up requests, one per worker and
    repeat, included)."""
    served = result["requests"] + row["concurrency"] * result.get("repeats", 1)
    return f"{result['proxy_cpu_s'] / max(1, served) * 1e3:.2f}"


def cpu_us_per_chunk(result: dict[str, Any]) -> float:
    events = result["events"] + result.get("warmup_events", 0)
    return result["proxy_cpu_s"] / events * 1e6 if events else float("nan")
