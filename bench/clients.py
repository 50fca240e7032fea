"""The provider clients the client decision compares, behind the one interface the proxy uses
(an `httpx.AsyncBaseTransport`): ours (`kimi_proxy/upstream/transport.py`: asyncio + httptools),
aiohttp's client, and httpx's own transport (httpcore).

`AiohttpTransport` adapts aiohttp to httpx's request, response, timeouts and exceptions, so the
proxy's error mapping works unchanged: a refused connection is `httpx.ConnectError`, a
timeout `httpx.ConnectTimeout` / `httpx.ReadTimeout`, a broken answer `httpx.ReadError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx

from kimi_proxy.upstream.transport import HttptoolsTransport


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise httpx.ReadError(str(exc)) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc)) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=True
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        headers = [(k.decode(), v.decode()) for k, v in request.headers.raw]
        try:
            response = await self._open().request(
                request.method, str(request.url), data=body, headers=headers, timeout=timeout
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        raw = [(k, v) for k, v in response.raw_headers]
        return httpx.Response(response.status, headers=raw, stream=_Body(response), request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)


def new_transport(name: str, max_connections: int) -> httpx.AsyncBaseTransport:
    if name == "ours":
        return HttptoolsTransport(max_connections=max_connections)
    if name == "aiohttp":
        return AiohttpTransport(max_connections)
    if name == "httpx":
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=256)
        return httpx.AsyncHTTPTransport(limits=limits)
    raise ValueError(f"no client {name!r}: ours, aiohttp or httpx")
