"""The provider connection pool (`kimi_proxy.upstream.transport`) against servers that send
exact bytes.

The rest of the suite runs every proxy test through this transport (the scripted upstream is a
real HTTP server); here are the wire cases a provider can produce that the scripted upstream
does not: reuse and stale keep-alive connections, bodies delimited by close, interim answers,
garbage, truncation, timeouts, TLS, a company proxy's CONNECT tunnel and a consumer slower
than the provider. Each case runs on asyncio's loop and on uvloop (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path

import httpx
import pytest
from support.company_proxy import clear_proxy_env, connect_proxy, provider_tls

from kimi_proxy.upstream.client import CallContext, UpstreamClient
from kimi_proxy.upstream.connection import HIGH_WATER, Connection, StopPushing
from kimi_proxy.upstream.transport import HttptoolsTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://localhost:{port}/v1/chat/completions"
    finally:
        srv.close()
        for writer in connections:
            writer.close()


def client(transport: HttptoolsTransport | None = None, read: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport or HttptoolsTransport(), timeout=httpx.Timeout(5.0, read=read)
    )


async def test_keep_alive_connection_is_reused_and_the_request_arrives_whole() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            seen.append(await read_request(reader))
            writer.write(OK)

    async with server(handler) as url, client() as http:
        for n in range(3):
            response = await http.post(url, content=b'{"n":%d}' % n, headers={"x-k": "v"})
            assert (response.status_code, response.content) == (200, b"ok")
    assert connections == 1
    assert seen[2].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nx-k: v\r\n" in seen[2] and seen[2].endswith(b'\r\n\r\n{"n":2}')


async def test_a_chunked_stream_arrives_in_order_as_sent() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for n in range(5):
            writer.write(b"7\r\ndata: %d\r\n" % n)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async with (
        server(handler) as url,
        client() as http,
        http.stream("POST", url, content=b"{}") as response,
    ):
        pieces = [piece async for piece in response.aiter_bytes()]
    assert b"".join(pieces) == b"".join(b"data: %d" % n for n in range(5))
    assert len(pieces) > 1  # streamed as it came, not buffered to the end


async def test_a_connection_the_provider_closed_while_idle_is_replaced() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(OK)  # keep-alive promised, then closed after one answer

    async with server(handler) as url, client() as http:
        assert (await http.post(url, content=b"1")).content == b"ok"
        await asyncio.sleep(0.05)
        assert (await http.post(url, content=b"2")).content == b"ok"
    assert connections == 2


async def test_connections_the_provider_closes_leave_the_pool_at_once() -> None:
    transport = HttptoolsTransport()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)

    async with server(handler) as url, client(transport) as http:
        await asyncio.gather(*(http.post(url, content=b"{}") for _ in range(5)))
        await asyncio.sleep(0.05)  # each answer was followed by the provider's close
        assert transport._open == set()
        assert all(not idle for idle in transport._idle.values())


async def test_a_reused_connection_that_dies_before_answering_is_retried_once() -> None:
    transport = HttptoolsTransport()
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        while True:
            await read_request(reader)
            calls += 1
            if calls == 2:
                return  # the race: closed just as the second request went out
            writer.write(OK)

    async with server(handler) as url, client(transport) as http:
        await http.post(url, content=b"1")
        idle = transport._idle[("http", "localhost", int(url.split(":")[2].split("/")[0]))][0]
        idle.closed = False  # as if the close had not arrived yet
        assert (await http.post(url, content=b"2")).content == b"ok"
    assert calls == 3


async def test_a_body_delimited_by_the_close_of_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")

    async with server(handler) as url, client() as http:
        assert (await http.post(url, content=b"{}")).content == b"all of it"


async def test_an_interim_answer_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + OK)

    async with server(handler) as url, client() as http:
        response = await http.post(url, content=b"{}")
    assert (response.status_code, response.content) == (200, b"ok")
    assert "link" not in response.headers


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["silent-close", "garbage", "short-body", "unterminated-chunks"],
)
async def test_a_broken_answer_is_a_protocol_error(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with server(handler) as url, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, content=b"{}")


async def test_silence_is_a_read_timeout_before_and_during_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.3)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await asyncio.sleep(10)

    async with server(handler) as url, client(read=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, content=b"{}")
    async with (
        server(handler) as url,
        client(read=0.5) as http,
        http.stream("POST", url, content=b"{}") as response,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()


async def test_the_read_timeout_counts_silence_not_the_whole_stream() -> None:
    """Pieces every 50 ms for half a second under a 150 ms read timeout: never silent for
    long, so no timeout, also when the consumer itself dawdles longer than the timeout."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0.05)
            writer.write(b"1\r\nx\r\n")
        writer.write(b"0\r\n\r\n")

    async with (
        server(handler) as url,
        client(read=0.15) as http,
        http.stream("POST", url, content=b"{}") as response,
    ):
        received = b""
        async for piece in response.aiter_bytes():
            received += piece
            if len(received) == 1:
                await asyncio.sleep(0.2)  # longer than the timeout, but not waiting on it
    assert received == b"x" * 10


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with server(read_request) as url:
        pass  # closed: nothing listens there now
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(url, content=b"{}")


