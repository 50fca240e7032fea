"""The garbage collector's pauses in `/metrics` (`kimi_gc_pause_seconds`, by generation).

A collection stops the event loop, and every stream with it. A full one (generation 2) walks
every object the process holds, so its pause grows with the open streams: while 10,000 opened,
two took 180 and 550 ms (bench/many.md). An operator sees it here before users feel it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Histogram


class CollectorPauses:
    """A `gc.callbacks` entry that times each collection into the histogram of its generation."""

    def __init__(self, histogram: Histogram) -> None:
        self._series = [histogram.labels(str(generation)) for generation in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._series[info["generation"]].observe(time.perf_counter() - self._started)


@contextmanager
def timing_collections(histogram: Histogram) -> Iterator[None]:
    """Time the process's collections into `histogram` while the block runs."""
    pauses = CollectorPauses(histogram)
    gc.callbacks.append(pauses)
    try:
        yield
    finally:
        gc.callbacks.remove(pauses)
