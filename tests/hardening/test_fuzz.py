"""Bad input, fuzzed: generated and mutated /v1/messages bodies (also the recorded shapes
Claude Code sends) never get a 500 and never crash the server; every 4xx is Anthropic-shaped.
Runs in process (Starlette's TestClient, an httpx MockTransport upstream): fast and hermetic."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kimi_proxy.config.settings import Settings
from kimi_proxy.server.app import create_app

GENERATED_CASES = 1000
MUTATED_CASES = 1000
FIXTURES = Path(__file__).parents[1] / "fixtures" / "claude_code"
RECORDED = [
    json.loads((FIXTURES / name).read_text())
    for name in (
        "first_request.json",
        "tool_search_followup.json",
        "write_followup.json",
        "degraded_after_400.json",
        "first_request_interactive.json",
    )
]
COUNTS = {"generated": 0, "mutated": 0}

COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}
STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def upstream(request: httpx.Request) -> httpx.Response:
    if json.loads(request.content).get("stream"):
        return httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=COMPLETION)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(
        Settings(api_key="fuzz-key", upstream_url="http://upstream.test/v1"),
        transport=httpx.MockTransport(upstream),
    )
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as test_client:
        yield test_client


def check(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/v1/messages?beta=true", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] in {
            "invalid_request_error",
            "request_too_large",
            "authentication_error",
            "not_found_error",
        }
        assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    else:
        assert response.status_code == 200


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
block_types = st.sampled_from(
    [
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "tool_reference",
        "server_tool_use",
        "bogus",
    ]
)
blocks = st.fixed_dictionaries(
    {"type": block_types},
    optional={
        "text": json_values,
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": json_values,
        "source": json_values,
        "data": json_values,
        "thinking": json_values,
        "is_error": json_values,
    },
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", ""])},
    optional={
        "content": st.one_of(st.text(max_size=30), st.lists(blocks, max_size=4), json_values)
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["claude-opus-5-5", "claude-haiku-5-5"]), json_values),
        "messages": st.one_of(st.lists(messages, max_size=5), json_values),
        "max_tokens": st.one_of(st.integers(-5, 200_000), json_values),
        "stream": json_values,
        "system": st.one_of(st.text(max_size=20), st.lists(blocks, max_size=3), json_values),
        "tools": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": json_values},
                    optional={
                        "input_schema": json_values,
                        "defer_loading": json_values,
                        "type": json_values,
                    },
                ),
                max_size=3,
            ),
            json_values,
        ),
        "tool_choice": json_values,
        "stop_sequences": json_values,
        "temperature": json_values,
        "thinking": json_values,
        "metadata": json_values,
    },
)


@settings(
    max_examples=GENERATED_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=bodies)
def test_generated_bodies(client: TestClient, body: dict[str, Any]) -> None:
    COUNTS["generated"] += 1
    check(client, json.dumps(body).encode())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_recordings(draw: st.DrawFn) -> bytes:
    body = copy.deepcopy(draw(st.sampled_from(RECORDED)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(body)[1:]))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "retype"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        else:
            parent[path[-1]] = draw(st.sampled_from(["", 0, [], {}, None, "bogus", True]))
        if not _paths(body)[1:]:
            break
    raw = json.dumps(body).encode()
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:  # sometimes cut the bytes
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@settings(
    max_examples=MUTATED_CASES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(body=mutated_recordings())
def test_mutated_claude_code_bodies(client: TestClient, body: bytes) -> None:
    COUNTS["mutated"] += 1
    check(client, body)


def test_recorded_bodies_are_served(client: TestClient) -> None:
    for body in RECORDED:
        response = client.post("/v1/messages?beta=true", json=body)
        assert response.status_code == 200
        assert "message_stop" in response.text


def test_every_fuzz_case_ran() -> None:
    """Runs after the fuzz tests (file order): the case counts reported in RELIABILITY.md."""
    if not COUNTS["generated"] or not COUNTS["mutated"]:
        pytest.skip("the fuzz tests were not selected")
    assert COUNTS == {"generated": GENERATED_CASES, "mutated": MUTATED_CASES}
