"""The pass/fail targets the benchmark report opens with (issues 6 and 18), from the results."""

from __future__ import annotations

from typing import Any

from .figures import added, ratio_text, times_floor

# Targets from issue 6.
TTFT_P50_MS = 1.0


TTFT_P99_MS = 5.0


THROUGHPUT_RATIO = 0.5


MAX_RSS_MB = 250


# Targets from issue 18.
CHUNK_CPU_SHARE = 0.6  # of the baseline's CPU per streamed chunk


TIMES_FLOOR = 2.0  # added TTFT at 16 and 64 streams, over the pass-through floor's


UPSTREAM_HEADROOM = 2.0  # direct events/s over the proxy's: the upstream was not the limit


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return engine_targets(results) + _issue6_targets(results)


def engine_targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 18's: CPU per chunk against the baseline, added TTFT against the floor at a
    provider's pace, c=1 latency, and proof that the scripted upstream was not the limit."""
    rows: list[tuple[str, str, bool]] = []
    cost = results.get("cost")
    if cost and "baseline" in cost:
        new, old = cost["proxy"]["cpu_per_chunk_us"], cost["baseline"]["cpu_per_chunk_us"]
        commit = (cost.get("baseline_source") or {}).get("commit", "baseline")
        rows.append(
            (
                f"CPU per streamed chunk ≤ {CHUNK_CPU_SHARE:.0%} of {commit}'s "
                f"({cost['pace_ms']:g} ms a chunk, {cost['concurrency']} streams)",
                f"{new:.1f} vs {old:.1f} µs = {new / old:.0%} (floor: "
                f"{cost['floor']['cpu_per_chunk_us']:.1f} µs)",
                new <= CHUNK_CPU_SHARE * old,
            )
        )
    paced = results.get("paced")
    if paced:
        levels = [r for r in paced["levels"] if r["concurrency"] in (16, 64)]
        if levels:
            measured = ", ".join(
                f"c={r['concurrency']}: {added(r, 'p50'):.2f} vs {added(r, 'p50', 'floor'):.2f}"
                f" ms = {times_floor(r, 'p50')}"
                for r in levels
            )
            rows.append(
                (
                    f"added TTFT p50 at 16 and 64 streams ≤ {TIMES_FLOOR:g}× the pass-through "
                    f"floor's ({paced['interval_ms']:g} ms a chunk, same run)",
                    measured,
                    all(added(r, "p50") <= TIMES_FLOOR * added(r, "p50", "floor") for r in levels),
                )
            )
    one = next((r for r in results["streaming"] if r["concurrency"] == 1), None)
    if one:
        measured = f"{added(one, 'p50'):.2f} ms back to back"
        pace = paced["interval_ms"] if paced else 0
        for row in paced["levels"] if paced else []:
            if row["concurrency"] == 1:
                measured += f" ({added(row, 'p50'):.2f} ms at {pace:g} ms a chunk)"
        rows.append(
            (f"added TTFT p50 at 1 stream ≤ {TTFT_P50_MS:g} ms", measured, added(one, "p50") <= 1)
        )
    streaming = results["streaming"]
    if streaming:
        headroom = {
            r["concurrency"]: r["direct"]["events_per_s"] / max(1.0, r["proxy"]["events_per_s"])
            for r in streaming
        }
        rows.append(
            (
                f"the scripted upstream was not the limit: direct events/s ≥ "
                f"{UPSTREAM_HEADROOM:g}× the proxy's",
                ", ".join(f"c={c}: {v:.1f}×" for c, v in headroom.items()),
                all(v >= UPSTREAM_HEADROOM for v in headroom.values()),
            )
        )
    return rows


def _issue6_targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    rows: list[tuple[str, str, bool]] = []
    low = [r for r in results["streaming"] if r["concurrency"] <= 64]
    added50 = {r["concurrency"]: added(r, "p50") for r in low}
    added99 = {r["concurrency"]: added(r, "p99") for r in low}
    for q, limit, by_level in (("p50", TTFT_P50_MS, added50), ("p99", TTFT_P99_MS, added99)):
        measured = ", ".join(f"c={c}: {v:.2f} ms" for c, v in by_level.items())
        if all("floor" in r for r in low):
            floor = ", ".join(f"{added(r, q, 'floor'):.2f}" for r in low)
            measured += f" (pass-through floor: {floor} ms)"
        rows.append(
            (
                f"added TTFT {q} ≤ {limit:g} ms at concurrency 1–64",
                measured,
                all(v <= limit for v in by_level.values()),
            )
        )
    at64 = next((r for r in results["streaming"] if r["concurrency"] == 64), None)
    if at64:
        ratio = at64["proxy"]["events_per_s"] / at64["direct"]["events_per_s"]
        rows.append(
            (
                f"events/s through the proxy ≥ {THROUGHPUT_RATIO:.0%} of direct at 64 streams",
                f"{at64['proxy']['events_per_s']:,.0f} vs {at64['direct']['events_per_s']:,.0f}"
                f" = {ratio:.1%}"
                + (
                    f" (pass-through floor: {ratio_text(at64['floor'], at64['direct'])})"
                    if "floor" in at64
                    else ""
                ),
                ratio >= THROUGHPUT_RATIO,
            )
        )
    many = results.get("open_streams")
    if many:
        rss = many["proxy_peak_rss_hwm"] / 2**20
        errors = many["proxy"]["errors"] + many["proxy"]["requests"] - many["streams"]
        rows.append(
            (
                f"{many['streams']:,} concurrent streams: zero errors",
                f"{many['proxy']['ok']:,} ok, {max(errors, many['proxy']['errors'])} errors",
                many["proxy"]["errors"] == 0 and many["proxy"]["ok"] == many["streams"],
            )
        )
        rows.append(
            (
                f"{many['streams']:,} concurrent streams: proxy peak RSS ≤ {MAX_RSS_MB} MB",
                f"{rss:.0f} MB (idle {many['proxy_idle_rss'] / 2**20:.0f} MB)",
                rss <= MAX_RSS_MB,
            )
        )
    flushing = results.get("flushing")
    if flushing:
        gaps = flushing["proxy"]["gaps"]
        ok = (
            flushing["proxy"]["errors"] == 0
            and gaps["count"] > 0
            and gaps["min"] >= flushing["interval_ms"] / 2
            and gaps["max"] <= flushing["interval_ms"] * 1.5
        )
        rows.append(
            (
                "each upstream chunk leaves the proxy before the next is read "
                f"({flushing['interval_ms']:g} ms pacing)",
                f"inter-arrival min {gaps['min']:.1f} / p50 {gaps['p50']:.1f} / "
                f"max {gaps['max']:.1f} ms over {gaps['count']} gaps",
                ok,
            )
        )
    return rows
