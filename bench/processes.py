"""The processes a benchmark runs — the scripted upstream, the proxy (from the working tree or
a git ref), the pass-through floor, a baseline proxy — and what they cost: CPU seconds, peak
RSS, an RSS sampler."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil

from kimi_proxy.cli.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
SIDES = ("direct", "floor", "proxy")  # the upstream itself, the pass-through floor, the proxy


def http(method: str, url: str, body: Any = None, timeout: float = 5) -> Any:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return orjson.loads(response.read())


def wait_healthy(url: str, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            http("GET", url, timeout=1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy")


class Processes:
    """The upstream and proxy processes, with their logs under bench/results/."""

    def __init__(self, max_streams: int, proxy_src: Path, workers: int = 1) -> None:
        self.proxy_src = proxy_src
        self.workers = workers
        self.upstream_port = free_port()
        self.proxy_port = free_port()
        self.max_streams = max_streams
        self.floor_port = free_port()
        self.upstream: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.floor: subprocess.Popen[bytes] | None = None
        self.baseline_port = free_port()
        self.baseline: subprocess.Popen[bytes] | None = None

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        log = open(RESULTS / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_upstream(self) -> None:
        args = [sys.executable, "-m", "bench.upstream", "--port", str(self.upstream_port)]
        self.upstream = self._spawn("upstream", args, dict(os.environ))
        wait_healthy(f"http://{HOST}:{self.upstream_port}/health", self.upstream)

    def start_proxy(self) -> None:
        self.proxy = self._serve("proxy", self.proxy_src, self.proxy_port)

    def start_baseline(self, src: Path) -> None:
        """A second proxy, from other code (`--baseline-ref`), beside the first."""
        self.baseline = self._serve("baseline", src, self.baseline_port)

    def _serve(self, name: str, src: Path, port: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            KIMI_API_KEY="bench", KIMI_MAX_STREAMS=str(self.max_streams), PYTHONPATH=str(src)
        )
        args = [
            sys.executable,
            "-m",
            "kimi_proxy",
            "serve",
            "--upstream-url",
            f"http://{HOST}:{self.upstream_port}/v1",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]
        process = self._spawn(name, args, env, cwd=src)
        wait_healthy(f"http://{HOST}:{port}/health", process)
        return process

    def start_floor(self) -> None:
        """The pass-through floor (`bench/passthrough.py`), from the same proxy source."""
        env = dict(os.environ, PYTHONPATH=str(self.proxy_src))
        upstream = f"http://{HOST}:{self.upstream_port}/v1"
        args = [sys.executable, "-m", "bench.passthrough", "--upstream-url", upstream]
        self.floor = self._spawn("floor", [*args, "--port", str(self.floor_port)], env)
        wait_healthy(f"http://{HOST}:{self.floor_port}/health", self.floor)

    def restart_proxy(self) -> None:
        self.stop(self.proxy)
        self.proxy_port = free_port()
        self.start_proxy()

    @staticmethod
    def stop(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully on it
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        self.stop(self.baseline)
        self.stop(self.floor)
        self.stop(self.proxy)
        self.stop(self.upstream)

    def configure(self, chunks: int, size: int, interval: float = 0.0) -> None:
        body = {"chunks": chunks, "size": size, "interval": interval}
        http("POST", f"http://{HOST}:{self.upstream_port}/_bench/config", body)


def _family(process: psutil.Process) -> list[psutil.Process]:
    """The process and its children (the workers of `kimi-proxy serve --workers N`)."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the process and its workers, every thread: the scheduler's nanosecond
    count (/proc/PID/task/TID/schedstat) where the kernel keeps one, else the 10 ms ticks of
    user + system time."""
    total = 0.0
    for member in _family(process):
        try:
            total += _scheduled_seconds(member.pid)
        except (OSError, ValueError):
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
    return total


def system_seconds(process: psutil.Process) -> float:
    """The kernel's part of that CPU time (system time, 10 ms ticks), process and workers."""
    total = 0.0
    for member in _family(process):
        with contextlib.suppress(psutil.Error):
            total += member.cpu_times().system
    return total


def _scheduled_seconds(pid: int) -> float:
    tasks = Path(f"/proc/{pid}/task")
    return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of resident memory (VmHWM), in bytes, summed over the
    process and its workers."""
    total = 0
    for member in _family(psutil.Process(pid)):
        with contextlib.suppress(OSError), open(f"/proc/{member.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


@contextlib.contextmanager
def rss_sampler(process: psutil.Process, interval: float = 0.02) -> Iterator[list[int]]:
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                samples.append(process.memory_info().rss)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def proxy_source(ref: str | None, folder: str = "proxy-src") -> tuple[Path, dict[str, Any]]:
    """Where the proxy runs from: the working tree, or `git archive REF` under bench/results/."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    if ref is None:
        changed = git("status", "--porcelain", "--", "kimi_proxy").splitlines()
        return ROOT, {
            "source": "working tree",
            "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line[3:] for line in changed],
        }
    dest = RESULTS / folder
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref, "kimi_proxy"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    commit = git("rev-parse", "--short", ref)
    return dest, {"source": f"git {ref}", "commit": commit, "uncommitted": []}
