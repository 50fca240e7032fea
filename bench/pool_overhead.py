"""What routing and admission cost per request: `python -m bench.pool_overhead`.

One run, two pools side by side, the requests alternating between them at concurrency 1:
a single provider with one key (what every request paid before the pool existed, routing
aside), and three providers with two keys each whose answers carry Groq-dialect rate-limit
headers, one key exhausted (admission reads and reserves on every key, sorts, skips).

Two figures per pool, medians over the run:
* **route**: the pool's own work for one request — route, candidates, options, admission,
  reservation, reading the answer's headers, settling — timed around `plan_call`, `Call.open`
  and `Call.settle`, with a provider that answers at once (an in-process transport: no
  network, so nothing but the pool is timed).
* **request**: the whole `POST /v1/messages` through the app in-process (ASGI), the same
  Claude-Code-shaped 50 KB request, parse to last byte.
The difference between the two pools' figures is what a pool of three costs over one.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.datastructures import Headers

from bench.workload import anthropic_request
from kimi_proxy.config.settings import load_settings
from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.providers.models import ModelRouter
from kimi_proxy.server.app import create_app
from kimi_proxy.server.dispatch import plan_call
from kimi_proxy.server.state import ProxyState
from kimi_proxy.translate.calibration import Calibration, measure
from kimi_proxy.translate.request import anthropic_to_openai_request

ROUNDS = 400
SINGLE = """
[[provider]]
name = "solo"
base_url = "http://solo.invalid/v1"
keys = ["solo-key"]
dialect = "groq"
[family.kimi]
candidates = ["solo:kimi-k2.6"]
"""
THREE = """
[[provider]]
name = "one"
base_url = "http://one.invalid/v1"
keys = ["one-a", "one-b"]
dialect = "groq"
[[provider]]
name = "two"
base_url = "http://two.invalid/v1"
keys = ["two-a", "two-b"]
dialect = "groq"
[[provider]]
name = "three"
base_url = "http://three.invalid/v1"
keys = ["three-a", "three-b"]
dialect = "groq"
limits = { rpm = 1000000, tpm = 1000000000 }
[family.kimi]
candidates = ["one:kimi-k2.6", "two:kimi-k2.6", "three:kimi-k2.6"]
"""
SSE = (
    b"".join(
        b"data: " + orjson.dumps(c) + b"\n\n"
        for c in (
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 9000, "completion_tokens": 2}},
        )
    )
    + b"data: [DONE]\n\n"
)


class InstantProvider(httpx.AsyncBaseTransport):
    """A provider that answers every request at once, with Groq's headers; key `one-a` is
    out of tokens for a long while."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exhausted = request.headers.get("authorization", "").endswith("one-a")
        headers = {
            "content-type": "text/event-stream",
            "x-ratelimit-limit-tokens": "10000000",
            "x-ratelimit-remaining-tokens": "0" if exhausted else "9000000",
            "x-ratelimit-reset-tokens": "10m0s" if exhausted else "1.5s",
            "x-ratelimit-limit-requests": "1000000",
            "x-ratelimit-remaining-requests": "999000",
            "x-ratelimit-reset-requests": "2m0s",
        }
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "kimi-k2.6"}]}, headers=headers)
        return httpx.Response(200, content=SSE, headers=headers)


def _app(config: str, folder: Path) -> Any:
    path = folder / f"{abs(hash(config))}.toml"
    path.write_text(config)
    settings = load_settings(config=path, ping_interval=10.0)
    return create_app(settings, transport=InstantProvider())


def _state(app: Any) -> ProxyState:
    while not hasattr(app, "state"):
        app = app.app
    state: ProxyState = app.state.proxy
    return state


def _translate_once(state: ProxyState, request: MessagesRequest) -> float:
    """The translation `plan_call` does for the first candidate: not routing, subtracted."""
    candidate = state.pool.spec.families["kimi"][0]
    started = time.perf_counter()
    upstream = anthropic_to_openai_request(
        request,
        router=ModelRouter.fixed(candidate.model),
        profile=state.pool.spec.providers[candidate.provider].profile,
        served_by=candidate.provider,
    )
    Calibration().estimate(measure(upstream.payload))
    return (time.perf_counter() - started) * 1e6


async def _route_once(state: ProxyState, request: MessagesRequest, session: str) -> float:
    """plan_call + Call.open + Call.settle, minus the provider's answer (the transport call)."""
    headers = Headers({"x-claude-code-session-id": session})
    record = RequestRecord("bench", "POST", "/v1/messages")
    started = time.perf_counter()
    call = await plan_call(state, request, headers, record)
    opened = await call.open()
    timed = time.perf_counter() - started
    await opened.response.aclose()
    started = time.perf_counter()
    call.settle(9002)
    return (timed + time.perf_counter() - started) * 1e6


async def main_async() -> None:
    body = anthropic_request()
    request = MessagesRequest.model_validate(body)
    raw = orjson.dumps(body)
    with tempfile.TemporaryDirectory() as folder:
        apps = {"single": _app(SINGLE, Path(folder)), "three": _app(THREE, Path(folder))}
        route: dict[str, list[float]] = {name: [] for name in apps}
        translate: dict[str, list[float]] = {name: [] for name in apps}
        whole: dict[str, list[float]] = {name: [] for name in apps}
        clients = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
            )
            for name, app in apps.items()
        }
        for i in range(ROUNDS):
            for name, app in apps.items():
                session = f"s{i % 8}"  # eight sessions: affinity is used and moves
                route[name].append(await _route_once(_state(app), request, session))
                translate[name].append(_translate_once(_state(app), request))
                started = time.perf_counter()
                response = await clients[name].post(
                    "/v1/messages",
                    content=raw,
                    headers={
                        "content-type": "application/json",
                        "x-claude-code-session-id": session,
                    },
                )
                assert response.status_code == 200 and b"message_stop" in response.content
                whole[name].append((time.perf_counter() - started) * 1e6)
        for client in clients.values():
            await client.aclose()
    warm = slice(ROUNDS // 10, None)
    own: dict[str, float] = {}
    for name in apps:
        pool_part = [r - t for r, t in zip(route[name][warm], translate[name][warm], strict=True)]
        own[name] = statistics.median(pool_part)
        print(
            f"{name:>6}: pool's own work {own[name]:5.1f} µs a request "
            f"(plan, open, settle: {statistics.median(route[name][warm]):.0f} µs, less the "
            f"translation {statistics.median(translate[name][warm]):.0f} µs); "
            f"whole request {statistics.median(whole[name][warm]):.0f} µs"
        )
    more = statistics.median(whole["three"][warm]) - statistics.median(whole["single"][warm])
    print(
        f"three providers over one: {own['three'] - own['single']:+.1f} µs of routing and "
        f"admission a request; whole request {more:+.0f} µs"
    )


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
