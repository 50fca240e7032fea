"""Raw HTTP helpers for event-level checks (no SDK in between)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from kimi_proxy.protocol.sse import SSEDecoder


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of a complete SSE body."""
    return [(e.event, json.loads(e.data)) for e in SSEDecoder().feed(raw)]


def post_stream(
    url: str, body: dict[str, Any], timeout: float = 20.0
) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    with httpx.Client(timeout=timeout) as client:
        response = client.post(
            f"{url}/v1/messages?beta=true",
            json={**body, "stream": True},
            headers={"x-api-key": "anything"},
        )
    return response, parse_sse(response.content)


BASIC = {
    "model": "claude-opus-5-5",
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": "hi"}],
}
