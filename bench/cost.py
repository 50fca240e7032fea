"""CPU per streamed chunk and per request, for the proxy process alone, at a provider's pace.

The same streams run with a short and a long answer (`--short`, `--long` chunks), every chunk
its own network read (the upstream paces them, `--pace-ms`). The middle process's CPU time
(the scheduler's count, /proc/PID/task/*/schedstat) per request grows with the chunks: the
slope is what one chunk costs (read, decode, translate, frame, write), the rest is what one
request costs (read and validate the body, translate it, open the upstream call, log). From
those: streams one core carries at this pace. The pass-through floor runs beside the proxy, and
with `--baseline-ref` the proxy as committed at that ref too, interleaved over `--repeats`
rounds so that a noisy moment on a shared machine hits every side; each figure is the median
of the rounds.

    python -m bench.cost [--concurrency 64] [--pace-ms 5] [--baseline-ref REF]

`bench.run` runs the same measurement as one of its phases.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import orjson

from bench.measure import Bench
from bench.processes import RESULTS, proxy_source

ROUNDS = 16  # requests per concurrent stream in each measurement


def measure(
    bench: Bench,
    *,
    sides: tuple[str, ...],
    concurrency: int,
    pace_ms: float,
    short: int,
    long: int,
    repeats: int,
) -> dict[str, Any]:
    """Per-chunk and per-request CPU of each side (`floor`, `proxy`, `baseline`)."""
    interval = pace_ms / 1e3
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "pace_ms": pace_ms,
        "chunks": [short, long],
        "repeats": repeats,
    }
    rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for _ in range(repeats):
        for side in sides:
            runs = {}
            for chunks in (short, long):
                bench.procs.configure(chunks, bench.args.size, interval)
                result = bench.load(
                    side,
                    stream=True,
                    concurrency=concurrency,
                    requests=concurrency * ROUNDS,
                    max_seconds=120,
                    expected=chunks,
                    stagger=interval * chunks,
                )
                served = result["requests"] + concurrency  # and each worker's warm-up request
                runs[str(chunks)] = {
                    "requests": served,
                    "errors": result["errors"],
                    "cpu_s": result["proxy_cpu_s"],
                    "cpu_per_request_us": result["proxy_cpu_s"] / served * 1e6,
                    "system_per_request_us": result["proxy_system_s"] / served * 1e6,
                    "upstream_cpu_s": result["upstream_cpu_s"],
                    "wall_s": result["process_wall_s"],
                    "ttft_ms": result["ttft_ms"],
                }
            chunk_us, request_us = split_runs(runs, "cpu_per_request_us", short, long)
            system_us, _ = split_runs(runs, "system_per_request_us", short, long)
            figures = {"chunk_us": chunk_us, "request_us": request_us, "system_us": system_us}
            rounds[side].append({**figures, "runs": runs})
    for side in sides:
        chunk_us = statistics.median(r["chunk_us"] for r in rounds[side])
        request_us = statistics.median(r["request_us"] for r in rounds[side])
        out[side] = {
            "cpu_per_chunk_us": chunk_us,
            "system_per_chunk_us": statistics.median(r["system_us"] for r in rounds[side]),
            "cpu_per_request_us": request_us,
            "streams_per_core": streams_per_core(chunk_us, request_us, pace_ms, long),
            "errors": sum(run["errors"] for r in rounds[side] for run in r["runs"].values()),
            "rounds": rounds[side],
        }
    return out


def summary(side: str, figures: dict[str, Any]) -> str:
    """One side's figures on one line."""
    rounds = " ".join(f"{r['chunk_us']:.1f}" for r in figures["rounds"])
    return (
        f"{side:<8} {figures['cpu_per_chunk_us']:5.1f} µs a chunk "
        f"({figures['system_per_chunk_us']:.1f} in the kernel), "
        f"{figures['cpu_per_request_us']:4.0f} µs a request, "
        f"{figures['streams_per_core']:4.0f} streams a core, errors {figures['errors']}, "
        f"rounds (µs a chunk): {rounds}"
    )


def split(short_us: float, long_us: float, short: int, long: int) -> tuple[float, float]:
    """CPU per chunk and per request from the CPU per request of a short and a long answer."""
    chunk_us = (long_us - short_us) / (long - short)
    return chunk_us, short_us - short * chunk_us


def split_runs(runs: dict[str, Any], figure: str, short: int, long: int) -> tuple[float, float]:
    """`split` of one per-request figure of the short and the long run."""
    return split(runs[str(short)][figure], runs[str(long)][figure], short, long)


def streams_per_core(chunk_us: float, request_us: float, pace_ms: float, chunks: int) -> float:
    """Concurrent streams of `chunks` chunks at `pace_ms` that one core's CPU time covers."""
    stream_s = chunks * pace_ms / 1e3
    cpu_s = (request_us + chunks * chunk_us) / 1e6
    return stream_s / cpu_s if cpu_s > 0 else float("inf")


def run_phase(
    bench: Bench, concurrency: int = 64, short: int = 10, long: int | None = None
) -> None:
    """CPU per chunk and per request at the provider's pace (`bench.cost`), the floor and
    the proxy side by side, and the proxy at `--baseline-ref` when one is given; answers
    of `short` and `long` (default `--chunks`) chunks."""
    sides = ("floor", "proxy") + (("baseline",) if bench.procs.baseline else ())
    out = measure(
        bench,
        sides=sides,
        concurrency=concurrency,
        pace_ms=bench.args.pace_ms,
        short=short,
        long=bench.args.chunks if long is None else long,
        repeats=bench.args.repeats,
    )
    out["baseline_source"] = bench.baseline_source
    bench.results["cost"] = out
    for side in sides:
        print(f"  {summary(side, out[side])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=5)
    parser.add_argument("--short", type=int, default=10, help="chunks of the short answer")
    parser.add_argument("--long", type=int, default=100, help="chunks of the long answer")
    parser.add_argument("--size", type=int, default=16, help="characters per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--proxy-ref", help="the proxy as committed at this git ref")
    parser.add_argument("--baseline-ref", help="also measure the proxy as committed here")
    args = parser.parse_args(argv)
    args.max_streams, args.workers = 2000, 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.proxy_src, source = proxy_source(args.proxy_ref)
    sys.path.insert(0, str(args.proxy_src))
    bench = Bench(args)
    try:
        bench.start()
        run_phase(bench, concurrency=args.concurrency, short=args.short, long=args.long)
    finally:
        bench.procs.stop_all()
    out = {**bench.results["cost"], "proxy_source": source}
    (RESULTS / "cost.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())


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
