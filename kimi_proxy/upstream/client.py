"""The provider client: POST /chat/completions with retries, and the stream of decoded chunks.

The only I/O seam to the provider. It owns no connection pool of its own: the app's lifespan
creates one shared httpx transport (`transport.py`; tests inject a `MockTransport` or point the
app at a scripted upstream server). Requests go to the transport directly: `httpx.AsyncClient`'s
redirects, auth flow, hooks and cookie jar have no use here (a provider's cookie must never reach
another user's request), and skipping them halves httpx's share of a request (bench/).
One call is one attempt: which key, when to retry, wait or fail over is the pool's decision
(`providers/pool.py`), taken while nothing of the answer has reached the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx
import orjson

from kimi_proxy import __version__
from kimi_proxy.errors import (
    BadGatewayError,
    ModelOutputError,
    ProxyError,
    TokenLimitError,
    error_from_provider_response,
    error_from_transport,
    redact,
    transport_failure_kind,
)
from kimi_proxy.protocol.sse import SSEDecoder

from .connection import StopPushing
from .transport import HttptoolsTransport, ResponseStream, request_head

log = logging.getLogger("kimi_proxy.upstream")

MIN_ANSWER_TOKENS = 1024  # a smaller answer budget would cut off most tool calls


async def close_shielded(close: Callable[[], Awaitable[None]]) -> None:
    """Run a close to its end even while this task is being cancelled (the server shutting
    down), so the provider's stream is never left open."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        await asyncio.shield(close())
    else:
        await close()


@dataclass(frozen=True, slots=True)
class CallContext:
    """What error mapping needs to know about the call."""

    model: str
    prompt_tokens: int = 0
    context_window: int = 0
    overflow_pattern: str | None = None  # the provider's wording of an overflow (catalog)


