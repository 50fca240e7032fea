"""The proxy's per-request work, timed warm and cold: `python -m bench.request_path`.

Parses, validates and translates the benchmark's Claude-Code-shaped request 300 times, in a
tight loop (warm caches) and with 8 MB of memory touched between iterations (cold caches, as in
the running server, where other streams' work runs between two requests). Prints the median of
each step in microseconds.
"""

from __future__ import annotations

import itertools
import statistics
import time

import orjson

from bench.workload import anthropic_request
from kimi_proxy.config.settings import load_settings
from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.translate.calibration import Calibration, measure
from kimi_proxy.translate.request import anthropic_to_openai_request

STEPS = ("loads", "validate", "translate", "estimate", "dumps")


def main() -> None:
    settings = load_settings(upstream_url="http://127.0.0.1:1/v1", api_key="bench")
    body = orjson.dumps(anthropic_request())
    junk = bytearray(8 * 2**20)

    def evict_caches() -> None:
        for i in range(0, len(junk), 64):
            junk[i] = (junk[i] + 1) & 255

    def one_request() -> list[float]:
        marks = [time.perf_counter()]
        data = orjson.loads(body)
        marks.append(time.perf_counter())
        request = MessagesRequest.model_validate(data)
        marks.append(time.perf_counter())
        upstream = anthropic_to_openai_request(
            request,
            router=settings.router,
            profile=settings.profile,
            max_output_tokens=settings.max_output_tokens,
        )
        marks.append(time.perf_counter())
        Calibration().estimate(measure(upstream.payload))
        marks.append(time.perf_counter())
        orjson.dumps(upstream.payload)
        marks.append(time.perf_counter())
        return [(b - a) * 1e6 for a, b in itertools.pairwise(marks)]

    for mode in ("warm", "cold"):
        rows = []
        for _ in range(300):
            if mode == "cold":
                evict_caches()
            rows.append(one_request())
        steps = " ".join(
            f"{name} {statistics.median(column):.0f}"
            for name, column in zip(STEPS, zip(*rows, strict=True), strict=True)
        )
        print(f"{mode}: {steps}, total {statistics.median(map(sum, rows)):.0f} µs")


if __name__ == "__main__":
    main()
