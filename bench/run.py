"""The benchmark, in one command: `.venv/bin/python -m bench.run` (see bench/README.md).

Starts the scripted upstream (`bench.upstream`) and the real `kimi-proxy serve` in front of it,
each its own process, then runs the load client (`bench.loadgen`, its own process per
measurement) against the upstream directly and through the proxy, side by side:

1. streaming at 1, 16, 64 and 256 concurrent requests (upstream as fast as it can);
2. the same at a provider's pace (one chunk per 5 ms) at 1, 16 and 64: added TTFT unsaturated;
   both phases also measure the pass-through floor (`bench.passthrough`: the proxy's server
   stack forwarding bytes untouched), so the stack's own cost and the proxy's are told apart;
3. non-streaming at 1 and 64;
4. event flushing: one stream at a time from a 50 ms-paced upstream, inter-arrival of deltas;
5. a py-spy profile of the proxy under the 64-stream load (skipped without py-spy);
6. 1,000 concurrent open streams from a slow upstream (1 chunk per 100 ms) against a fresh
   proxy process: peak RSS and errors.

Writes bench/results/results.json (raw), docs/BENCHMARKS.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from . import chart, cost, machine, profile_summary, report
from .measure import Bench, combine
from .processes import RESULTS, ROOT, SIDES, peak_rss, proxy_source, rss_sampler


class FullRun(Bench):
    """Every phase of the benchmark, in order (`run`)."""

    @property
    def sides(self) -> tuple[str, ...]:
        """Direct, floor and proxy; and the proxy at `--baseline-ref`, interleaved with them."""
        return SIDES + (("baseline",) if self.procs.baseline else ())

    def streaming(self) -> None:
        args = self.args
        self.procs.configure(args.chunks, args.size)
        for concurrency in args.levels:
            requests = max(args.min_requests, concurrency * args.rounds) // args.repeats
            parts: dict[str, list[dict[str, Any]]] = {side: [] for side in self.sides}
            for _ in range(args.repeats):  # interleaved, so a noisy moment hits every side
                for side in self.sides:
                    result = self.load(
                        side,
                        stream=True,
                        concurrency=concurrency,
                        requests=requests,
                        max_seconds=args.max_seconds / args.repeats,
                        expected=args.chunks,
                    )
                    parts[side].append(result)
                    self._say(side, result)
            sides = {side: combine(results) for side, results in parts.items()}
            self.results["streaming"].append({"concurrency": concurrency, **sides})

    def paced(self) -> None:
        """Streams at a provider's pace (one chunk per `--pace-ms`), so nothing is saturated:
        what the proxy adds to time to first token when it is not queueing. The workers start
        spread over one stream's length, as independent users would: started together, the
        closed-loop workers would stay in step and every request would queue behind 63 others."""
        args = self.args
        interval = args.pace_ms / 1e3
        self.procs.configure(args.chunks, args.size, interval)
        out: dict[str, Any] = {"interval_ms": args.pace_ms, "chunks": args.chunks, "levels": []}
        for concurrency in (1, 16, 64):
            sides = {}
            for side in self.sides:
                sides[side] = self.load(
                    side,
                    stream=True,
                    concurrency=concurrency,
                    requests=concurrency * 8,
                    max_seconds=args.max_seconds,
                    expected=args.chunks,
                    stagger=interval * args.chunks,  # arrivals spread over one stream's length
                )
                self._say(side, sides[side])
            out["levels"].append({"concurrency": concurrency, **sides})
        self.results["paced"] = out

    def non_streaming(self) -> None:
        args = self.args
        self.procs.configure(args.chunks, args.size)
        for concurrency in (1, 64):
            requests = max(args.min_requests, concurrency * args.rounds)
            pair = {}
            for side in ("direct", "proxy"):
                pair[side] = self.load(
                    side,
                    stream=False,
                    concurrency=concurrency,
                    requests=requests,
                    max_seconds=args.max_seconds,
                    expected=0,
                )
                self._say(side, pair[side])
            self.results["non_streaming"].append({"concurrency": concurrency, **pair})

    def flushing(self) -> None:
        chunks, interval = 40, 0.05
        self.procs.configure(chunks, self.args.size, interval)
        out: dict[str, Any] = {"interval_ms": interval * 1e3, "chunks": chunks}
        for side in ("direct", "proxy"):
            result = self.load(
                side,
                stream=True,
                concurrency=1,
                requests=3,
                max_seconds=30,
                expected=chunks,
                record=True,
                warmup=False,
            )
            gaps = result.pop("gaps_ms")
            result["gaps"] = {
                "count": len(gaps),
                "min": min(gaps, default=float("nan")),
                "p50": _quantile(gaps, 0.5),
                "max": max(gaps, default=float("nan")),
                "under_25ms": sum(1 for g in gaps if g < 25),
            }
            out[side] = result
            self._say(side, result, extra=f"gaps {result['gaps']}")
        self.results["flushing"] = out

    def profile(self) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists() or self.args.no_profile:
            self.results["profile"] = None
            return
        assert self.procs.proxy is not None
        self.procs.configure(self.args.chunks, self.args.size)
        duration = self.args.profile_seconds
        profiles: dict[str, Any] = {"commands": []}
        outputs = (("raw", RESULTS / "profile.txt"), ("flamegraph", RESULTS / "profile.svg"))
        for fmt, path in outputs:
            command = [
                py_spy,
                "record",
                "--pid",
                str(self.procs.proxy.pid),
                "--rate",
                "250",
                "--duration",
                str(duration),
                "--format",
                fmt,
                "--output",
                str(path),
            ]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.3)
            result = self.load(
                "proxy",
                stream=True,
                concurrency=64,
                requests=1_000_000,
                max_seconds=duration + 1,
                expected=self.args.chunks,
            )
            _, err = spy.communicate(timeout=60)
            if spy.returncode:
                profiles["error"] = err.decode(errors="replace")[-500:]
                break
            profiles["commands"].append(" ".join(command))
            profiles[fmt] = str(path.relative_to(ROOT))
            profiles.setdefault("events_per_s_while_profiled", result["events_per_s"])
        if "raw" in profiles:
            profiles["summary"] = profile_summary.summarize_profile(RESULTS / "profile.txt")
        self.results["profile"] = profiles

    def many_streams(self) -> None:
        """1,000 concurrent open streams from a slow upstream, against a fresh proxy."""
        chunks, interval, streams = 30, 0.1, self.args.open_streams
        self.procs.restart_proxy()
        assert self.procs.proxy is not None
        proxy = psutil.Process(self.procs.proxy.pid)
        self.procs.configure(chunks, self.args.size, interval)
        idle_rss = proxy.memory_info().rss
        out: dict[str, Any] = {"streams": streams, "chunks": chunks, "interval_ms": interval * 1e3}
        burst = functools.partial(
            self.load,
            stream=True,
            concurrency=streams,
            requests=streams,
            max_seconds=60,
            expected=chunks,
            warmup=False,
        )
        out["direct"] = burst("direct")
        self._say("direct", out["direct"])
        with rss_sampler(proxy) as samples:
            out["proxy"] = burst("proxy")
        out["proxy_idle_rss"] = idle_rss
        out["proxy_peak_rss_sampled"] = max(samples, default=0)
        out["proxy_peak_rss_hwm"] = peak_rss(proxy.pid)
        out["proxy_rss_after"] = proxy.memory_info().rss
        peak = out["proxy_peak_rss_hwm"] / 2**20
        self._say("proxy", out["proxy"], extra=f"peak RSS {peak:.0f} MB")
        self.results["open_streams"] = out

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.results["machine"] = machine.machine_info()
        self.results["config"] = {
            k: v for k, v in vars(self.args).items() if isinstance(v, int | float | str | list)
        }
        try:
            self.start()
            print("streaming (upstream as fast as it can):", flush=True)
            self.streaming()
            print(f"streaming at a provider's pace ({self.args.pace_ms:g} ms a chunk):", flush=True)
            self.paced()
            print(f"CPU a chunk and a request ({self.args.pace_ms:g} ms a chunk):", flush=True)
            cost.run_phase(self)
            print("non-streaming:", flush=True)
            self.non_streaming()
            print("event flushing (50 ms-paced upstream):", flush=True)
            self.flushing()
            print("profile (py-spy, 64 streams):", flush=True)
            self.profile()
            print(f"{self.args.open_streams} concurrent open streams (fresh proxy):", flush=True)
            self.many_streams()
        finally:
            self.procs.stop_all()
        self.results["duration_s"] = time.time() - started
        return self.results


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per response")
    parser.add_argument("--size", type=int, default=16, help="characters per content chunk")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=16, help="requests per worker per level")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats of each streaming level"
    )
    parser.add_argument("--min-requests", type=int, default=600, help="requests per level, min")
    parser.add_argument("--max-seconds", type=float, default=15, help="cap per measurement")
    parser.add_argument("--pace-ms", type=float, default=5, help="chunk interval, paced phase")
    parser.add_argument("--open-streams", type=int, default=1000)
    parser.add_argument("--max-streams", type=int, default=2000, help="KIMI_MAX_STREAMS")
    parser.add_argument("--profile-seconds", type=int, default=8)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="kimi-proxy serve --workers")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where BENCHMARKS.md goes")
    parser.add_argument(
        "--proxy-ref",
        help="benchmark kimi_proxy as committed at this git ref (default: the working tree)",
    )
    parser.add_argument(
        "--baseline-ref",
        help="also measure CPU a chunk and a request of kimi_proxy as committed at this ref",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.proxy_src, source = proxy_source(args.proxy_ref)
    sys.path.insert(0, str(args.proxy_src))  # the workload's translation uses the same code
    print(f"proxy: {source}", flush=True)
    bench = FullRun(args)
    bench.results["proxy_source"] = source
    results = bench.run()
    (RESULTS / "results.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    chart.write_chart(results, docs / "benchmarks.png")
    (docs / "BENCHMARKS.md").write_text(report.render(results))
    print(f"wrote {docs / 'BENCHMARKS.md'}, {docs / 'benchmarks.png'}, {RESULTS / 'results.json'}")
    print(f"total {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
