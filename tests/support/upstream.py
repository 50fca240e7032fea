"""A scripted OpenAI-compatible upstream for tests: a real HTTP server on a free port.

A test gives it a `script`: a function from (request body, call number) to a reply — a stream of
chunks (with optional pauses, a stall or a dropped connection), a JSON completion, or an error.
The server records every request it got and whether streams were cut off by the other side.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from kimi_proxy.cli.launcher import free_port


@dataclass
class Pause:
    seconds: float


@dataclass
class Drop:
    """Cut the connection mid-stream (no [DONE], no terminating chunk)."""


@dataclass
class Stream:
    items: list[Any]  # dicts (chunks), bytes (raw), Pause, Drop
    done: bool = True
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Json:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Raw:
    body: bytes
    status: int = 200
    content_type: str = "text/html"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stall:
    """Accept the request and never answer (until the client gives up)."""

    seconds: float = 3600


Reply = Stream | Json | Raw | Stall
Script = Callable[[dict[str, Any], int], Reply]


# -- reply builders ------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "scripted",
    }
    body["choices"] = (
        [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    )
    if usage is not None:
        body["usage"] = usage
    return body


def usage(prompt: int = 10, completion: int = 5, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def text_stream(text: str, pieces: int = 3, *, reasoning: str = "", finish: str = "stop") -> Stream:
    items: list[Any] = [chunk({"role": "assistant", "content": ""})]
    if reasoning:
        items.append(chunk({"reasoning": reasoning}))
    size = max(1, -(-len(text) // pieces))
    items += [chunk({"content": text[i : i + size]}) for i in range(0, len(text), size)]
    items.append(chunk({}, finish=finish))
    items.append(chunk(choices=False, usage=usage(completion=max(1, len(text) // 4))))
    return Stream(items)


def tool_stream(
    calls: list[tuple[str, dict[str, Any]]],
    *,
    text: str = "",
    fragments: int = 3,
    first_id: int = 0,
) -> Stream:
    """Tool calls, each streamed as `fragments` pieces of its arguments; ids are
    `functions.NAME:N` counting from `first_id`."""
    items: list[Any] = [chunk({"role": "assistant", "content": ""})]
    if text:
        items.append(chunk({"content": text}))
    for index, (name, args) in enumerate(calls):
        raw = json.dumps(args)
        size = max(1, -(-len(raw) // fragments))
        parts = [raw[i : i + size] for i in range(0, len(raw), size)] or [""]
        first = {
            "index": index,
            "id": f"functions.{name}:{first_id + index}",
            "type": "function",
            "function": {"name": name, "arguments": parts[0]},
        }
        items.append(chunk({"tool_calls": [first]}))
        items += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
            for p in parts[1:]
        ]
    items.append(chunk({}, finish="tool_calls", usage=usage()))
    return Stream(items)


def completion(
    text: str | None = None,
    tool_calls: list[tuple[str, dict[str, Any]]] = (),
    *,
    reasoning: str | None = None,
    finish: str | None = None,
) -> Json:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning:
        message["reasoning"] = reasoning
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"functions.{n}:{i}",
                "type": "function",
                "function": {"name": n, "arguments": json.dumps(a)},
            }
            for i, (n, a) in enumerate(tool_calls)
        ]
    return Json(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish or ("tool_calls" if tool_calls else "stop"),
                }
            ],
            "usage": usage(),
        }
    )


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Json:
    return Json(
        {"error": {"message": message, "type": "error", "code": status}}, status, headers or {}
    )


def per_minute_token_limit(limit: int, script: Script) -> Script:
    """A provider with a tokens-per-minute limit for the key, counted as Groq does before it
    runs a request: the prompt (here a quarter of the body's JSON) plus `max_tokens` in full.
    A request over the limit gets Groq's 413; the others go to `script`."""

    def limited(body: dict[str, Any], call: int) -> Reply:
        requested = len(json.dumps(body)) // 4 + int(body.get("max_tokens") or 0)
        if requested <= limit:
            return script(body, call)
        message = (
            "Request too large for model `kimi-k2` in organization `org_test` service tier "
            f"`on_demand` on tokens per minute (TPM): Limit {limit}, Requested {requested}, "
            "please reduce your message size and try again. Need more tokens? Upgrade to Dev "
            "Tier today at https://console.groq.com/settings/billing"
        )
        return Json(
            {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}, 413
        )

    return limited


def stream_to_completion(stream: Stream) -> Json:
    """The non-streaming equivalent of a scripted stream (for mode-agnostic scripts)."""
    text, reasoning, calls, finish = "", "", {}, "stop"
    counted = usage()
    for item in stream.items:
        if not isinstance(item, dict):
            continue
        counted = item.get("usage") or counted
        for choice in item.get("choices", []):
            delta = choice.get("delta", {})
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning") or ""
            for frag in delta.get("tool_calls") or []:
                call = calls.setdefault(frag["index"], {"name": "", "args": "", "id": None})
                call["id"] = call["id"] or frag.get("id")
                fn = frag.get("function", {})
                call["name"] += fn.get("name") or ""
                call["args"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        message["reasoning"] = reasoning
    if calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["args"]},
            }
            for _, c in sorted(calls.items())
        ]
    return Json(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": counted,
        },
        headers=stream.headers,
    )


