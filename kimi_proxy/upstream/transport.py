"""The provider connection pool: an httpx transport on asyncio and httptools (HTTP/1.1).

httpx's Request, Response, timeouts and exceptions stay the proxy's language for the provider
(and `httpx.MockTransport` its test double); this transport does the wire work with the least
code on the hot path. Measured (bench/): to the provider's response headers it takes a third
less time than aiohttp under httpx (0.33 → 0.22 ms), and a body can be pushed: each network
read handed to a function inside the read callback, no task woken per chunk (`push`).

* Keep-alive connections are pooled per origin, newest first; idle ones expire, and one the
  provider closed is noticed when its close arrives. A request whose *reused* connection dies
  before any byte of the answer is sent again once on a fresh connection (the provider closed
  it while idle, as HTTP/1.1 allows).
* The body of a response arrives as whatever bytes one network read brought, so a burst of
  provider chunks stays one piece. Pulled, reading pauses while a slow consumer has more than
  `HIGH_WATER` bytes waiting; pushed, while the consumer's last piece is still waiting for the
  client. Either way a slow client holds back the provider, not proxy memory.
* Timeouts come from httpx (connect, read, write, pool) and raise httpx's exceptions, as do
  refused connections and broken answers. A head (status line and headers) over
  `MAX_HEAD_BYTES` is a broken answer: a provider cannot make the proxy hold an endless one.
* An https provider is reached through the proxy the environment names (`HTTPS_PROXY`, else
  `ALL_PROXY`; an http:// proxy, credentials allowed) with a CONNECT tunnel, unless `NO_PROXY`
  lists it; loopback hosts are always reached directly.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httptools
import httpx

HIGH_WATER = 64 * 1024  # bytes waiting for the consumer before reading pauses (per stream)
MAX_HEAD_BYTES = 64 * 1024  # status line and headers: an answer whose head is longer is refused
_Origin = tuple[str, str, int]
Consumer = Callable[[bytes], "asyncio.Future[None] | None"]


class StopPushing(Exception):
    """Raised by a push consumer that needs no more of the body (it read the stream's end)."""


class Proxy:
    """An http:// proxy from the environment; `str()` never shows its credentials."""

    def __init__(self, url: str, variable: str) -> None:
        parsed = httpx.URL(url if "://" in url else f"http://{url}")
        self.variable = variable
        self.scheme = parsed.scheme
        self.host = parsed.host
        self.port = parsed.port or 80
        self.authorization = b""
        if parsed.username or parsed.password:
            basic = base64.b64encode(f"{parsed.username}:{parsed.password}".encode())
            self.authorization = b"Proxy-Authorization: Basic %s\r\n" % basic

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port} ({self.variable})"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_proxy(origin: _Origin, proxies: dict[str, str]) -> Proxy | None:
    """The proxy for an https `origin` (`proxies`: the environment as `urllib.request` reads
    it); None for plain http, loopback and `NO_PROXY` hosts."""
    scheme, host, _ = origin
    if scheme != "https" or _is_loopback(host):
        return None
    for key, variable in (("https", "HTTPS_PROXY"), ("all", "ALL_PROXY")):
        if proxies.get(key):
            if urllib.request.proxy_bypass(host):  # NO_PROXY
                return None
            try:
                return Proxy(proxies[key], variable)
            except httpx.InvalidURL:  # the value may hold credentials: not repeated
                raise httpx.ProxyError(
                    f"{variable} is not a valid proxy URL; expected http://host:port."
                ) from None
    return None


