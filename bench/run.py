"""The benchmark, in one command: `.venv/bin/python -m bench.run` (see bench/README.md).

Starts the scripted upstream (`bench.upstream`) and the real `kimi-proxy serve` in front of it,
each its own process, then runs the load client (`bench.loadgen`, its own process per
measurement) against the upstream directly and through the proxy, side by side:

1. streaming at 1, 16, 64 and 256 concurrent requests (upstream as fast as it can);
2. the same at a provider's pace (one chunk per 5 ms) at 1, 16 and 64: added TTFT unsaturated;
   both phases also measure the pass-through floor (`bench.passthrough`: the proxy's server
   stack forwarding bytes untouched), so the stack's own cost and the proxy's are told apart;
3. non-streaming at 1 and 64;
4. event flushing: one stream at a time from a 50 ms-paced upstream, inter-arrival of deltas;
5. a py-spy profile of the proxy under the 64-stream load (skipped without py-spy);
6. 1,000 concurrent open streams from a slow upstream (1 chunk per 100 ms) against a fresh
   proxy process: peak RSS and errors.

Writes bench/results/results.json (raw), docs/BENCHMARKS.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import shutil
import signal
import statistics
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

from bench.workload import anthropic_request, openai_request
from kimi_proxy.cli.launcher import free_port

from . import report

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


class Bench:
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
    def streaming(self) -> None:
        args = self.args
        self.procs.configure(args.chunks, args.size)
        for concurrency in args.levels:
            requests = max(args.min_requests, concurrency * args.rounds) // args.repeats
            parts: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
            for _ in range(args.repeats):  # interleaved, so a noisy moment hits every side
                for side in SIDES:
                    result = self.load(
                        side,
                        stream=True,
                        concurrency=concurrency,
                        requests=requests,
                        max_seconds=args.max_seconds / args.repeats,
                        expected=args.chunks,
                    )
                    parts[side].append(result)
                    self._say(side, result)
            sides = {side: combine(results) for side, results in parts.items()}
            self.results["streaming"].append({"concurrency": concurrency, **sides})

    def paced(self) -> None:
        """Streams at a provider's pace (one chunk per `--pace-ms`), so nothing is saturated:
        what the proxy adds to time to first token when it is not queueing. The workers start
        spread over one stream's length, as independent users would: started together, the
        closed-loop workers would stay in step and every request would queue behind 63 others."""
        args = self.args
        interval = args.pace_ms / 1e3
        self.procs.configure(args.chunks, args.size, interval)
        out: dict[str, Any] = {"interval_ms": args.pace_ms, "chunks": args.chunks, "levels": []}
        for concurrency in (1, 16, 64):
            sides = {}
            for side in SIDES:
                sides[side] = self.load(
                    side,
                    stream=True,
                    concurrency=concurrency,
                    requests=concurrency * 8,
                    max_seconds=args.max_seconds,
                    expected=args.chunks,
                    stagger=interval * args.chunks,  # arrivals spread over one stream's length
                )
                self._say(side, sides[side])
            out["levels"].append({"concurrency": concurrency, **sides})
        self.results["paced"] = out

    def start(self) -> None:
        """The upstream, the proxy, the floor and, with `--baseline-ref`, the baseline proxy."""
        self.procs.start_upstream()
        self.procs.start_proxy()
        self.procs.start_floor()
        if self.args.baseline_ref:
            src, self.baseline_source = proxy_source(self.args.baseline_ref, "baseline-src")
            self.procs.start_baseline(src)

    def cost(self, concurrency: int = 64, short: int = 10, long: int | None = None) -> None:
        """CPU per chunk and per request at the provider's pace (`bench.cost`), the floor and
        the proxy side by side, and the proxy at `--baseline-ref` when one is given; answers
        of `short` and `long` (default `--chunks`) chunks."""
        from . import cost  # (it builds on this module)

        sides = ("floor", "proxy") + (("baseline",) if self.procs.baseline else ())
        out = cost.measure(
            self,
            sides=sides,
            concurrency=concurrency,
            pace_ms=self.args.pace_ms,
            short=short,
            long=self.args.chunks if long is None else long,
            repeats=self.args.repeats,
        )
        out["baseline_source"] = self.baseline_source
        self.results["cost"] = out
        for side in sides:
            print(f"  {cost.summary(side, out[side])}", flush=True)

    def non_streaming(self) -> None:
        args = self.args
        self.procs.configure(args.chunks, args.size)
        for concurrency in (1, 64):
            requests = max(args.min_requests, concurrency * args.rounds)
            pair = {}
            for side in ("direct", "proxy"):
                pair[side] = self.load(
                    side,
                    stream=False,
                    concurrency=concurrency,
                    requests=requests,
                    max_seconds=args.max_seconds,
                    expected=0,
                )
                self._say(side, pair[side])
            self.results["non_streaming"].append({"concurrency": concurrency, **pair})

    def flushing(self) -> None:
        chunks, interval = 40, 0.05
        self.procs.configure(chunks, self.args.size, interval)
        out: dict[str, Any] = {"interval_ms": interval * 1e3, "chunks": chunks}
        for side in ("direct", "proxy"):
            result = self.load(
                side,
                stream=True,
                concurrency=1,
                requests=3,
                max_seconds=30,
                expected=chunks,
                record=True,
                warmup=False,
            )
            gaps = result.pop("gaps_ms")
            result["gaps"] = {
                "count": len(gaps),
                "min": min(gaps, default=float("nan")),
                "p50": _quantile(gaps, 0.5),
                "max": max(gaps, default=float("nan")),
                "under_25ms": sum(1 for g in gaps if g < 25),
            }
            out[side] = result
            self._say(side, result, extra=f"gaps {result['gaps']}")
        self.results["flushing"] = out

    def profile(self) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists() or self.args.no_profile:
            self.results["profile"] = None
            return
        assert self.procs.proxy is not None
        self.procs.configure(self.args.chunks, self.args.size)
        duration = self.args.profile_seconds
        profiles: dict[str, Any] = {"commands": []}
        outputs = (("raw", RESULTS / "profile.txt"), ("flamegraph", RESULTS / "profile.svg"))
        for fmt, path in outputs:
            command = [
                py_spy,
                "record",
                "--pid",
                str(self.procs.proxy.pid),
                "--rate",
                "250",
                "--duration",
                str(duration),
                "--format",
                fmt,
                "--output",
                str(path),
            ]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.3)
            result = self.load(
                "proxy",
                stream=True,
                concurrency=64,
                requests=1_000_000,
                max_seconds=duration + 1,
                expected=self.args.chunks,
            )
            _, err = spy.communicate(timeout=60)
            if spy.returncode:
                profiles["error"] = err.decode(errors="replace")[-500:]
                break
            profiles["commands"].append(" ".join(command))
            profiles[fmt] = str(path.relative_to(ROOT))
            profiles.setdefault("events_per_s_while_profiled", result["events_per_s"])
        if "raw" in profiles:
            profiles["summary"] = report.summarize_profile(RESULTS / "profile.txt")
        self.results["profile"] = profiles

    def many_streams(self) -> None:
        """1,000 concurrent open streams from a slow upstream, against a fresh proxy."""
        chunks, interval, streams = 30, 0.1, self.args.open_streams
        self.procs.restart_proxy()
        assert self.procs.proxy is not None
        proxy = psutil.Process(self.procs.proxy.pid)
        self.procs.configure(chunks, self.args.size, interval)
        idle_rss = proxy.memory_info().rss
        out: dict[str, Any] = {"streams": streams, "chunks": chunks, "interval_ms": interval * 1e3}
        burst = functools.partial(
            self.load,
            stream=True,
            concurrency=streams,
            requests=streams,
            max_seconds=60,
            expected=chunks,
            warmup=False,
        )
        out["direct"] = burst("direct")
        self._say("direct", out["direct"])
        with rss_sampler(proxy) as samples:
            out["proxy"] = burst("proxy")
        out["proxy_idle_rss"] = idle_rss
        out["proxy_peak_rss_sampled"] = max(samples, default=0)
        out["proxy_peak_rss_hwm"] = peak_rss(proxy.pid)
        out["proxy_rss_after"] = proxy.memory_info().rss
        peak = out["proxy_peak_rss_hwm"] / 2**20
        self._say("proxy", out["proxy"], extra=f"peak RSS {peak:.0f} MB")
        self.results["open_streams"] = out

    def _say(self, side: str, result: dict[str, Any], extra: str = "") -> None:
        mode = "stream" if result["stream"] else "plain "
        print(
            f"  {mode} c={result['concurrency']:<5} {side:<6} n={result['requests']:<6} "
            f"err={result['errors']:<3} ttft p50={result['ttft_ms']['p50']:8.2f} ms "
            f"p99={result['ttft_ms']['p99']:8.2f} ms  events/s={result['events_per_s']:9.0f} "
            f"proxy cpu={result['proxy_cpu_s']:.2f}s {extra}",
            flush=True,
        )

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.results["machine"] = report.machine_info()
        self.results["config"] = {
            k: v for k, v in vars(self.args).items() if isinstance(v, int | float | str | list)
        }
        try:
            self.start()
            print("streaming (upstream as fast as it can):", flush=True)
            self.streaming()
            print(f"streaming at a provider's pace ({self.args.pace_ms:g} ms a chunk):", flush=True)
            self.paced()
            print(f"CPU a chunk and a request ({self.args.pace_ms:g} ms a chunk):", flush=True)
            self.cost()
            print("non-streaming:", flush=True)
            self.non_streaming()
            print("event flushing (50 ms-paced upstream):", flush=True)
            self.flushing()
            print("profile (py-spy, 64 streams):", flush=True)
            self.profile()
            print(f"{self.args.open_streams} concurrent open streams (fresh proxy):", flush=True)
            self.many_streams()
        finally:
            self.procs.stop_all()
        self.results["duration_s"] = time.time() - started
        return self.results


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


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per response")
    parser.add_argument("--size", type=int, default=16, help="characters per content chunk")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=16, help="requests per worker per level")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats of each streaming level"
    )
    parser.add_argument("--min-requests", type=int, default=600, help="requests per level, min")
    parser.add_argument("--max-seconds", type=float, default=15, help="cap per measurement")
    parser.add_argument("--pace-ms", type=float, default=5, help="chunk interval, paced phase")
    parser.add_argument("--open-streams", type=int, default=1000)
    parser.add_argument("--max-streams", type=int, default=2000, help="KIMI_MAX_STREAMS")
    parser.add_argument("--profile-seconds", type=int, default=8)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="kimi-proxy serve --workers")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where BENCHMARKS.md goes")
    parser.add_argument(
        "--proxy-ref",
        help="benchmark kimi_proxy as committed at this git ref (default: the working tree)",
    )
    parser.add_argument(
        "--baseline-ref",
        help="also measure CPU a chunk and a request of kimi_proxy as committed at this ref",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.proxy_src, source = proxy_source(args.proxy_ref)
    sys.path.insert(0, str(args.proxy_src))  # the workload's translation uses the same code
    print(f"proxy: {source}", flush=True)
    bench = Bench(args)
    bench.results["proxy_source"] = source
    results = bench.run()
    (RESULTS / "results.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    report.write_chart(results, docs / "benchmarks.png")
    (docs / "BENCHMARKS.md").write_text(report.render(results))
    print(f"wrote {docs / 'BENCHMARKS.md'}, {docs / 'benchmarks.png'}, {RESULTS / 'results.json'}")
    print(f"total {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
