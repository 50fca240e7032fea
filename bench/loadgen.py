"""The load client: raw asyncio + httptools, one keep-alive connection per concurrent worker.

Run by `bench.run` in its own process, once per measurement, with a JSON job on the command
line; prints one JSON result on stdout. The same code talks to the upstream directly and to
the proxy: only the request bytes and the markers that recognise a content event differ.

Per request it records the time to the first content event (TTFT: the first text delta; for
non-streaming requests, the whole body), the total time, the number of content events and,
when asked, the arrival time of every content event. A request is an error when the status is
not 200, the connection fails, an `error` event arrives, the stream does not end properly, or
the number of content events is not the number expected.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson


# How each side marks a content event, the end of the stream, and an error.
@dataclass(frozen=True, slots=True)
class Markers:
    content: bytes
    empty: bytes | None
    done: bytes


MARKERS = {
    "proxy": Markers(content=b'"text_delta"', empty=None, done=b'"message_stop"'),
    "direct": Markers(content=b'"content":"', empty=b'"content":""', done=b"[DONE]"),
}
ERROR_MARK = b'"type":"error"'


@dataclass(slots=True)
class Outcome:
    ok: bool = False
    error: str = ""
    ttft: float = 0.0
    total: float = 0.0
    events: int = 0
    arrivals: list[float] = field(default_factory=list)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, side: str, stream: bool, record: bool) -> None:
        marks = MARKERS[side]
        self.content = marks.content
        self.empty = marks.empty
        self.done_mark = marks.done
        self.stream = stream
        self.record = record
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.keep_alive = False
        self.waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.outcome = Outcome()
        self.start = 0.0
        self.buffer = b""
        self.body: list[bytes] = []
        self.saw_done = False
        self.saw_error = False
        self.status = 0

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)
            assert self.transport is not None
            self.transport.close()

    # -- httptools
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Read here: once the message is complete httptools has reset it and always says no.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.stream or self.status != 200:
            self.body.append(data)
            return
        buffer = self.buffer + data
        frames = buffer.split(b"\n\n")
        self.buffer = frames.pop()
        outcome = self.outcome
        for frame in frames:
            if self.content in frame and (self.empty is None or self.empty not in frame):
                if outcome.events == 0:
                    outcome.ttft = now - self.start
                outcome.events += 1
                if self.record:
                    outcome.arrivals.append(now)
            elif self.done_mark in frame:
                self.saw_done = True
            elif ERROR_MARK in frame:
                self.saw_error = True

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        outcome = self.outcome
        outcome.total = now - self.start
        if self.status != 200:
            outcome.error = f"HTTP {self.status}: {b''.join(self.body)[:120]!r}"
        elif not self.stream:
            outcome.ttft = outcome.total
            body = b"".join(self.body)
            outcome.ok = b'"content"' in body and b'"error"' not in body[:40]
            outcome.error = "" if outcome.ok else f"bad body {body[:120]!r}"
        elif self.saw_error:
            outcome.error = "error event"
        elif not self.saw_done:
            outcome.error = "stream ended without its final event"
        else:
            outcome.ok = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def send(self, raw: bytes, expected_events: int) -> Outcome:
        assert self.transport is not None
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.start = time.perf_counter()
        self.transport.write(raw)
        await self.waiter
        outcome = self.outcome
        if outcome.ok and self.stream and outcome.events != expected_events:
            outcome.ok = False
            outcome.error = f"{outcome.events} content events, expected {expected_events}"
        if not self.keep_alive:
            self.transport.close()
            self.lost = True
        return outcome


def build_request(side: str, host: str, port: int, body: bytes, api_key: str = "bench") -> bytes:
    if side == "proxy":
        path = b"/v1/messages"
        auth = b"x-api-key: %s\r\nanthropic-version: 2023-06-01\r\n" % api_key.encode()
    else:
        path = b"/v1/chat/completions"
        auth = b"authorization: Bearer bench\r\naccept: text/event-stream\r\n"
    head = b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n" % (
        path,
        host.encode(),
        port,
    )
    return head + auth + b"content-length: %d\r\n\r\n" % len(body) + body


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(job: dict[str, Any]) -> dict[str, Any]:
    side: str = job["side"]
    stream: bool = job["stream"]
    record: bool = job.get("record_arrivals", False)
    concurrency: int = job["concurrency"]
    total_requests: int = job["requests"]
    max_seconds: float = job["max_seconds"]
    expected: int = job["expected_events"]
    warmup: bool = job.get("warmup", True)
    stagger: float = job.get("stagger_s", 0.0)
    with open(job["body_file"], "rb") as handle:
        raw = build_request(
            side, job["host"], job["port"], handle.read(), job.get("api_key", "bench")
        )
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    remaining = total_requests
    errors: dict[str, int] = {}

    async def connect() -> Connection:
        _, conn = await loop.create_connection(
            lambda: Connection(side, stream, record), job["host"], job["port"]
        )
        return conn

    warmed = [0]
    warmup_events = [0]

    async def worker(number: int, ready: asyncio.Event, deadline_box: list[float]) -> None:
        nonlocal remaining
        conn: Connection | None = None
        try:
            conn = await connect()
            if warmup:
                warmup_events[0] += (await conn.send(raw, expected)).events
        except Exception as exc:
            kind = f"warmup: {type(exc).__name__}"
            errors[kind] = errors.get(kind, 0) + 1
            conn = None
        warmed[0] += 1
        await ready.wait()
        if stagger:  # independent users: first requests spread evenly, not one burst
            await asyncio.sleep(stagger * number / concurrency)
        while remaining > 0 and time.perf_counter() < deadline_box[0]:
            remaining -= 1
            try:
                if conn is None or conn.lost:
                    conn = await connect()
                outcome = await conn.send(raw, expected)
            except Exception as exc:
                outcome = Outcome(error=f"{type(exc).__name__}: {exc}"[:120])
                conn = None
            outcomes.append(outcome)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    ready = asyncio.Event()
    deadline_box = [float("inf")]
    tasks = [asyncio.create_task(worker(n, ready, deadline_box)) for n in range(concurrency)]
    # Every worker connects (and warms up) before the clock starts.
    settle_deadline = time.perf_counter() + 30
    while warmed[0] < concurrency and time.perf_counter() < settle_deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline_box[0] = start + max_seconds
    ready.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0

    good = [o for o in outcomes if o.ok]
    for o in outcomes:
        if not o.ok:
            errors[o.error[:80]] = errors.get(o.error[:80], 0) + 1
    ttfts = [o.ttft for o in good]
    totals = [o.total for o in good]
    events = sum(o.events for o in outcomes)
    result: dict[str, Any] = {
        "side": side,
        "stream": stream,
        "concurrency": concurrency,
        "requests": len(outcomes),
        "ok": len(good),
        "errors": len(outcomes) - len(good),
        "error_kinds": errors,
        "wall_s": wall,
        "client_cpu_s": cpu,
        "events": events,
        "warmup_events": warmup_events[0],
        "events_per_s": events / wall if wall else 0.0,
        "requests_per_s": len(outcomes) / wall if wall else 0.0,
        "ttft_ms": {
            "p50": quantile(ttfts, 0.5) * 1e3,
            "p99": quantile(ttfts, 0.99) * 1e3,
            "min": min(ttfts, default=float("nan")) * 1e3,
            "max": max(ttfts, default=float("nan")) * 1e3,
        },
        "total_ms": {"p50": quantile(totals, 0.5) * 1e3, "p99": quantile(totals, 0.99) * 1e3},
    }
    if record:
        gaps = [
            (b - a) * 1e3 for o in good for a, b in zip(o.arrivals, o.arrivals[1:], strict=False)
        ]
        result["gaps_ms"] = gaps
    return result


def main() -> None:
    job = orjson.loads(sys.argv[1])
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(job))
    else:
        result = uvloop.run(run(job))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