class _TunnelAnswer(asyncio.Protocol):
    """The proxy's answer to CONNECT: the status line, once the head has arrived."""

    def __init__(self) -> None:
        self.status_line: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._head = b""

    def data_received(self, data: bytes) -> None:
        self._head += data
        if b"\r\n\r\n" in self._head and not self.status_line.done():
            self.status_line.set_result(self._head.split(b"\r\n", 1)[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status_line.done():
            self.status_line.set_result(b"(the proxy closed the connection)")


class _Deadline:
    """Fail a waiter with `error` after `seconds` (None: never), cheaper than asyncio.timeout:
    for the rare waits (a paused write)."""

    __slots__ = ("_handle",)

    def __init__(self, waiter: asyncio.Future[None], seconds: float | None, error: Exception):
        self._handle = (
            None
            if seconds is None
            else asyncio.get_running_loop().call_later(seconds, _fail, waiter, error)
        )

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _fail(waiter: asyncio.Future[None], error: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(error)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to the provider; one request at a time."""

    def __init__(self, origin: _Origin, on_lost: Callable[[Connection], None]) -> None:
        self.origin = origin
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timeout: float | None = None
        self._quiet_since = 0.0
        self._consumer: Consumer | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.received_any = False
        self.complete = False
        self.error: Exception | None = None
        self._informational = False
        self._until_close = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._head_bytes = 0
        self._stopped = False

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self.gone: asyncio.Future[None] = self._loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._quiet_since = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(httpx.RemoteProtocolError(f"The provider's answer is not HTTP: {exc}"))
            self.close()
            return
        consumer = self._consumer
        if consumer is not None and self._body:
            self._deliver(consumer)
            return
        if not self.status:  # still in the head: a never-ending one must not grow forever
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._broken(
                    httpx.RemoteProtocolError(
                        f"The provider's answer has a header block over {MAX_HEAD_BYTES} bytes."
                    )
                )
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gone.done():
            self.gone.set_result(None)
        self._stop_timer()
        self._on_lost(self)
        if self.status and self._until_close and not self.complete:
            self.complete = True  # a body delimited by the connection's close has ended
            self._wake()
        elif not self.complete:
            message = (
                "The provider closed the connection before the answer was complete."
                if self.status
                else "The provider closed the connection without answering."
            )
            self._broken(httpx.RemoteProtocolError(message))
        if self._writable is not None:
            _fail(self._writable, httpx.WriteError("The provider closed the connection."))

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): skip it
            self._informational = True
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self.headers}
        self._until_close = b"content-length" not in names and b"transfer-encoding" not in names
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._consumer is not None:
            return  # pushed when the read is parsed: what arrived together goes together
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._wake()

    def _deliver(self, consumer: Consumer) -> None:
        """What one network read brought of the body, to the pushing consumer, in the read
        callback itself."""
        try:
            wait = consumer(self._take_body())
        except StopPushing:
            self._consumer = None
            self._stopped = True
            self._wake()
            return
        except Exception as exc:  # the consumer's failure ends the push with it
            self._consumer = None
            self._broken(exc)
            return
        if wait is None or wait.done() or self.transport is None:
            return
        if not self._paused:
            self._paused = True  # the consumer is behind (a slow client): read once it is not
            self.transport.pause_reading()
        wait.add_done_callback(self._read_again)

    def _take_body(self) -> bytes:
        """What has arrived of the body and was not handed on yet, as one piece."""
        data = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        return data

    def _read_again(self, _: object) -> None:
        if self._paused and not self.closed and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    # -- the request's side
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _broken(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def _wait(self, seconds: float | None) -> None:
        """Until the provider sends something, at most `seconds` of silence (the read timeout).

        One timer per connection, re-armed only when it fires early: a stream waits once per
        network read, and a timer set and cancelled each time cost ~1% of the proxy's CPU."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._quiet_since = loop.time()
        self._read_timeout = seconds
        if seconds is not None and self._read_timer is None:
            self._read_timer = loop.call_at(self._quiet_since + seconds, self._check_silence)
        try:
            await waiter
        finally:
            self._waiter = None

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _check_silence(self) -> None:
        self._read_timer = None
        waiter, seconds = self._waiter, self._read_timeout
        if waiter is None or waiter.done() or seconds is None:
            return  # nobody waiting: the next wait arms the timer again
        deadline = self._quiet_since + seconds
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            waiter.set_exception(httpx.ReadTimeout("The provider stopped sending."))
        else:
            self._read_timer = loop.call_at(deadline, self._check_silence)

    async def send(self, head: bytes, body: list[bytes], timeouts: dict[str, Any]) -> None:
        """Write the request, then wait for the status line and headers of the answer."""
        assert self.transport is not None
        self._reset()
        self.transport.write(head + body[0] if body else head)
        for part in body[1:]:
            self.transport.write(part)
        if self._writable is not None:
            waiter = self._writable
            deadline = _Deadline(waiter, timeouts.get("write"), httpx.WriteTimeout("write"))
            try:
                await waiter
            finally:
                deadline.cancel()
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait(timeouts.get("read"))

    async def body(self, read_timeout: float | None) -> AsyncIterator[bytes]:
        """What arrived since the last step, joined: one piece per network read or burst."""
        while True:
            if self._body:
                data = self._take_body()
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield data
            elif self.complete:
                return
            elif self.error is not None:
                raise self.error
            else:
                await self._wait(read_timeout)

    async def push(self, consumer: Consumer, read_timeout: float | None) -> None:
        """Hand what each network read brings of the body to `consumer`, from the read
        callback itself, until the body ends or the consumer raises `StopPushing`.

        Pulling (`body`) wakes the reading task once per network read; at a provider's pace
        every chunk is its own read. Pushed, the proxy's CPU per chunk at 5 ms a chunk fell from
        21.9 to 19.2 µs (bench/cost.py, docs/ARCHITECTURE.md).
        The consumer returns a future when it cannot take more yet: reading pauses until it is
        done. Its exception ends the push and is raised here.
        """
        self._read_again(None)  # paused for the pull's reader: the consumer takes over
        self._consumer = consumer
        if self._body:  # what arrived before the push began
            self._deliver(consumer)
        try:
            while self.error is None:  # a failure of the consumer's first, then the end
                if self.complete or self._stopped:
                    return
                await self._wait(read_timeout)
            raise self.error
        finally:
            self._consumer = None

    def reusable(self) -> bool:
        """Only a connection whose answer ended cleanly and whose reading runs carries another."""
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.closed
            and not self._paused
        )

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()


class ResponseStream(httpx.AsyncByteStream):
    """A response's body: pulled (`async for`) or pushed (`push`)."""

    def __init__(self, pool: HttptoolsTransport, conn: Connection, read: float | None) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._read = read

    def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._conn is not None, "the response was closed"
        return self._conn.body(self._read)  # no generator of its own: one step less per read

    async def push(self, consumer: Consumer) -> None:
        """The body handed to `consumer` as it arrives (`Connection.push`)."""
        assert self._conn is not None, "the response was closed"
        await self._conn.push(consumer, self._read)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class HttptoolsTransport(httpx.AsyncBaseTransport):
    """A pool of keep-alive HTTP/1.1 connections (http and https), as an httpx transport."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        keepalive_expiry: float = 60.0,
        trust_env: bool = True,
    ) -> None:
        self._ssl = ssl_context
        self._env_proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._keepalive_expiry = keepalive_expiry
        self._max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None  # bound to the loop on first use
        self._idle: dict[_Origin, list[Connection]] = {}
        self._open: set[Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        head = _request_head(request)
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        stream = cast(httpx.AsyncByteStream, request.stream)
        body = [b"%x\r\n%s\r\n" % (len(p), p) if chunked else p async for p in stream]
        if chunked:
            body.append(b"0\r\n\r\n")
        await self._acquire_slot(timeouts.get("pool"))
        conn: Connection | None = None
        try:
            conn = await self._checkout(origin, timeouts.get("connect"))
            try:
                await conn.send(head, body, timeouts)
            except (httpx.RemoteProtocolError, httpx.WriteError):
                if conn.idle_since == 0.0 or conn.received_any:
                    raise
                # A reused connection the provider had closed while it sat idle: once more.
                self._forget(conn)
                conn = await self._connect(origin, timeouts.get("connect"))
                await conn.send(head, body, timeouts)
        except BaseException:
            if conn is not None:
                self._forget(conn)  # in an unknown state: never reused
            self._free_slot()
            raise
        del body  # the stream may last minutes; the request body need not
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=ResponseStream(self, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _acquire_slot(self, seconds: float | None) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        try:
            async with asyncio.timeout(seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("All connections to the provider are busy.") from None

    def _free_slot(self) -> None:
        assert self._slots is not None
        self._slots.release()

    async def _checkout(self, origin: _Origin, connect_timeout: float | None) -> Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive_expiry:
                return conn
            self._forget(conn)
        return await self._connect(origin, connect_timeout)

    async def _connect(self, origin: _Origin, seconds: float | None) -> Connection:
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        proxy = env_proxy(origin, self._env_proxies)
        try:
            async with asyncio.timeout(seconds):
                if proxy is not None:
                    assert tls is not None
                    conn = await self._tunnel(proxy, origin, tls)
                else:
                    _, conn = await loop.create_connection(
                        lambda: Connection(origin, self._lost),
                        host,
                        port,
                        ssl=tls,
                        server_hostname=host if tls else None,
                    )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"Connecting to {host}:{port} timed out.") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._open.add(conn)
        return conn

    async def _tunnel(self, proxy: Proxy, origin: _Origin, tls: ssl.SSLContext) -> Connection:
        """A TLS connection to `origin` inside a CONNECT tunnel through `proxy`."""
        _, host, port = origin
        loop = asyncio.get_running_loop()
        if proxy.scheme != "http":
            raise httpx.ProxyError(f"The proxy {proxy} is not an http:// URL; use http://.")
        try:
            raw, answer = await loop.create_connection(_TunnelAnswer, proxy.host, proxy.port)
        except OSError as exc:
            raise httpx.ConnectError(f"Cannot reach the proxy {proxy}: {exc}") from exc
        try:
            target = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()
            raw.write(
                b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, target, proxy.authorization)
            )
            status_line = await answer.status_line
            status = status_line.split(b" ", 2)[1:2]
            if not (status and len(status[0]) == 3 and status[0].startswith(b"2")):
                raise httpx.ProxyError(
                    f"The proxy {proxy} refused the tunnel to {host}:{port}: "
                    f"{status_line.decode(errors='replace')}. Check {proxy.variable} (and its "
                    "credentials) or list the host in NO_PROXY"
                )
            conn = Connection(origin, self._lost)
            secured = await loop.start_tls(raw, conn, tls, server_hostname=host)
            assert secured is not None
            conn.connection_made(secured)
            return conn
        except BaseException:
            raw.close()
            raise

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def release(self, conn: Connection) -> None:
        """The response is closed: pool its connection if it can carry another request."""
        self._free_slot()
        if conn.reusable():
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, []).append(conn)
        else:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _lost(self, conn: Connection) -> None:
        """A connection closed (by either side): out of the pool, not kept until reused."""
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def aclose(self) -> None:
        """Close every connection, then wait (a second at most) until they are: a TLS close
        needs the loop for a moment, and the server's loop ends right after."""
        closing = list(self._open)
        for conn in closing:
            self._forget(conn)
        self._idle.clear()
        waiting = [conn.gone for conn in closing if not conn.gone.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=1.0)


def _request_head(request: httpx.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
    lines += [b"%s: %s\r\n" % pair for pair in request.headers.raw]
    lines.append(b"\r\n")
    return b"".join(lines)