async def test_tls_is_verified_against_the_trusted_authorities(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    authority, server_tls, trusted = provider_tls("localhost")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)

    async with server(handler, tls=server_tls) as url:
        async with client(HttptoolsTransport(ssl_context=trusted)) as http:
            assert (await http.post(url, content=b"{}")).content == b"ok"
        async with client() as http:  # the system's authorities do not know this one
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.post(url, content=b"{}")
        # A company's own authority, as `kimi-proxy serve` finds it: SSL_CERT_FILE.
        bundle = tmp_path / "company-ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        async with client() as http:
            assert (await http.post(url, content=b"{}")).content == b"ok"


async def test_all_connections_busy_is_a_pool_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(10)

    timeout = httpx.Timeout(5.0, pool=0.1)
    transport = HttptoolsTransport(max_connections=1)
    async with (
        server(handler) as url,
        httpx.AsyncClient(transport=transport, timeout=timeout) as http,
        http.stream("POST", url, content=b"{}"),
    ):
        with pytest.raises(httpx.PoolTimeout):
            await http.post(url, content=b"{}")


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_reading_pauses_while_a_slow_consumer_has_too_much_waiting() -> None:
    conn = Connection(("http", "provider", 80), on_lost=lambda _: None)
    wire = FakeTransport()
    conn.connection_made(wire)
    conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = b"x" * 4096
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    for _ in range(HIGH_WATER // len(piece) + 1):
        conn.data_received(frame)
    assert not wire.reading
    body = conn.body(read_timeout=1.0)
    first = await anext(body)
    assert len(first) > HIGH_WATER  # everything waiting, as one piece
    assert wire.reading
    conn.data_received(b"0\r\n\r\n")
    assert [rest async for rest in body] == []
    assert conn.reusable()


async def test_a_connection_left_paused_is_not_reused() -> None:
    """An answer that ended while its reader was behind: reading is still paused, so the
    connection would hang the next request; it is closed instead."""
    conn = Connection(("http", "provider", 80), on_lost=lambda _: None)
    conn.connection_made(FakeTransport())
    big = b"x" * (HIGH_WATER + 1)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big)
    conn.data_received(head + big)
    assert conn.complete and not conn.reusable()


async def test_https_goes_through_the_proxy_named_by_https_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server_tls, trusted = provider_tls("provider.test")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)

    clear_proxy_env(monkeypatch)
    async with server(handler, tls=server_tls) as url, connect_proxy() as (proxy_port, heads):
        port = httpx.URL(url).port
        monkeypatch.setenv("HTTPS_PROXY", f"http://me:s3cret@127.0.0.1:{proxy_port}")
        # The proxy resolves the name: only through it does provider.test reach the server.
        provider = f"https://provider.test:{port}/v1/chat/completions"
        async with client(HttptoolsTransport(ssl_context=trusted)) as http:
            for _ in range(2):
                assert (await http.post(provider, content=b"{}")).content == b"ok"
    [head] = heads  # one tunnel, kept alive for the second request
    assert head.startswith(f"CONNECT provider.test:{port} HTTP/1.1\r\n".encode())
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"me:s3cret") in head


async def test_no_proxy_hosts_and_loopback_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    _, server_tls, trusted = provider_tls("localhost")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)

    clear_proxy_env(monkeypatch)
    async with server(handler, tls=server_tls) as url, connect_proxy() as (proxy_port, heads):
        monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "internal.test")
        async with client(HttptoolsTransport(ssl_context=trusted)) as http:
            assert (await http.post(url, content=b"{}")).content == b"ok"  # localhost
            with pytest.raises(httpx.ConnectError):  # tried directly: the name does not resolve
                await http.post("https://api.internal.test/v1", content=b"{}")
    assert heads == [], "the proxy saw a request it should not have"


