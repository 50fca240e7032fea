"""What Redis in the path costs a request: `python -m bench.redis_overhead`.

One run, side by side at concurrency 1, in front of the same scripted upstream
(`bench.upstream`): the upstream directly, and two real `kimi-proxy serve` processes that differ
only in where the gateway's state lives —

* **local**: a users file, the user's limits and the provider key's limits in the process;
* **redis**: a real `redis-server` on loopback (no persistence), the same user and limits
  shared through it: per request one Lua round trip for the user's limits, one for the provider
  key's, and the settlements and metering after the answer.

Both ask the same of admission (a user with RPM, TPM, daily tokens and concurrency limits; a key
with RPM and TPM limits), generous enough never to refuse. Interleaved repeats; the figure is
the added time to first token over direct, p50 and p99, and Redis's share: redis − local.
The issue's target: p50 at most 0.5 ms more with Redis than without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kimi_proxy.cli.launcher import free_port

from .measure import Bench
from .processes import HOST, RESULTS, ROOT, wait_healthy

REPEATS = 5
REQUESTS = 200
LIMITS = ["--rpm", "1000000", "--tpm", "1000000000", "--concurrency", "1000"]
LIMITS += ["--daily-tokens", "100000000000"]
CONFIG = """
[[provider]]
name = "bench"
base_url = "http://{host}:{port}/v1"
keys = ["bench-key"]
limits = {{ rpm = 1000000, tpm = 1000000000 }}
[family.kimi]
candidates = ["bench:kimi-k2.6"]
"""


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return process, f"redis://{HOST}:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def add_user(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "users", "add", "bench", *LIMITS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def redis_version(url: str) -> str:
    async def ask() -> str:
        from redis.asyncio import Redis

        client = Redis.from_url(url)
        try:
            info: dict[str, Any] = await client.info("server")
            return str(info["redis_version"])
        finally:
            await client.aclose()

    return asyncio.run(ask())


def main() -> None:
    args = argparse.Namespace(
        max_streams=2000, proxy_src=ROOT, workers=1, chunks=100, size=16, max_seconds=30
    )
    bench = Bench(args)
    procs = bench.procs
    procs.start_upstream()
    procs.configure(args.chunks, args.size)
    folder = Path(tempfile.mkdtemp(prefix="kimi-redis-bench-"))
    redis, url = start_redis(folder)
    config = folder / "config.toml"
    config.write_text(CONFIG.format(host=HOST, port=procs.upstream_port))
    base = dict(os.environ, KIMI_PROXY_CONFIG=str(config), KIMI_LOG_LEVEL="warning")
    base["KIMI_MAX_STREAMS"] = "2000"
    sides = {
        "local": {**base, "KIMI_USERS_FILE": str(folder / "users.json")},
        "redis": {**base, "KIMI_REDIS_URL": url, "KIMI_USERS_FILE": str(folder / "none.json")},
    }
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    keys: dict[str, str] = {}
    try:
        for side, env in sides.items():
            keys[side] = add_user(env)
            ports[side] = free_port()
            log = open(RESULTS / f"redis-bench-{side}.log", "wb")  # noqa: SIM115 - the process's
            servers[side] = subprocess.Popen(
                [sys.executable, "-m", "kimi_proxy", "serve"],
                cwd=ROOT,
                env={**env, "KIMI_PROXY_PORT": str(ports[side])},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_healthy(f"http://{HOST}:{ports[side]}/health", servers[side])
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in ("direct", *sides)}
        for _ in range(REPEATS):
            for side in results:
                if side != "direct":
                    procs.proxy, procs.proxy_port = servers[side], ports[side]
                else:
                    procs.proxy = servers["local"]  # CPU accounting needs a process there
                results[side].append(
                    bench.load(
                        "direct" if side == "direct" else "proxy",
                        stream=True,
                        concurrency=1,
                        requests=REQUESTS,
                        max_seconds=args.max_seconds,
                        expected=args.chunks,
                        api_key=keys.get(side, "bench"),
                    )
                )
        version = redis_version(url)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=30)
        redis.terminate()
        redis.wait(timeout=10)
        procs.stop_all()
        shutil.rmtree(folder, ignore_errors=True)
    direct = results["direct"]
    added: dict[str, tuple[float, float]] = {}
    print(f"concurrency 1, {REPEATS} × {REQUESTS} streams a side; Redis {version} on loopback")
    for side in sides:
        got = results[side]
        errors = sum(g["errors"] for g in got)
        p50 = statistics.median(
            g["ttft_ms"]["p50"] - d["ttft_ms"]["p50"] for g, d in zip(got, direct, strict=True)
        )
        p99 = statistics.median(
            g["ttft_ms"]["p99"] - d["ttft_ms"]["p99"] for g, d in zip(got, direct, strict=True)
        )
        added[side] = (p50, p99)
        print(f"{side:>6}: added TTFT p50 {p50:.3f} ms, p99 {p99:.3f} ms, errors {errors}")
    print(
        f"Redis in the path: p50 {added['redis'][0] - added['local'][0]:+.3f} ms, "
        f"p99 {added['redis'][1] - added['local'][1]:+.3f} ms (target: p50 ≤ +0.5 ms)"
    )


if __name__ == "__main__":
    main()
