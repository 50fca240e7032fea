"""10,000 open streams on one worker: `python -m bench.many_streams [--streams N]`.

A team proxy holds thousands of streams that look idle: models think, then trickle tokens.
This opens `--streams` of them against a fresh `kimi-proxy serve` (one worker), arriving
evenly over `--ramp` seconds as independent users do, each a slow stream from the scripted
upstream (`--chunks` chunks, one per `--interval` seconds), and while they are all open:

* peak RSS of the proxy (VmHWM, and psutil sampled every 20 ms) above the idle process, per
  open stream;
* errors (any stream that did not end whole);
* the garbage collector's pauses over the run, by generation (the proxy's
  `kimi_gc_pause_seconds`): a full collection walks every open stream;
* a new request's added time to first token: `--probes` short requests (10 chunks, 5 ms
  apart) at concurrency 1 through the proxy and directly to the upstream, in two interleaved
  rounds, while the streams are open.

The file limit is raised for this process and its children (the proxy needs two descriptors a
stream): the benchmark raises it, the product does not.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
import urllib.request
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from .measure import Bench
from .processes import HOST, ROOT, http, peak_rss, rss_sampler

PROBE_CHUNKS = 10  # a probe's answer: 10 chunks, 5 ms apart
PROBE_INTERVAL = 0.005


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(needed, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.many_streams")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds over which they open")
    parser.add_argument("--chunks", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between chunks")
    parser.add_argument("--probes", type=int, default=40)
    options = parser.parse_args()
    raise_file_limit(2 * options.streams + 2_000)
    args = argparse.Namespace(
        max_streams=options.streams + 100,
        proxy_src=ROOT,
        workers=1,
        chunks=100,
        size=16,
    )
    bench = Bench(args)
    procs = bench.procs
    procs.start_upstream()
    procs.start_proxy()
    procs.configure(options.chunks, 16, options.interval)
    assert procs.proxy is not None
    proxy = psutil.Process(procs.proxy.pid)
    time.sleep(1.0)
    idle = proxy.memory_info().rss
    stream_seconds = options.chunks * options.interval
    results: dict[str, Any] = {}

    def many() -> None:
        results["streams"] = bench.load(
            "proxy",
            stream=True,
            concurrency=options.streams,
            requests=options.streams,
            max_seconds=options.ramp + stream_seconds + 120,
            expected=options.chunks,
            warmup=False,
            stagger=options.ramp,
        )

    try:
        with rss_sampler(proxy) as samples:
            worker = threading.Thread(target=many)
            worker.start()
            time.sleep(options.ramp)
            opened_all(f"http://{HOST}:{procs.upstream_port}/_bench/stats", options.streams)
            open_rss = proxy.memory_info().rss  # every stream is open now, none has ended
            # The probes are short answers at a provider's pace: a stream reads its script when
            # it starts, so the open ones go on as they began.
            procs.configure(PROBE_CHUNKS, 16, PROBE_INTERVAL)
            probes: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
            for _ in range(2):
                for side in probes:
                    probes[side].append(
                        bench.load(
                            side,
                            stream=True,
                            concurrency=1,
                            requests=options.probes // 2,
                            max_seconds=stream_seconds,
                            expected=PROBE_CHUNKS,
                            warmup=False,
                        )
                    )
            worker.join()
        hwm = peak_rss(proxy.pid)
        pauses = collector_pauses(f"http://{HOST}:{procs.proxy_port}/metrics")
    finally:
        procs.stop_all()
    got = results["streams"]
    peak = max(hwm, max(samples, default=0))
    ttft = {
        side: statistics.median(p["ttft_ms"]["p50"] for p in parts)
        for side, parts in probes.items()
    }
    ttft99 = {
        side: statistics.median(p["ttft_ms"]["p99"] for p in parts)
        for side, parts in probes.items()
    }
    per_stream = (peak - idle) / options.streams / 1024
    print(
        f"{options.streams:,} streams over {options.ramp:g} s, {options.chunks} chunks one per "
        f"{options.interval:g} s: ok {got['requests'] - got['errors']:,}, errors {got['errors']}"
        f" {got.get('error_kinds', '')}"
    )
    print(
        f"proxy RSS: idle {idle / 2**20:.0f} MB, all open {open_rss / 2**20:.0f} MB, peak "
        f"{peak / 2**20:.0f} MB = {per_stream:.1f} KB per open stream above idle"
    )
    print(
        f"a new request while they are open: TTFT p50 direct {ttft['direct']:.2f} ms, proxy "
        f"{ttft['proxy']:.2f} ms, added {ttft['proxy'] - ttft['direct']:.2f} ms (p99 added "
        f"{ttft99['proxy'] - ttft99['direct']:.2f} ms); probe errors "
        f"{sum(p['errors'] for parts in probes.values() for p in parts)}"
    )
    print(f"proxy CPU for the run: {got['proxy_cpu_s']:.1f} s")
    for generation, (count, total, longest) in sorted(pauses.items()):
        print(
            f"garbage collections of generation {generation}: {count:.0f}, {total * 1e3:.0f} ms "
            f"in all, the longest ≤ {longest * 1e3:g} ms"
        )


def opened_all(stats_url: str, streams: int, seconds: float = 60) -> None:
    """Wait until the upstream has been asked for every stream (the load client's last ones
    start late when ten thousand connections are opening)."""
    deadline = time.monotonic() + seconds
    while http("GET", stats_url)["streams_started"] < streams:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {streams} streams opened in {seconds:g} s")
        time.sleep(0.2)


def collector_pauses(metrics_url: str) -> dict[str, tuple[float, float, float]]:
    """From the proxy's `kimi_gc_pause_seconds`: per generation, how many collections, their
    total time, and the upper bound of the bucket the longest fell in."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "kimi_gc_pause_seconds":
            continue
        for sample in family.samples:
            generation = sample.labels["generation"]
            if sample.name.endswith("_count"):
                counts[generation] = sample.value
            elif sample.name.endswith("_sum"):
                sums[generation] = sample.value
            elif sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets.setdefault(generation, []).append((bound, sample.value))
    return {
        generation: (
            count,
            sums[generation],
            min(bound for bound, seen in buckets[generation] if seen >= count),
        )
        for generation, count in counts.items()
        if count
    }


if __name__ == "__main__":
    main()
