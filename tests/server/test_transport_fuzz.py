"""What a library would have given our provider client, since we keep it (docs/ARCHITECTURE.md):
fuzzed answers, endless and oversized header blocks, a provider that stalls mid-line. Whatever
the provider sends, the client returns the answer or raises an httpx error — never another
exception, never a hang, never unbounded memory."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_proxy.upstream.connection import MAX_HEAD_BYTES
from kimi_proxy.upstream.transport import HttptoolsTransport

VALID = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b'10\r\ndata: {"a": 1}\n\n\r\n'
    b"e\r\ndata: [DONE]\n\n\r\n"
    b"0\r\n\r\n"
)


async def answer_with(chunks: list[bytes], *, read: float = 2.0, pause: float = 0.0) -> bytes:
    """Serve one connection that writes `chunks` (then closes); return what the client read,
    or raise what it raised."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for part in chunks:
                writer.write(part)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        timeout = httpx.Timeout(2.0, read=read)
        url = f"http://127.0.0.1:{port}/v1/models"
        async with (
            HttptoolsTransport() as transport,
            httpx.AsyncClient(transport=transport, timeout=timeout) as client,
            client.stream("GET", url) as response,
        ):
            return b"".join([part async for part in response.aiter_raw()])
    finally:
        server.close()


def mutated(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    body = bytearray(data[: max(0, min(cut, len(data)))])
    for position, value in flips:
        if body:
            body[position % len(body)] = value
    return bytes(body)


@settings(max_examples=80, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=len(VALID)),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    tail=st.binary(max_size=64),
    pieces=st.integers(min_value=1, max_value=5),
)
def test_any_mangled_answer_is_read_or_an_httpx_error(
    cut: int, flips: list[tuple[int, int]], tail: bytes, pieces: int
) -> None:
    """Truncated, corrupted, chunk-size-garbled answers, split anywhere across reads."""
    data = mutated(VALID, cut, flips) + tail
    size = max(1, -(-len(data) // pieces))
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]

    async def run() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the mapped failure, as the proxy expects
            await asyncio.wait_for(answer_with(chunks, read=0.5), timeout=5)

    asyncio.run(run())


@pytest.mark.parametrize(
    "head",
    [
        [
            b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * (MAX_HEAD_BYTES + 1000)
        ],  # a header that never ends
        [b"HTTP/1.1 200 OK\r\n", *([b"x-more: " + b"b" * 100 + b"\r\n"] * 1000)],  # endless lines
    ],
    ids=["oversized-header", "endless-header-block"],
)
async def test_a_head_over_the_limit_is_a_protocol_error_not_a_hang(head: list[bytes]) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="header block over"):
        await asyncio.wait_for(answer_with(head, read=30), timeout=10)


async def test_a_provider_that_stalls_mid_line_is_a_read_timeout() -> None:
    stalled = [b"HTTP/1.1 200 OK\r\ncontent-le"]
    with pytest.raises(httpx.ReadTimeout):
        await asyncio.wait_for(answer_with(stalled, read=0.3, pause=5), timeout=10)
    mid_body = [VALID[:120]]  # inside a chunk of the body
    with pytest.raises(httpx.ReadTimeout):
        await asyncio.wait_for(answer_with(mid_body, read=0.3, pause=5), timeout=10)


async def test_a_large_first_read_with_its_body_is_not_mistaken_for_a_large_head() -> None:
    body = b"x" * (3 * MAX_HEAD_BYTES)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    assert await answer_with([answer]) == body