# -- the server ----------------------------------------------------------------------------


@dataclass
class Record:
    body: dict[str, Any]
    headers: dict[str, str]
    finished: bool = False  # the whole reply was sent
    cancelled: bool = False  # the client went away before the end
    ended_at: float | None = None
    received_at: float = field(default_factory=time.monotonic)  # the request's body was read
    first_sent_at: float | None = None  # the first chunk with content was handed to the server

    def wait_cancelled(self, seconds: float = 3.0) -> bool:
        """Whether the client closes this stream within `seconds` (it sees the close a moment
        after the proxy's client has gone)."""
        deadline = time.monotonic() + seconds
        while not self.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.cancelled


class ScriptedUpstream:
    def __init__(self, script: Script, models: list[str] | None = None) -> None:
        self.script = script
        self.models = models or ["scripted"]  # what `GET /models` lists
        self.models_reply: Json | None = None  # or this, instead of the list
        self.requests: list[Record] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        self.base_url = ""

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    async def _models(self, request: Request) -> Response:
        reply = self.models_reply or Json(
            {"object": "list", "data": [{"id": m} for m in self.models]}
        )
        return Response(
            json.dumps(reply.body),
            status_code=reply.status,
            media_type="application/json",
            headers=reply.headers,
        )

    async def _completions(self, request: Request) -> Response:
        body = json.loads(await request.body())
        record = Record(body=body, headers=dict(request.headers))
        self.requests.append(record)
        reply = self.script(body, len(self.requests) - 1)
        if isinstance(reply, Stream) and not body.get("stream"):
            reply = stream_to_completion(reply)
        if isinstance(reply, Stall):
            try:
                await asyncio.sleep(reply.seconds)
            except asyncio.CancelledError:
                record.cancelled = True
                raise
            return Response(b"", status_code=504)
        if isinstance(reply, Json):
            record.finished = True
            return Response(
                json.dumps(reply.body),
                status_code=reply.status,
                media_type="application/json",
                headers=reply.headers,
            )
        if isinstance(reply, Raw):
            record.finished = True
            return Response(
                reply.body,
                status_code=reply.status,
                media_type=reply.content_type,
                headers=reply.headers,
            )
        return StreamingResponse(
            self._stream(reply, record),
            status_code=reply.status,
            media_type="text/event-stream",
            headers=reply.headers,
        )

    async def _stream(self, reply: Stream, record: Record) -> Any:
        try:
            for item in reply.items:
                if isinstance(item, Pause):
                    await asyncio.sleep(item.seconds)
                elif isinstance(item, Drop):
                    raise ConnectionAbortedError("scripted drop")
                elif isinstance(item, bytes):
                    yield item
                else:
                    if record.first_sent_at is None and _has_content(item):
                        record.first_sent_at = time.monotonic()
                    yield b"data: " + json.dumps(item).encode() + b"\n\n"
            if reply.done:
                yield b"data: [DONE]\n\n"
            record.finished = True
        except (asyncio.CancelledError, GeneratorExit):
            record.cancelled = True
            raise
        finally:
            record.ended_at = time.monotonic()


def _has_content(item: dict[str, Any]) -> bool:
    return any((c.get("delta") or {}).get("content") for c in item.get("choices") or ())


@contextmanager
def serve_in_thread(
    app: Any,
    *,
    loop: str = "asyncio",
    http: str | type[asyncio.Protocol] = "h11",
    port: int | None = None,
    **options: Any,
) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yields its base URL (https when
    `options` give uvicorn an `ssl_certfile`)."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop=loop,
        http=http,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def scripted_upstream(
    script: Script, models: list[str] | None = None, **options: Any
) -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(script, models)
    with serve_in_thread(upstream.app, **options) as url:
        upstream.base_url = url + "/v1"
        yield upstream
