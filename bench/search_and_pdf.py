"""Web search and PDFs (issue #30), each next to its floor in the same run:

* Claude Code's WebSearch side call: time from the request's arrival to its
  `web_search_tool_result` block, against a SearXNG-shaped backend that answers in 50 ms, beside
  the same backend asked directly (target: the proxy adds ≤ 10 ms).
* A 100-page PDF into text: CPU seconds with pdfium (the proxy's reader) and with pypdf, and
  with five page images rendered (target ≤ 1 s).

    python -m bench.search_and_pdf [--requests 50] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson

from bench.pdfs import book
from bench.processes import HOST, RESULTS, Processes, wait_healthy
from kimi_proxy.cli.launcher import free_port
from kimi_proxy.documents.pages import read_pdf

SIDE_CALL: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "stream": True,
    "system": [{"type": "text", "text": "Search once, then reply with a brief summary."}],
    "messages": [{"role": "user", "content": "Perform a web search for the query: kimi k2.6"}],
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
}
RESULTS_JSON = orjson.dumps(
    {
        "query": "kimi k2.6",
        "results": [
            {"url": f"https://example.com/{n}", "title": f"Page {n}", "content": "x" * 300}
            for n in range(8)
        ],
    }
)


def serve_backend(port: int, delay: float) -> None:
    """A SearXNG-shaped backend (`GET /search?format=json`) answering after `delay` seconds."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client closed its connection
            if b"/health" not in head.split(b"\r\n", 1)[0]:
                await asyncio.sleep(delay)
            body = RESULTS_JSON
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"p50 {statistics.median(ordered):6.1f} ms  p90 {p90:6.1f} ms  max {ordered[-1]:6.1f} ms"


def time_to_results(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    with client.stream("POST", f"{url}/v1/messages", json=SIDE_CALL) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and '"web_search_tool_result"' in line:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError("no web_search_tool_result block in the answer")


def side_call(requests: int, delay: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    backend_port = free_port()
    backend = subprocess.Popen(  # in its own process, as a real one would be
        [
            *(sys.executable, "-m", "bench.search_and_pdf"),
            *("--backend", str(backend_port), "--delay", str(delay)),
        ],
        env=dict(os.environ, PYTHONPATH=os.getcwd()),
    )
    processes = Processes(max_streams=64, proxy_src=RESULTS.parent.parent)
    try:
        wait_healthy(f"http://{HOST}:{backend_port}/health", backend)
        os.environ["SEARXNG_URL"] = f"http://{HOST}:{backend_port}"
        processes.start_upstream()
        processes.start_proxy()
        proxy = f"http://{HOST}:{processes.proxy_port}"
        direct, through = [], []
        with httpx.Client(timeout=30, headers={"x-api-key": "bench"}) as client:
            search = f"http://{HOST}:{backend_port}/search"
            for index in range(requests + 5):  # interleaved; the first five warm up
                started = time.perf_counter()
                client.get(search, params={"q": "kimi k2.6", "format": "json"}).raise_for_status()
                direct_ms = (time.perf_counter() - started) * 1000
                through_ms = time_to_results(client, proxy)
                if index >= 5:
                    direct.append(direct_ms)
                    through.append(through_ms)
        print(f"WebSearch side call, backend answering in {delay * 1000:.0f} ms, {requests} each:")
        print(f"  backend asked directly        {percentiles(direct)}")
        print(f"  to web_search_tool_result     {percentiles(through)}")
        added = statistics.median(through) - statistics.median(direct)
        print(f"  added by the proxy (p50)      {added:6.1f} ms  (target ≤ 10 ms)")
    finally:
        processes.stop_all()
        backend.terminate()
        backend.wait(10)


def pdf_text(pages: int) -> None:
    data = book(pages)
    rounds = 5

    def cpu(run: Any) -> float:
        times = []
        for _ in range(rounds):
            started = time.process_time()
            run()
            times.append(time.process_time() - started)
        return statistics.median(times)

    print(f"A {pages}-page text PDF ({len(data) / 1024:.0f} KB), CPU seconds, median of {rounds}:")
    print(f"  pdfium (pypdfium2), text      {cpu(lambda: read_pdf(data, 0)):.3f} s  (target ≤ 1 s)")
    print(f"  pdfium, text + 5 page images  {cpu(lambda: read_pdf(data, 5)):.3f} s")
    try:
        import pypdf
    except ImportError:
        print("  pypdf: not installed (pip install pypdf) — skipped")
        return

    def with_pypdf() -> None:
        for page in pypdf.PdfReader(io.BytesIO(data)).pages:
            page.extract_text()

    print(f"  pypdf, text                   {cpu(with_pypdf):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)  # the backend's process
    args = parser.parse_args()
    if args.backend:
        serve_backend(args.backend, args.delay)
        return
    side_call(args.requests, args.delay)
    pdf_text(args.pages)


if __name__ == "__main__":
    main()
