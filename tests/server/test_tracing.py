"""OpenTelemetry: with an OTLP endpoint set, a request continues the client's `traceparent`
and each provider attempt is a `chat MODEL` span with the GenAI attributes (a failover: two
spans, the first with `error.type`); no key and no prompt in any attribute. Received by an
OTLP/HTTP receiver here that decodes the protobuf the real exporter sends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.providers import pooled_proxy
from support.proxy import proxy_for
from support.sse_client import BASIC
from support.upstream import error, serve_in_thread, text_stream, tool_stream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECRET_PROMPT = "the launch codes are 0000"
TWO = """
[[provider]]
name = "alpha"
base_url = "{ALPHA_URL}"
keys = ["alpha-secret-key-1"]
[[provider]]
name = "beta"
base_url = "{BETA_URL}"
keys = ["beta-secret-key-2"]
[family.kimi]
candidates = ["alpha:kimi-a", "beta:kimi-k2.6"]
[route]
default = "kimi"
"""


class Receiver:
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()

    async def traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        with self.lock:
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    self.spans += list(scope.spans)
        return Response(status_code=200)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    got = Receiver()
    app = Starlette(routes=[Route("/v1/traces", got.traces, methods=["POST"])])
    with serve_in_thread(app) as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        yield got


def attributes(span: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        found[kv.key] = (
            [v.string_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return found


def test_a_failover_is_two_chat_spans_under_the_clients_trace(
    tmp_path: Path, receiver: Receiver
) -> None:
    providers = {
        "alpha": lambda b, n: error(503, "overloaded"),
        "beta": lambda b, n: text_stream("traced"),
    }
    with pooled_proxy(tmp_path, TWO, providers) as pool:
        answer = httpx.post(
            f"{pool.url}/v1/messages",
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": SECRET_PROMPT}],
            },
            headers={
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                "x-claude-code-session-id": "session-7",
            },
            timeout=10,
        )
    assert answer.status_code == 200
    deadline = time.monotonic() + 5  # the app's shutdown sent what was left
    while len(receiver.spans) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    spans = {s.name: s for s in receiver.spans}
    assert set(spans) == {"POST /v1/messages", "chat kimi-a", "chat kimi-k2.6"}
    assert all(s.trace_id.hex() == TRACE_ID for s in receiver.spans)
    server = spans["POST /v1/messages"]
    assert server.parent_span_id.hex() == PARENT_ID
    failed, served = attributes(spans["chat kimi-a"]), attributes(spans["chat kimi-k2.6"])
    assert spans["chat kimi-a"].parent_span_id == server.span_id
    assert failed["error.type"] == "overloaded_error"
    assert served["gen_ai.operation.name"] == "chat"
    assert served["gen_ai.provider.name"] == "beta"
    assert served["gen_ai.request.model"] == "kimi-k2.6"
    assert served["gen_ai.response.model"] == "kimi-k2.6"
    assert served["gen_ai.request.max_tokens"] == 100
    assert served["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert served["gen_ai.usage.output_tokens"] > 0
    assert served["gen_ai.conversation.id"] == "session-7"
    assert served["server.address"] == "127.0.0.1"
    assert served["kimi.key"] == "…ey-2" and served["kimi.route"] == "default"
    assert "error.type" not in served
    everything = repr([attributes(s) for s in receiver.spans])
    assert "secret-key" not in everything and SECRET_PROMPT not in everything


def test_without_an_endpoint_nothing_is_traced(tmp_path: Path) -> None:
    providers = {"alpha": lambda b, n: text_stream("x"), "beta": lambda b, n: text_stream("y")}
    with pooled_proxy(tmp_path, TWO, providers) as pool:
        assert pool.harness.state.tracing is None


@pytest.mark.parametrize("stream", [True, False])
def test_prompts_and_answers_are_in_spans_only_when_asked(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    monkeypatch.setenv("KIMI_OTEL_CAPTURE_CONTENT", "true")
    providers = {
        "alpha": lambda b, n: text_stream("the answer is 42"),
        "beta": lambda b, n: text_stream("-"),
    }
    with pooled_proxy(tmp_path, TWO, providers) as pool:
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "stream": stream,
            "messages": [{"role": "user", "content": SECRET_PROMPT}],
        }
        assert httpx.post(f"{pool.url}/v1/messages", json=body, timeout=10).status_code == 200
    deadline = time.monotonic() + 5
    while len(receiver.spans) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    [chat] = [attributes(s) for s in receiver.spans if s.name == "chat kimi-a"]
    assert SECRET_PROMPT in chat["gen_ai.input.messages"]
    assert chat["gen_ai.output.messages"] == "the answer is 42"
    assert "alpha-secret-key" not in repr(chat)  # keys never, even then


def test_agent_mode_tools_are_execute_tool_spans(tmp_path: Path, receiver: Receiver) -> None:
    (tmp_path / "notes.txt").write_text("hello")

    def reads_then_answers(body: dict[str, Any], n: int) -> Any:
        if not any(m["role"] == "tool" for m in body["messages"]):
            return tool_stream([("Read", {"file_path": "notes.txt"})])
        return text_stream("read it")

    with proxy_for(reads_then_answers, local_tools="Read", working_dir=tmp_path) as proxy:
        body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": BASIC["messages"]}
        assert httpx.post(f"{proxy.url}/v1/messages", json=body, timeout=10).status_code == 200
    deadline = time.monotonic() + 5
    while len(receiver.spans) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    names = sorted(s.name for s in receiver.spans)
    assert names == ["POST /v1/messages", "chat kimi-big", "chat kimi-big", "execute_tool Read"]
