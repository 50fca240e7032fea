"""One measurement: the load client (`bench.loadgen`, its own process) against one side — the
upstream directly, the pass-through floor, the proxy or the baseline proxy — and the
combination of interleaved repeats into one figure. The phases are `bench.run`'s."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.workload import anthropic_request, openai_request

from .processes import HOST, RESULTS, ROOT, Processes, cpu_seconds, proxy_source, system_seconds


class Bench:
    """The processes of one benchmark run and the measurements taken against them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Processes(
            max_streams=args.max_streams, proxy_src=args.proxy_src, workers=args.workers
        )
        self.results: dict[str, Any] = {"streaming": [], "non_streaming": []}
        self.baseline_source: dict[str, Any] | None = None
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.bodies: dict[tuple[str, bool], Path] = {}
        sizes: dict[str, int] = {}
        for stream in (True, False):
            anthropic = anthropic_request(stream=stream)
            openai = openai_request(anthropic)
            for side, body in (("proxy", anthropic), ("direct", openai)):
                path = RESULTS / f"body_{side}_{'stream' if stream else 'plain'}.json"
                data = orjson.dumps(body)
                path.write_bytes(data)
                self.bodies[(side, stream)] = path
                sizes[f"{side}_{'stream' if stream else 'plain'}"] = len(data)
        self.results["body_bytes"] = sizes

    # -- one measurement
    def load(
        self,
        side: str,
        *,
        stream: bool,
        concurrency: int,
        requests: int,
        max_seconds: float,
        expected: int,
        record: bool = False,
        warmup: bool = True,
        stagger: float = 0.0,
        api_key: str = "bench",
    ) -> dict[str, Any]:
        procs = self.procs
        ports = {
            "proxy": procs.proxy_port,
            "floor": procs.floor_port,
            "baseline": procs.baseline_port,
        }
        port = ports.get(side, procs.upstream_port)
        wire = "direct" if side in ("direct", "floor") else "proxy"  # the floor: upstream's API
        job = {
            "side": wire,
            "stream": stream,
            "concurrency": concurrency,
            "requests": requests,
            "max_seconds": max_seconds,
            "expected_events": expected,
            "body_file": str(self.bodies[(wire, stream)]),
            "host": HOST,
            "port": port,
            "record_arrivals": record,
            "warmup": warmup,
            "stagger_s": stagger,
            "api_key": api_key,
        }
        middle = {"floor": procs.floor, "baseline": procs.baseline}.get(side, procs.proxy)
        assert middle is not None and self.procs.upstream is not None
        proxy = psutil.Process(middle.pid)  # the process in the middle: proxy or floor
        upstream = psutil.Process(self.procs.upstream.pid)
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", orjson.dumps(job).decode()],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        # Proxy CPU is counted over the whole client run, warm-up requests (one per worker)
        # included; the client reports their events too, so CPU per chunk divides by both.
        proxy_cpu0, upstream_cpu0, t0 = cpu_seconds(proxy), cpu_seconds(upstream), time.time()
        proxy_system0 = system_seconds(proxy)
        out, _ = client.communicate(timeout=max_seconds + 120)
        elapsed = time.time() - t0
        result: dict[str, Any] = orjson.loads(out)
        result["side"] = side
        result["proxy_cpu_s"] = cpu_seconds(proxy) - proxy_cpu0
        result["proxy_system_s"] = system_seconds(proxy) - proxy_system0
        result["upstream_cpu_s"] = cpu_seconds(upstream) - upstream_cpu0
        result["process_wall_s"] = elapsed
        return result

    # -- phases
    def start(self) -> None:
        """The upstream, the proxy, the floor and, with `--baseline-ref`, the baseline proxy."""
        self.procs.start_upstream()
        self.procs.start_proxy()
        self.procs.start_floor()
        if self.args.baseline_ref:
            src, self.baseline_source = proxy_source(self.args.baseline_ref, "baseline-src")
            self.procs.start_baseline(src)

    def _say(self, side: str, result: dict[str, Any], extra: str = "") -> None:
        mode = "stream" if result["stream"] else "plain "
        print(
            f"  {mode} c={result['concurrency']:<5} {side:<6} n={result['requests']:<6} "
            f"err={result['errors']:<3} ttft p50={result['ttft_ms']['p50']:8.2f} ms "
            f"p99={result['ttft_ms']['p99']:8.2f} ms  events/s={result['events_per_s']:9.0f} "
            f"proxy cpu={result['proxy_cpu_s']:.2f}s {extra}",
            flush=True,
        )


SUMMED = (
    *("requests", "ok", "errors", "events", "warmup_events"),
    *("proxy_cpu_s", "upstream_cpu_s", "client_cpu_s", "wall_s", "process_wall_s"),
)


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement from its interleaved repeats: counts and times summed, rates and
    percentiles the median of the repeats (robust to a noisy moment on a shared machine)."""
    out = dict(parts[0], repeats=len(parts))
    for key in SUMMED:
        out[key] = sum(part[key] for part in parts)
    for key in ("events_per_s", "requests_per_s"):
        out[key] = statistics.median(part[key] for part in parts)
    for key in ("ttft_ms", "total_ms"):
        out[key] = {q: statistics.median(part[key][q] for part in parts) for q in parts[0][key]}
    kinds: dict[str, int] = {}
    for part in parts:
        for kind, count in part["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    out["error_kinds"] = kinds
    return out
