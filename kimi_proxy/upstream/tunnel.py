"""The way out through a proxy: the proxy the environment names for an https provider
(`HTTPS_PROXY`, else `ALL_PROXY`; `NO_PROXY` and loopback hosts go direct) and a CONNECT tunnel
through it, with TLS to the provider inside."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import httpx

Origin = tuple[str, str, int]  # scheme, host, port
P = TypeVar("P", bound=asyncio.Protocol)


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


def env_proxy(origin: Origin, proxies: dict[str, str]) -> Proxy | None:
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


async def open_tunnel(
    proxy: Proxy, origin: Origin, tls: ssl.SSLContext, protocol: Callable[[], P]
) -> P:
    """A TLS connection to `origin` inside a CONNECT tunnel through `proxy`, read by a
    `protocol()` once the tunnel is up."""
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
        conn = protocol()
        secured = await loop.start_tls(raw, conn, tls, server_hostname=host)
        assert secured is not None
        conn.connection_made(secured)
        return conn
    except BaseException:
        raw.close()
        raise
