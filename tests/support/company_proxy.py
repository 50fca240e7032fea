"""A company's HTTP proxy for tests: CONNECT tunnels to 127.0.0.1 whatever the host name (so a
name like provider.test reaches a local server only through it), and the TLS to go with it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trustme

PROXY_VARIABLES = ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "HTTP_PROXY")


@asynccontextmanager
async def connect_proxy(refuse: bytes = b"") -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP proxy that tunnels CONNECT to 127.0.0.1 whatever the name (or answers `refuse`);
    yields its port and the request heads it received."""
    heads: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        if refuse:
            writer.write(refuse)
            writer.close()
            return
        port = int(head.split()[1].rsplit(b":", 1)[1])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], heads
    finally:
        srv.close()
        for writer in writers:
            writer.close()


def provider_tls(name: str) -> tuple[trustme.CA, ssl.SSLContext, ssl.SSLContext]:
    """A certificate authority, a server context with its certificate for `name`, and a client
    context that trusts it."""
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(server_tls)
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    return authority, server_tls, trusted


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@contextmanager
def connect_proxy_in_thread() -> Iterator[tuple[int, list[bytes]]]:
    """`connect_proxy` on its own event loop in a background thread, for synchronous tests."""
    started: list[tuple[int, list[bytes]]] = []
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None
    loop = asyncio.new_event_loop()

    async def run() -> None:
        nonlocal stop
        stop = loop.create_future()
        async with connect_proxy() as found:
            started.append(found)
            ready.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield started[0]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()
