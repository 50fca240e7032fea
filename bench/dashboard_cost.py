"""What an open dashboard costs the requests: `python -m bench.dashboard_cost`.

One run: the scripted upstream and the real `kimi-proxy serve` (as `bench.run` starts them),
streaming at concurrency 1 and 64, each level three times over, interleaved: direct to the
upstream, through the proxy with nobody watching, and through the proxy with one dashboard
reading its live feed (`/dashboard/events`: an event per finished request and the whole state
every second). Prints added time to first token (proxy − direct, p50 and p99) for each.
"""

from __future__ import annotations

import argparse
import functools
import threading
from typing import Any

import httpx

from .measure import Bench, combine
from .processes import HOST, ROOT

LEVELS = (1, 64)
REPEATS = 3


class Watcher:
    """One open dashboard: reads the feed until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.events = 0
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        with httpx.Client(timeout=None) as client, client.stream("GET", self.url) as response:
            for line in response.iter_lines():
                self.events += line.startswith("event:")
                if self.stop.is_set():
                    return

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def main() -> None:
    args = argparse.Namespace(
        max_streams=2000, proxy_src=ROOT, workers=1, chunks=100, size=16, max_seconds=15
    )
    bench = Bench(args)
    procs = bench.procs
    procs.start_upstream()
    procs.start_proxy()
    procs.configure(args.chunks, args.size)
    feed = f"http://{HOST}:{procs.proxy_port}/dashboard/events"
    try:
        for level in LEVELS:
            requests = max(300, level * 12) // REPEATS
            parts: dict[str, list[dict[str, Any]]] = {"direct": [], "unwatched": [], "watched": []}
            events = 0
            for _ in range(REPEATS):
                for name in parts:
                    measure = functools.partial(
                        bench.load,
                        "direct" if name == "direct" else "proxy",
                        stream=True,
                        concurrency=level,
                        requests=requests,
                        max_seconds=args.max_seconds,
                        expected=args.chunks,
                    )
                    if name == "watched":
                        with Watcher(feed) as watcher:
                            parts[name].append(measure())
                        events += watcher.events
                    else:
                        parts[name].append(measure())
            sides = {name: combine(results) for name, results in parts.items()}
            direct = sides["direct"]["ttft_ms"]
            print(f"concurrency {level} ({sides['direct']['requests']} requests a side):")
            for name in ("unwatched", "watched"):
                ttft = sides[name]["ttft_ms"]
                errors = sides[name]["errors"]
                print(
                    f"  {name:>9}: added TTFT p50 {ttft['p50'] - direct['p50']:.2f} ms, "
                    f"p99 {ttft['p99'] - direct['p99']:.2f} ms, errors {errors}"
                )
            print(f"  the dashboard read {events} events", flush=True)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
