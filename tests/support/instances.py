"""Real `kimi-proxy serve` processes for the tests: several instances of one gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kimi_proxy.cli.launcher import free_port
from support.proxy import wait_healthy


@dataclass
class Instance:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start(log: Path, **env: str) -> Instance:
    """`kimi-proxy serve` on a free port with `env` over the test's environment."""
    port = free_port()
    environment = {**os.environ, "KIMI_PROXY_PORT": str(port), **env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kimi_proxy", "serve"],
            env=environment,
            stdout=out,
            stderr=out,
        )
    instance = Instance(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(instance.url, 30, log)
    except BaseException:
        process.kill()
        raise
    return instance


@contextmanager
def instances(folder: Path, count: int, **env: str) -> Iterator[list[Instance]]:
    folder.mkdir(parents=True, exist_ok=True)
    started: list[Instance] = []
    try:
        for n in range(count):
            started.append(start(folder / f"instance-{n}.log", **env))
        yield started
    finally:
        for instance in started:
            instance.process.kill()
            instance.process.wait(timeout=10)
