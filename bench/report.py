"""Turns bench/results/results.json into docs/BENCHMARKS.md and docs/benchmarks.png.

`python -m bench.report` re-renders both from the last results without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "kimi-proxy",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "httpx",
    "anyio",
    "orjson",
    "pydantic",
    "pydantic-core",
    "psutil",
    "py-spy",
)

# Targets from issue 6.
TTFT_P50_MS = 1.0
TTFT_P99_MS = 5.0
THROUGHPUT_RATIO = 0.5
MAX_RSS_MB = 250
# Targets from issue 18.
CHUNK_CPU_SHARE = 0.6  # of the baseline's CPU per streamed chunk
TIMES_FLOOR = 2.0  # added TTFT at 16 and 64 streams, over the pass-through floor's
UPSTREAM_HEADROOM = 2.0  # direct events/s over the proxy's: the upstream was not the limit


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(results: dict[str, Any]) -> str:
    """The machine and versions, under each table."""
    m = results["machine"]
    packages = m["packages"]
    source = results.get("proxy_source") or {}
    return (
        f"_{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, uvicorn "
        f"{packages.get('uvicorn', '-')}, uvloop {packages.get('uvloop', '-')}, httptools "
        f"{packages.get('httptools', '-')}; kimi_proxy {source.get('commit', '?')}; "
        f"{m['date']}._\n"
    )


def render_cost(cost: dict[str, Any], machine: str) -> str:
    """CPU per chunk and per request of the middle process (`bench/cost.py`)."""
    sides = [side for side in ("floor", "proxy", "baseline") if side in cost]
    short, long = cost["chunks"]
    baseline = (cost.get("baseline_source") or {}).get("commit", "")
    names = {"floor": "pass-through floor", "proxy": "proxy", "baseline": f"proxy at {baseline}"}
    lines = [
        f"## CPU per streamed chunk and per request ({cost['pace_ms']:g} ms a chunk)\n",
        machine,
        f"The process in the middle alone, its CPU time from the scheduler "
        f"(`/proc/PID/task/*/schedstat`). {cost['concurrency']} streams at the provider's pace, "
        f"every chunk its own network read, run with answers of {short} and of {long} chunks: "
        f"the growth of CPU per request with the chunks is the CPU per chunk (read, decode, "
        f"translate, frame, write), the rest the CPU per request (read and validate the 50 KB "
        f"body, translate it, send it, open the response, log). Streams per core = how many "
        f"{long}-chunk streams at this pace one core's time covers. Of which in the kernel: the "
        f"system part of a chunk's CPU (psutil, 10 ms ticks), a loopback read and write for every "
        f"side. Sides interleaved over {cost['repeats']} rounds; medians.\n",
        "| Side | CPU per chunk | Of which in the kernel | CPU per request | Streams per core "
        "| Rounds (µs a chunk) | Errors |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for side in sides:
        figures = cost[side]
        rounds = ", ".join(f"{r['chunk_us']:.1f}" for r in figures["rounds"])
        system = figures.get("system_per_chunk_us")  # (results from before it was measured)
        lines.append(
            f"| {names[side]} | {figures['cpu_per_chunk_us']:.1f} µs "
            f"| {'–' if system is None else f'{system:.1f} µs'} "
            f"| {figures['cpu_per_request_us']:.0f} µs | {figures['streams_per_core']:.0f} "
            f"| {rounds} | {figures['errors']} |"
        )
    return "\n".join(lines) + "\n"


# -- profile ------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return path


def _frame(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({_short(match['file'])})"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's `raw` (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        file = frames[-1].rpartition("(")[2].rstrip(")")
        packages[file.split("/", 1)[0] if "/" in file else f"stdlib:{file}"] += count
    # Frames on (nearly) every stack say nothing: the event loop, uvicorn's server, runpy.
    common = [(name, n) for name, n in inclusive.most_common() if n < 0.95 * total]
    return {
        "samples": total,
        "self": own.most_common(top),
        "inclusive": common[: top * 2],
        "by_file": packages.most_common(top),
    }


# -- markdown -----------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def _pf(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def cpu_us_per_chunk(result: dict[str, Any]) -> float:
    events = result["events"] + result.get("warmup_events", 0)
    return result["proxy_cpu_s"] / events * 1e6 if events else float("nan")


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
                f"c={r['concurrency']}: {_added(r, 'p50'):.2f} vs {_added(r, 'p50', 'floor'):.2f}"
                f" ms = {_times_floor(r, 'p50')}"
                for r in levels
            )
            rows.append(
                (
                    f"added TTFT p50 at 16 and 64 streams ≤ {TIMES_FLOOR:g}× the pass-through "
                    f"floor's ({paced['interval_ms']:g} ms a chunk, same run)",
                    measured,
                    all(
                        _added(r, "p50") <= TIMES_FLOOR * _added(r, "p50", "floor") for r in levels
                    ),
                )
            )
    one = next((r for r in results["streaming"] if r["concurrency"] == 1), None)
    if one:
        measured = f"{_added(one, 'p50'):.2f} ms back to back"
        pace = paced["interval_ms"] if paced else 0
        for row in paced["levels"] if paced else []:
            if row["concurrency"] == 1:
                measured += f" ({_added(row, 'p50'):.2f} ms at {pace:g} ms a chunk)"
        rows.append(
            (f"added TTFT p50 at 1 stream ≤ {TTFT_P50_MS:g} ms", measured, _added(one, "p50") <= 1)
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
    added50 = {r["concurrency"]: _added(r, "p50") for r in low}
    added99 = {r["concurrency"]: _added(r, "p99") for r in low}
    for q, limit, added in (("p50", TTFT_P50_MS, added50), ("p99", TTFT_P99_MS, added99)):
        measured = ", ".join(f"c={c}: {v:.2f} ms" for c, v in added.items())
        if all("floor" in r for r in low):
            floor = ", ".join(f"{_added(r, q, 'floor'):.2f}" for r in low)
            measured += f" (pass-through floor: {floor} ms)"
        rows.append(
            (
                f"added TTFT {q} ≤ {limit:g} ms at concurrency 1–64",
                measured,
                all(v <= limit for v in added.values()),
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
                    f" (pass-through floor: {_ratio(at64['floor'], at64['direct'])})"
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


def _added(row: dict[str, Any], q: str, side: str = "proxy") -> float:
    return float(row[side]["ttft_ms"][q] - row["direct"]["ttft_ms"][q])


def _floor_and_proxy(row: dict[str, Any], q: str) -> str:
    """Added TTFT at percentile `q` of the floor and (bold) of the proxy."""
    return f"{_ms(_added(row, q, 'floor'))} / **{_ms(_added(row, q))}**"


def _times_floor(row: dict[str, Any], q: str) -> str:
    """The proxy's added TTFT as a multiple of the pass-through floor's, same run."""
    floor = _added(row, q, "floor")
    return f"{_added(row, q) / floor:.1f}×" if floor > 0 else "–"


def _streams_per_core(result: dict[str, Any], interval_ms: float) -> str:
    """How many streams at this pace one core carries: 1 s of CPU ÷ (CPU per chunk × chunks a
    second of one stream)."""
    per_chunk = cpu_us_per_chunk(result)
    if not per_chunk:
        return "–"
    return f"{1e6 / (per_chunk * 1000 / interval_ms):,.0f}"


def _ratio(result: dict[str, Any], direct: dict[str, Any]) -> str:
    if not direct["events_per_s"]:
        return "–"
    return f"{result['events_per_s'] / direct['events_per_s']:.0%}"


def _cpu_ms(result: dict[str, Any], row: dict[str, Any]) -> str:
    """CPU time of the middle process per request (warm-up requests, one per worker and
    repeat, included)."""
    served = result["requests"] + row["concurrency"] * result.get("repeats", 1)
    return f"{result['proxy_cpu_s'] / max(1, served) * 1e3:.2f}"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    cfg = results["config"]
    out: list[str] = []
    w = out.append
    w("# Benchmarks: kimi-proxy against the provider itself\n")
    w(
        "Generated by `.venv/bin/python -m bench.run` (see `bench/README.md`); raw numbers in "
        "`bench/results/results.json`. Do not edit by hand: re-run the benchmark.\n"
    )
    w(
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"Linux {m['kernel']}, Python {m['python']}. Upstream, proxy and load client are "
        f"separate processes on this one machine (loopback), sharing its {m['cores']} cores. "
        f"Whole run: {results['duration_s']:.0f} s. Proxy worker processes: "
        f"{cfg.get('workers', 1)} (`kimi-proxy serve --workers`).\n"
    )
    source = results.get("proxy_source")
    if source:
        dirty = source["uncommitted"]
        note = f", plus uncommitted changes to {', '.join(dirty)}" if dirty else ""
        w(
            f"Proxy code: `kimi_proxy` from the {source['source']} "
            f"(commit {source['commit']}{note}).\n"
        )
    versions = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    w(f"Packages: {versions}.\n")
    body = results["body_bytes"]
    w(
        f"Request: a generated Claude-Code-shaped body (`bench/workload.py`): "
        f"{body['proxy_stream']:,} bytes to the proxy (3 system blocks, 12 tools, 8 turns with "
        f"tool results); the direct client sends the proxy's own translation of it, "
        f"{body['direct_stream']:,} bytes. Response: {cfg['chunks']} content chunks of "
        f"{cfg['size']} characters (+ role, finish, usage and `[DONE]` events), written as fast "
        "as the upstream can.\n"
    )
    w("![added latency and throughput by concurrency](benchmarks.png)\n")

    w("## Targets\n")
    w("| Target | Measured | Result |")
    w("| --- | --- | --- |")
    for name, measured, ok in targets(results):
        w(f"| {name} | {measured} | {_pf(ok)} |")
    w("")

    w("## Streaming\n")
    w(machine_line(results))
    w(
        f"Each level runs as {results['config'].get('repeats', 1)} interleaved repeats (direct, "
        "floor, proxy, direct, …) so that a noisy moment on the shared machine hits every side; "
        "rates and percentiles are the median of the repeats, counts and CPU times their sum. "
        "TTFT = time from sending the request to the first text delta at the client. Added = "
        "proxy − direct at the same percentile. Events/s = content deltas received per second "
        "while the load ran (one per upstream content chunk on both sides). CPU/chunk = proxy "
        "process CPU time (user+system) over the level ÷ content chunks it streamed (per-request "
        "work amortized in). Proxy CPU = that CPU time ÷ wall time (100% = one core: its event "
        "loop is single-threaded).\n"
    )
    w(
        "| Concurrency | Requests | Errors direct / proxy | TTFT p50 direct / proxy / added "
        "(ms) | TTFT p99 direct / proxy / added (ms) | Total p50 direct / proxy (ms) | Total p99 "
        "direct / proxy (ms) | Events/s direct | Events/s proxy | Ratio | Proxy CPU/chunk | "
        "Proxy CPU |"
    )
    w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in results["streaming"]:
        d, p = row["direct"], row["proxy"]
        ratio = p["events_per_s"] / d["events_per_s"] if d["events_per_s"] else float("nan")
        w(
            f"| {row['concurrency']} | {d['requests']} / {p['requests']} "
            f"| {d['errors']} / {p['errors']} "
            f"| {_ms(d['ttft_ms']['p50'])} / {_ms(p['ttft_ms']['p50'])} / "
            f"**{_ms(_added(row, 'p50'))}** "
            f"| {_ms(d['ttft_ms']['p99'])} / {_ms(p['ttft_ms']['p99'])} / "
            f"**{_ms(_added(row, 'p99'))}** "
            f"| {_ms(d['total_ms']['p50'])} / {_ms(p['total_ms']['p50'])} "
            f"| {_ms(d['total_ms']['p99'])} / {_ms(p['total_ms']['p99'])} "
            f"| {d['events_per_s']:,.0f} | {p['events_per_s']:,.0f} | {ratio:.1%} "
            f"| {cpu_us_per_chunk(p):.0f} µs | {p['proxy_cpu_s'] / p['process_wall_s']:.0%} |"
        )
    w("")
    w(
        "Client and upstream CPU (seconds over each measurement, direct / proxy), to show the "
        "load client is not the bottleneck:\n"
    )
    w("| Concurrency | Client CPU | Upstream CPU | Wall (s) |")
    w("| ---: | ---: | ---: | ---: |")
    for row in results["streaming"]:
        d, p = row["direct"], row["proxy"]
        w(
            f"| {row['concurrency']} | {d['client_cpu_s']:.2f} / {p['client_cpu_s']:.2f} "
            f"| {d['upstream_cpu_s']:.2f} / {p['upstream_cpu_s']:.2f} "
            f"| {d['wall_s']:.2f} / {p['wall_s']:.2f} |"
        )
    w("")

    if all("floor" in row for row in results["streaming"]):
        w("### The stack's share: the pass-through floor\n")
        w(
            "The floor (`bench/passthrough.py`) is the proxy's own server stack — uvicorn with "
            "uvloop and httptools, and the proxy's upstream transport (asyncio and httptools) — "
            "forwarding the bytes untouched: no parsing, validation or translation. What it adds "
            "over direct is the cost of a Python HTTP hop on this machine; what the proxy adds "
            "over the floor is the proxy's own work. CPU per request is the middle process's "
            "CPU time ÷ requests.\n"
        )
        w(
            "| Concurrency | Added TTFT p50 floor / proxy (ms) | Proxy ÷ floor, p50 | Added TTFT "
            "p99 floor / proxy (ms) | Events/s direct / floor / proxy | Floor, proxy vs direct | "
            "CPU/request floor / proxy |"
        )
        w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in results["streaming"]:
            d, f, p = row["direct"], row["floor"], row["proxy"]
            w(
                f"| {row['concurrency']} "
                f"| {_floor_and_proxy(row, 'p50')} "
                f"| {_times_floor(row, 'p50')} "
                f"| {_floor_and_proxy(row, 'p99')} "
                f"| {d['events_per_s']:,.0f} / {f['events_per_s']:,.0f} / "
                f"{p['events_per_s']:,.0f} "
                f"| {_ratio(f, d)} / {_ratio(p, d)} "
                f"| {_cpu_ms(f, row)} / {_cpu_ms(p, row)} ms |"
            )
        w("")

    paced = results.get("paced")
    if paced:
        w(f"## Streaming at a provider's pace ({paced['interval_ms']:g} ms a chunk)\n")
        w(machine_line(results))
        w(
            f"The same request; the upstream sends its {paced['chunks']} chunks one per "
            f"{paced['interval_ms']:g} ms (about the pace of a fast hosted model), so neither "
            "side is saturated: the added time to first token here is the proxy's latency, not "
            "queueing. Each level runs 8 requests per concurrent stream; the workers' first "
            "requests are spread evenly over one stream's length, as independent users arrive "
            "(started in one burst, closed-loop workers stay in step and each request queues "
            "behind the others' request work). Each chunk arrives on its own here, so CPU per "
            "chunk is what a stream costs at a real provider's pace: a network read and a write "
            "per chunk.\n"
        )
        w(
            "| Concurrency | Requests | Errors | TTFT p50 direct / floor / proxy (ms) | Added p50 "
            "floor / proxy (ms) | TTFT p99 direct / floor / proxy (ms) | Added p99 floor / proxy "
            "(ms) | CPU/chunk floor / proxy (request work included) | Proxy CPU | Streams per core "
            "at this pace |"
        )
        w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in paced["levels"]:
            d, f, p = row["direct"], row["floor"], row["proxy"]
            errors = " / ".join(str(r["errors"]) for r in (d, f, p))
            w(
                f"| {row['concurrency']} | {p['requests']} | {errors} "
                f"| {_ms(d['ttft_ms']['p50'])} / {_ms(f['ttft_ms']['p50'])} / "
                f"{_ms(p['ttft_ms']['p50'])} "
                f"| {_floor_and_proxy(row, 'p50')} "
                f"| {_ms(d['ttft_ms']['p99'])} / {_ms(f['ttft_ms']['p99'])} / "
                f"{_ms(p['ttft_ms']['p99'])} "
                f"| {_floor_and_proxy(row, 'p99')} "
                f"| {cpu_us_per_chunk(f):.0f} / {cpu_us_per_chunk(p):.0f} µs "
                f"| {p['proxy_cpu_s'] / p['process_wall_s']:.0%} "
                f"| {_streams_per_core(p, paced['interval_ms'])} |"
            )
        w("")

    cost = results.get("cost")
    if cost:
        w(render_cost(cost, machine_line(results)))
    w("## Non-streaming\n")
    w(machine_line(results))
    w("Time to the whole JSON body (the same upstream reply as one completion).\n")
    w(
        "| Concurrency | Requests | Errors direct / proxy | p50 direct / proxy / added (ms) | "
        "p99 direct / proxy / added (ms) | Requests/s direct / proxy | Proxy CPU/request |"
    )
    w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in results["non_streaming"]:
        d, p = row["direct"], row["proxy"]
        w(
            f"| {row['concurrency']} | {d['requests']} / {p['requests']} "
            f"| {d['errors']} / {p['errors']} "
            f"| {_ms(d['total_ms']['p50'])} / {_ms(p['total_ms']['p50'])} / "
            f"**{_ms(p['total_ms']['p50'] - d['total_ms']['p50'])}** "
            f"| {_ms(d['total_ms']['p99'])} / {_ms(p['total_ms']['p99'])} / "
            f"**{_ms(p['total_ms']['p99'] - d['total_ms']['p99'])}** "
            f"| {d['requests_per_s']:,.0f} / {p['requests_per_s']:,.0f} | {_cpu_ms(p, row)} ms |"
        )
    w("")

    flushing = results.get("flushing")
    if flushing:
        w("## Event flushing\n")
        w(machine_line(results))
        w(
            f"One stream at a time, upstream pacing {flushing['interval_ms']:g} ms between "
            f"{flushing['chunks']} content chunks, 3 requests per side. Inter-arrival of "
            "consecutive text deltas at the client: batching would show gaps near 0 ms next to "
            f"gaps near {2 * flushing['interval_ms']:g} ms.\n"
        )
        w("| Side | Gaps | Min (ms) | p50 (ms) | Max (ms) | Gaps < 25 ms | Errors |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for side in ("direct", "proxy"):
            g = flushing[side]["gaps"]
            w(
                f"| {side} | {g['count']} | {g['min']:.1f} | {g['p50']:.1f} | {g['max']:.1f} "
                f"| {g['under_25ms']} | {flushing[side]['errors']} |"
            )
        w("")

    many = results.get("open_streams")
    if many:
        w(f"## {many['streams']:,} concurrent open streams\n")
        w(machine_line(results))
        w(
            f"A fresh proxy process; the upstream sends {many['chunks']} chunks, one per "
            f"{many['interval_ms']:g} ms; all {many['streams']:,} streams are opened at once. "
            "Peak RSS is the kernel's high-water mark (VmHWM) of the proxy process; the sampled "
            "maximum (psutil, every 20 ms) is shown next to it.\n"
        )
        d, p = many["direct"], many["proxy"]
        w("| Side | OK | Errors | TTFT p50 / p99 (ms) | Total p50 / p99 (ms) | Error kinds |")
        w("| --- | ---: | ---: | ---: | ---: | --- |")
        for side, r in (("direct", d), ("proxy", p)):
            kinds = "; ".join(f"{k} ×{v}" for k, v in r["error_kinds"].items()) or "–"
            w(
                f"| {side} | {r['ok']} | {r['errors']} | {_ms(r['ttft_ms']['p50'])} / "
                f"{_ms(r['ttft_ms']['p99'])} | {_ms(r['total_ms']['p50'])} / "
                f"{_ms(r['total_ms']['p99'])} | {kinds} |"
            )
        w("")
        w(
            f"Proxy RSS: idle {many['proxy_idle_rss'] / 2**20:.0f} MB, peak "
            f"{many['proxy_peak_rss_hwm'] / 2**20:.0f} MB (sampled max "
            f"{many['proxy_peak_rss_sampled'] / 2**20:.0f} MB), after "
            f"{many['proxy_rss_after'] / 2**20:.0f} MB. Proxy CPU for the phase: "
            f"{p['proxy_cpu_s']:.2f} s = {cpu_us_per_chunk(p):.0f} µs per chunk.\n"
        )

    profile = results.get("profile")
    if profile and profile.get("summary"):
        s = profile["summary"]
        w("## Profile (py-spy, 64 concurrent streams)\n")
        w(
            f"{s['samples']:,} samples of the proxy's running thread (idle time excluded) while "
            "the load client ran 64 concurrent streams "
            f"({profile['events_per_s_while_profiled']:,.0f} events/s under the profiler). "
            f"Flame graph: `{profile.get('flamegraph', '–')}` "
            "(under bench/results/, not committed). Commands:\n"
        )
        w("```")
        for command in profile["commands"]:
            w(command.replace(str(ROOT) + "/", ""))
        w("```\n")
        w("Where the time goes, by the file of the innermost Python frame (self time):\n")
        w("| File | Share |")
        w("| --- | ---: |")
        for name, n in s["by_file"][:12]:
            w(f"| `{name}` | {n / s['samples']:.1%} |")
        w("\nInclusive time (the function and everything it calls):\n")
        w("| Function | Share |")
        w("| --- | ---: |")
        for name, n in s["inclusive"][:25]:
            w(f"| `{name}` | {n / s['samples']:.1%} |")
        w("\nSelf time (the innermost frame; C calls such as orjson count in their caller):\n")
        w("| Function | Share |")
        w("| --- | ---: |")
        for name, n in s["self"][:15]:
            w(f"| `{name}` | {n / s['samples']:.1%} |")
        w("")

    for hand_written in ("analysis.md", "pool.md", "dashboard.md", "redis.md", "many.md"):
        path = ROOT / "bench" / hand_written
        if path.exists():
            w(path.read_text().rstrip() + "\n")

    w("## Method\n")
    w(
        "- One command starts the scripted upstream (`bench/upstream.py`: raw asyncio + "
        "httptools on uvloop, pre-encoded SSE chunks, no delays), the real `python -m kimi_proxy "
        "serve` in front of it (`KIMI_API_KEY=bench`, `KIMI_MAX_STREAMS="
        f"{cfg['max_streams']}`, every other setting at its default, the access log line per "
        "request included), and for every measurement a load client in its own process "
        "(`bench/loadgen.py`: raw asyncio + httptools, one keep-alive connection per concurrent "
        "worker). The same client code measures direct and proxy.\n"
        "- Each level: every worker first sends one warm-up request (not measured), then the "
        f"workers share max({cfg['min_requests']}, {cfg['rounds']} × concurrency) requests, "
        f"stopping early after {cfg['max_seconds']:g} s (streaming levels: split over "
        f"{cfg.get('repeats', 1)} interleaved repeats).\n"
        "- A request is an error when the status is not 200, the connection fails, an `error` "
        "event arrives, the stream lacks its final event, or the number of text deltas differs "
        "from the chunks sent.\n"
        "- All three processes share the machine's cores, so at high concurrency the proxy "
        "competes with the client and upstream for CPU; the direct numbers are the limit of this "
        "machine, not of a real provider.\n"
    )
    return "\n".join(out)


# -- chart --------------------------------------------------------------------------------


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["streaming"]
    levels = [r["concurrency"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(levels, [_added(r, "p50") for r in rows], "o-", label="added TTFT p50")
    left.plot(levels, [_added(r, "p99") for r in rows], "s-", label="added TTFT p99")
    if all("floor" in r for r in rows):
        floor_added = [_added(r, "p50", "floor") for r in rows]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Re-render the docs from saved results.")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "results.json"))
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where BENCHMARKS.md goes")
    args = parser.parse_args(argv)
    results = orjson.loads(Path(args.results).read_bytes())
    docs = Path(args.docs)
    docs.mkdir(exist_ok=True)
    write_chart(results, docs / "benchmarks.png")
    (docs / "BENCHMARKS.md").write_text(render(results))
    print(f"wrote {docs / 'BENCHMARKS.md'} and {docs / 'benchmarks.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