class UpstreamFailure(Exception):
    """A failed attempt: the mapped error, whether another attempt may succeed, and what the
    provider answered (no status: it never answered)."""

    def __init__(
        self,
        error: ProxyError,
        *,
        retryable: bool,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.status = status
        self.headers: Mapping[str, str] = headers or {}
        self.body = body


class UpstreamClient:
    """One provider key: `open` sends one request and returns the provider's 2xx response
    unread. Retries, waits and failover belong to the pool (`providers/pool.py`)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        url: str,
        api_key: str | None,
        timeout: httpx.Timeout,
        url_setting: str = "KIMI_UPSTREAM_URL",
    ) -> None:
        self._transport = transport
        self._url_setting = url_setting  # where the user fixes the URL: named in errors
        self._url = url
        self._target = httpx.URL(url)  # parsed once, not on every request
        self._api_key = api_key
        self._timeouts = timeout.as_dict()
        self._extensions = {"timeout": self._timeouts}
        self._headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "user-agent": f"kimi-proxy/{__version__}",
        }
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        # Every request's head but its length, encoded once (`HttptoolsTransport.exchange`).
        template = httpx.Request("POST", self._target, headers=self._headers)
        self._head = request_head(template, length=False)

    @property
    def url(self) -> str:
        return self._url

    def _transport_error(self, exc: httpx.HTTPError) -> ProxyError:
        """No HTTP answer from the provider, with where its URL is set named."""
        return error_from_transport(exc, upstream=self._url, setting=self._url_setting)

    async def open(self, payload: dict[str, Any] | bytes, context: CallContext) -> httpx.Response:
        """Send the request once; a 2xx response, unread, or `UpstreamFailure`.

        A request over the key's tokens-per-minute limit is sent once more with a smaller
        answer budget when its prompt leaves room for one.
        """
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        try:
            return await self._attempt(body, context)
        except UpstreamFailure as failure:
            if not isinstance(failure.error, TokenLimitError):
                raise
            fitted = within_token_limit(body, failure.error)
            if fitted is None:
                raise
            return await self._attempt(fitted, context)

    async def _attempt(self, body: bytes, context: CallContext) -> httpx.Response:
        # The body goes out from a one-shot iterator so the open response does not keep the
        # ~50 KB request alive for the whole stream (it matters with hundreds of streams).
        try:
            response = await self._send(body)
        except httpx.HTTPError as exc:
            retryable = transport_failure_kind(exc) in ("connect", "connect_timeout")
            raise UpstreamFailure(
                self._transport_error(exc),
                retryable=retryable,
            ) from exc
        if response.status_code < 400:
            return response
        try:
            data = await response.aread()
        except httpx.HTTPError:
            data = b""
        finally:
            await response.aclose()
        error = error_from_provider_response(
            response.status_code,
            data,
            response.headers,
            model=context.model,
            prompt_tokens=context.prompt_tokens,
            context_window=context.context_window,
            setting=self._url_setting,
            overflow_pattern=context.overflow_pattern,
        )
        if self._api_key:
            error.message = redact(error.message, (self._api_key,))
        status = response.status_code
        retryable = not isinstance(error, TokenLimitError) and (
            status == 429 or status >= 500 or isinstance(error, ModelOutputError)
        )
        raise UpstreamFailure(
            error, retryable=retryable, status=status, headers=response.headers, body=data
        )

    async def _send(self, body: bytes) -> httpx.Response:
        transport = self._transport
        if isinstance(transport, HttptoolsTransport):  # the proxy's own: the head is ready
            head = self._head + b"content-length: %d\r\n\r\n" % len(body)
            return await transport.exchange(self._target, head, [body], self._timeouts)
        headers = {**self._headers, "content-length": str(len(body))}
        request = httpx.Request(
            "POST", self._target, content=_once(body), headers=headers, extensions=self._extensions
        )
        return await transport.handle_async_request(request)

    async def read_completion(self, response: httpx.Response) -> dict[str, Any]:
        """A non-streaming completion, read from the open response, as a dict."""
        try:
            data = await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        return _json_object(data, "answered with")

    async def chunk_batches(
        self, response: httpx.Response
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Decoded chunks of a streaming response, a list per network read (so what arrived
        together leaves together), until `[DONE]` or the end of the body.

        Transport failures mid-stream raise the mapped `ProxyError`.
        """
        decoder = SSEDecoder()
        try:
            async for raw in _raw_reads(response):
                batch, done = decode_reads(decoder, raw)
                if batch:
                    yield batch
                if done:
                    return
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc

    async def relay(self, response: httpx.Response, deliver: Deliver) -> None:
        """The chunks of a streaming response handed to `deliver` as they arrive, a list per
        network read, until `[DONE]` or the end of the body.

        With the proxy's own transport, `deliver` runs in the connection's read callback
        (`Connection.push`): no task wakes per chunk. `deliver` returns a future when it cannot
        take more yet (a slow client): reading waits for it. Transport failures mid-stream raise
        the mapped `ProxyError`; so does what `deliver` raises.
        """
        decoder = SSEDecoder()

        def consume(raw: bytes) -> asyncio.Future[None] | None:
            batch, done = decode_reads(decoder, raw)
            wait = deliver(batch) if batch else None
            if done:
                raise StopPushing
            return wait

        stream = response.stream
        try:
            if isinstance(stream, ResponseStream) and "content-encoding" not in response.headers:
                await stream.push(consume)
                return
            async for raw in _raw_reads(response):  # another transport (tests): pulled
                try:
                    wait = consume(raw)
                except StopPushing:
                    return
                if wait is not None:
                    await wait
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc


Deliver = Callable[[list[dict[str, Any]]], "asyncio.Future[None] | None"]


def decode_reads(decoder: SSEDecoder, raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The chunks one network read completed, and whether `[DONE]` was among them."""
    batch: list[dict[str, Any]] = []
    for data in decoder.feed_data(raw):
        if data == b"[DONE]":
            return batch, True
        if data:
            batch.append(_json_object(data, "sent a stream event"))
    return batch, False


def within_token_limit(body: bytes, error: TokenLimitError) -> bytes | None:
    """The request with `max_tokens` lowered so prompt and answer fit the provider's limit, or
    None when the prompt leaves no useful answer budget (providers count `max_tokens` in full
    against the limit before running a request: Groq, OpenAI)."""
    payload = orjson.loads(body)
    asked = payload.get("max_tokens")
    if not isinstance(asked, int):
        return None
    prompt = error.requested - asked
    budget = error.limit - prompt - error.limit // 100  # 1% margin for the provider's count
    if prompt <= 0 or not MIN_ANSWER_TOKENS <= budget < asked:
        return None
    log.warning(
        "request over the provider's limit of %d tokens a minute: answer budget cut from %d "
        "to %d tokens so it fits",
        error.limit,
        asked,
        budget,
    )
    payload["max_tokens"] = budget
    return orjson.dumps(payload)


def _raw_reads(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives. Without a content encoding (the proxy asks for none), straight
    from the transport: httpx's decoding and chunking layers cost three generator steps a read."""
    if "content-encoding" in response.headers:
        return response.aiter_bytes()
    return cast(httpx.AsyncByteStream, response.stream).__aiter__()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from the provider, or a 502 saying what came instead."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        shown = data[:200].decode(errors="replace")
        raise BadGatewayError(
            f"The provider {what} something malformed (not a JSON object): {shown!r}"
        )
    return value
