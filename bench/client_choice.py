"""The client decision, in one run: `python -m bench.client_choice`.

Three copies of the real proxy app, identical but for the provider client (`bench/clients.py`:
ours, aiohttp, httpx), in front of the same scripted upstream (`bench.upstream`), measured side
by side with interleaved repeats by the benchmark's own load client:

* added time to first token at concurrency 1 (p50, p99; proxy − direct),
* the proxy process's CPU per streamed chunk at concurrency 64 (from /proc, per-request work
  amortized in),
* RSS per open stream: 1,000 slow streams at once, peak RSS above the idle process,
* connection reuse: upstream connections opened for 300 sequential requests.

Issue 18's rule: move to the best library if it is within 0.15 ms of ours at c=1 and within 15%
on CPU per chunk.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
from typing import Any

import psutil

from kimi_proxy.cli.launcher import free_port

from .measure import Bench
from .processes import HOST, RESULTS, ROOT, cpu_seconds, http, peak_rss, rss_sampler, wait_healthy

CLIENTS = ("ours", "aiohttp", "httpx")
REPEATS = 3


def upstream_connections(port: int) -> int:
    stats: dict[str, int] = http("GET", f"http://{HOST}:{port}/_bench/stats")
    return stats["connections"]


def main() -> None:
    args = argparse.Namespace(
        max_streams=2000, proxy_src=ROOT, workers=1, chunks=100, size=16, max_seconds=15
    )
    bench = Bench(args)
    procs = bench.procs
    procs.start_upstream()
    procs.configure(args.chunks, args.size)
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    env = dict(os.environ, KIMI_API_KEY="bench", KIMI_MAX_STREAMS="2000", KIMI_LOG_LEVEL="warning")
    env["KIMI_UPSTREAM_URL"] = f"http://{HOST}:{procs.upstream_port}/v1"
    for client in CLIENTS:
        ports[client] = free_port()
        log = open(RESULTS / f"client-{client}.log", "wb")  # noqa: SIM115 - the process's
        servers[client] = subprocess.Popen(
            [sys.executable, "-m", "bench.serve_with", client],
            cwd=ROOT,
            env={**env, "KIMI_PROXY_PORT": str(ports[client])},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(f"http://{HOST}:{ports[client]}/health", servers[client])

    def use(client: str) -> None:  # point the benchmark's "proxy" side at this server
        procs.proxy = servers[client]
        procs.proxy_port = ports[client]

    rows: dict[str, dict[str, Any]] = {c: {} for c in CLIENTS}
    use(CLIENTS[0])  # the load's CPU accounting needs a server in the middle, direct too
    try:
        for level, key in ((1, "c1"), (64, "c64")):
            parts: dict[str, list[dict[str, Any]]] = {s: [] for s in ("direct", *CLIENTS)}
            requests = max(600, level * 16) // REPEATS
            for _ in range(REPEATS):
                for side in parts:
                    if side != "direct":
                        use(side)
                    parts[side].append(
                        bench.load(
                            "direct" if side == "direct" else "proxy",
                            stream=True,
                            concurrency=level,
                            requests=requests,
                            max_seconds=args.max_seconds,
                            expected=args.chunks,
                        )
                    )
            direct = parts["direct"]
            for client in CLIENTS:
                got = parts[client]
                added_p50 = statistics.median(
                    g["ttft_ms"]["p50"] - d["ttft_ms"]["p50"]
                    for g, d in zip(got, direct, strict=True)
                )
                added_p99 = statistics.median(
                    g["ttft_ms"]["p99"] - d["ttft_ms"]["p99"]
                    for g, d in zip(got, direct, strict=True)
                )
                chunks = sum(g["events"] + g["warmup_events"] for g in got)
                cpu = sum(g["proxy_cpu_s"] for g in got)
                errors = sum(g["errors"] for g in got)
                rows[client][key] = {
                    "added_p50_ms": added_p50,
                    "added_p99_ms": added_p99,
                    "cpu_us_per_chunk": cpu / chunks * 1e6 if chunks else float("nan"),
                    "errors": errors,
                }
        for client in CLIENTS:  # connection reuse: sequential requests, fresh counts
            use(client)
            before = upstream_connections(procs.upstream_port)
            bench.load(
                "proxy",
                stream=True,
                concurrency=1,
                requests=300,
                max_seconds=30,
                expected=args.chunks,
            )
            rows[client]["connections_for_300"] = upstream_connections(procs.upstream_port) - before
        procs.configure(30, args.size, 0.1)  # slow streams: 3 s each
        for client in CLIENTS:
            use(client)
            process = psutil.Process(servers[client].pid)
            idle = process.memory_info().rss
            burst = functools.partial(
                bench.load,
                "proxy",
                stream=True,
                concurrency=1000,
                requests=1000,
                max_seconds=60,
                expected=30,
                warmup=False,
            )
            with rss_sampler(process) as samples:
                result = burst()
            peak = max(max(samples, default=0), peak_rss(process.pid))
            rows[client]["kb_per_open_stream"] = (peak - idle) / 1000 / 1024
            rows[client]["open_stream_errors"] = result["errors"]
            rows[client]["cpu_s_total"] = cpu_seconds(process)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=20)
        procs.stop_all()
    print(
        "client   | added TTFT c=1 p50 / p99 | CPU/chunk c=64 | KB per open stream | "
        "upstream connections for 300 requests | errors"
    )
    for client in CLIENTS:
        r = rows[client]
        print(
            f"{client:<8} | {r['c1']['added_p50_ms']:.3f} / {r['c1']['added_p99_ms']:.3f} ms | "
            f"{r['c64']['cpu_us_per_chunk']:.1f} µs | {r['kb_per_open_stream']:.1f} | "
            f"{r['connections_for_300']} | "
            f"{r['c1']['errors'] + r['c64']['errors'] + r['open_stream_errors']}"
        )


if __name__ == "__main__":
    main()
