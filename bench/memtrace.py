"""Run `kimi-proxy serve` under tracemalloc; SIGUSR1 writes the top allocation sites to a file.

    KIMI_API_KEY=bench KIMI_MAX_STREAMS=2000 .venv/bin/python -m bench.memtrace OUT.txt \\
        serve --upstream-url http://127.0.0.1:PORT/v1 --port P2
    kill -USR1 <pid>        # while the streams are open

A diagnostic for the 1,000-stream RSS figure (tracemalloc slows the proxy down several times,
so it is not part of `bench.run`).
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from types import FrameType


def main() -> None:
    out = sys.argv[1]
    tracemalloc.start(12)

    def dump(signum: int, frame: FrameType | None) -> None:
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        with open(out, "a") as handle:
            handle.write(f"traced now {current / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB\n")
            for stat in snapshot.statistics("traceback")[:12]:
                handle.write(f"\n{stat.size / 2**20:.1f} MB in {stat.count} blocks\n")
                handle.write("\n".join(stat.traceback.format(limit=6)) + "\n")
            handle.write("\nby line:\n")
            for stat in snapshot.statistics("lineno")[:25]:
                handle.write(f"{stat.size / 2**20:7.1f} MB {stat.count:7d} {stat.traceback[0]}\n")

    signal.signal(signal.SIGUSR1, dump)
    from kimi_proxy.cli import main as cli_main

    sys.exit(cli_main(sys.argv[2:]))


if __name__ == "__main__":
    main()