async def test_a_proxy_that_refuses_the_tunnel_is_named_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_proxy_env(monkeypatch)
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"
    async with connect_proxy(refuse=refusal) as (proxy_port, _):
        monkeypatch.setenv("HTTPS_PROXY", f"http://me:s3cret@127.0.0.1:{proxy_port}")
        async with client() as http:
            with pytest.raises(httpx.ProxyError) as caught:
                await http.post("https://provider.test/v1", content=b"{}")
    message = str(caught.value)
    assert f"127.0.0.1:{proxy_port} (HTTPS_PROXY)" in message
    assert "407 Proxy Authentication Required" in message
    assert "s3cret" not in message


async def test_a_malformed_proxy_url_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://me:s3cret@proxy.test:notaport")
    async with client() as http:
        with pytest.raises(
            httpx.ProxyError, match="HTTPS_PROXY is not a valid proxy URL"
        ) as caught:
            await http.post("https://provider.test/v1", content=b"{}")
    assert "s3cret" not in str(caught.value)


def _frame(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_a_push_hands_each_read_to_the_consumer_within_the_read_itself() -> None:
    conn = Connection(("http", "provider", 80), on_lost=lambda _: None)
    conn.connection_made(FakeTransport())
    conn.data_received(CHUNKED_HEAD + _frame(b"early"))  # before the push began: kept
    got: list[bytes] = []

    def consumer(data: bytes) -> None:
        got.append(data)

    push = asyncio.ensure_future(conn.push(consumer, read_timeout=1.0))
    await asyncio.sleep(0)
    assert got == [b"early"]
    conn.data_received(_frame(b"next"))
    assert got == [b"early", b"next"]  # no task step in between
    assert not push.done()
    conn.data_received(b"0\r\n\r\n")
    await asyncio.wait_for(push, 1)
    assert conn.reusable()


async def test_a_push_pauses_reading_while_the_consumer_is_behind() -> None:
    conn = Connection(("http", "provider", 80), on_lost=lambda _: None)
    wire = FakeTransport()
    conn.connection_made(wire)
    conn.data_received(CHUNKED_HEAD)
    behind: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    push = asyncio.ensure_future(conn.push(lambda data: behind, read_timeout=1.0))
    await asyncio.sleep(0)
    conn.data_received(_frame(b"a"))
    assert not wire.reading
    behind.set_result(None)
    await asyncio.sleep(0)
    assert wire.reading
    conn.data_received(b"0\r\n\r\n")
    await asyncio.wait_for(push, 1)
    assert conn.reusable()


async def test_a_push_ends_with_the_consumers_failure_or_when_it_has_read_enough() -> None:
    def fails(data: bytes) -> None:
        raise ValueError("not an event")

    def enough(data: bytes) -> None:
        raise StopPushing

    for consumer, outcome in ((fails, pytest.raises(ValueError)), (enough, nullcontext())):
        conn = Connection(("http", "provider", 80), on_lost=lambda _: None)
        conn.connection_made(FakeTransport())
        conn.data_received(CHUNKED_HEAD)
        push = asyncio.ensure_future(conn.push(consumer, read_timeout=1.0))
        await asyncio.sleep(0)
        conn.data_received(_frame(b"a"))
        with outcome:
            await asyncio.wait_for(push, 1)
        assert not conn.reusable()  # the rest of the body was never read


async def test_a_push_that_hears_nothing_times_out() -> None:
    conn = Connection(("http", "provider", 80), on_lost=lambda _: None)
    conn.connection_made(FakeTransport())
    conn.data_received(CHUNKED_HEAD)
    with pytest.raises(httpx.ReadTimeout):
        await asyncio.wait_for(conn.push(lambda data: None, read_timeout=0.05), 1)


async def test_the_proxys_own_request_head_is_encoded_once_and_sent_whole() -> None:
    """`UpstreamClient` sends through `exchange` with a head made once per key: the provider
    gets the same request line and headers an `httpx.Request` would carry, one content-length
    and no transfer-encoding, for every request on the kept-alive connection."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(OK)

    async with server(handler) as url:
        upstream = UpstreamClient(
            HttptoolsTransport(), url=url, api_key="sk-test-0000", timeout=httpx.Timeout(5.0)
        )
        context = CallContext(model="m")
        for n in range(2):
            response = await upstream.open(b'{"n":%d}' % n, context)
            assert (response.status_code, await response.aread()) == (200, b"ok")
    for n, request in enumerate(seen):
        head, body = request.split(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        assert lines[0] == b"post /v1/chat/completions http/1.1"
        assert f"host: localhost:{httpx.URL(url).port}".encode() in lines
        assert b"authorization: bearer sk-test-0000" in lines
        assert [line for line in lines if line.startswith(b"content-length")] == [
            b"content-length: %d" % len(body)
        ]
        assert not any(line.startswith(b"transfer-encoding") for line in lines)
        assert body == b'{"n":%d}' % n
