"""Agent mode through the real server: the loop, progress lines, history, limits, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.proxy import Harness, proxy_for
from support.sse_client import BASIC, parse_sse
from support.streams import check_grammar
from support.upstream import Reply, error, text_stream, tool_stream

PROGRESS = ("🔄", "🤔", "🔧", "⚙️", "⚠️")


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def read_grep_answer(body: dict[str, Any], n: int) -> Reply:
    """A model that reads a file, then greps, then answers."""
    done = len(tool_messages(body))
    if done == 0:
        return tool_stream([("Read", {"file_path": "notes.md"})], text="Reading first.")
    if done == 1:
        return tool_stream([("Grep", {"pattern": "TODO", "output_mode": "content"})])
    return text_stream("There is one TODO: ship it.")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "notes.md").write_text("# Notes\nTODO: ship it\n")
    return tmp_path


@pytest.fixture
def agent(workdir: Path) -> Iterator[Harness]:
    with proxy_for(read_grep_answer, local_tools="Read,Grep,LS", working_dir=workdir) as h:
        yield h


def stream(harness: Harness, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{harness.url}/v1/messages", json={**body, "stream": True})
    assert response.status_code == 200
    return [data for _, data in parse_sse(response.content)]


def texts(events: list[dict[str, Any]]) -> list[str]:
    """The text of each text block, in order."""
    blocks: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_start" and event["content_block"]["type"] == "text":
            blocks[event["index"]] = ""
        elif event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            blocks[event["index"]] += event["delta"]["text"]
    return [blocks[i] for i in sorted(blocks)]


def test_multi_step_loop_with_exact_progress(agent: Harness) -> None:
    events = stream(agent, BASIC)
    check_grammar(events)
    assert texts(events) == [
        "🔄 Starting...",
        "🤔 Thinking (step 1)...",
        "Reading first.",
        "🔧 Executing Read...",
        "⚙️ Read (1/1)...",
        "🤔 Thinking (step 2)...",
        "🔧 Executing Grep...",
        "⚙️ Grep (1/1)...",
        "🤔 Thinking (step 3)...",
        "There is one TODO: ship it.",
    ]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert not any(
        e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"
        for e in events
    )
    bodies = agent.upstream.bodies
    assert len(bodies) == 3
    assert "TODO: ship it" in tool_messages(bodies[1])[0]["content"]
    assert "notes.md:2:TODO: ship it" in tool_messages(bodies[2])[1]["content"]
    assert {t["function"]["name"] for t in bodies[0]["tools"]} == {"Read", "Grep", "LS"}


def test_non_streaming_runs_the_same_loop(agent: Harness) -> None:
    message = agent.client().messages.create(**BASIC)
    assert message.content[-1].text == "There is one TODO: ship it."  # type: ignore[union-attr]
    assert [b.type for b in message.content].count("redacted_thinking") == 2
    assert len(agent.upstream.bodies) == 3


def test_concurrent_reads_and_escape_refused(workdir: Path) -> None:
    def script(body: dict[str, Any], n: int) -> Reply:
        if not tool_messages(body):
            return tool_stream(
                [("Read", {"file_path": "notes.md"}), ("Read", {"file_path": "../outside.txt"})]
            )
        return text_stream("done")

    (workdir.parent / "outside.txt").write_text("secret")
    with proxy_for(script, local_tools="Read", working_dir=workdir) as harness:
        events = stream(harness, BASIC)
        results = tool_messages(harness.upstream.bodies[1])
    assert texts(events)[2:4] == ["🔧 Executing Read, Read...", "⚙️ Read (1/2)..."]
    assert texts(events)[4] == "⚙️ Read (2/2)..."
    assert "TODO" in results[0]["content"]
    assert results[1]["content"].startswith("Error: Refused")
    assert "secret" not in results[1]["content"]


def test_mixed_turn_and_history_on_the_next_turn(workdir: Path) -> None:
    tools = [
        {
            "name": "Bash",
            "description": "run",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
        }
    ]

    def script(body: dict[str, Any], n: int) -> Reply:
        if n == 0:
            return tool_stream(
                [("Read", {"file_path": "notes.md"}), ("Bash", {"command": "make ship"})],
                text="Both at once.",
            )
        return text_stream("Shipped.")

    with proxy_for(script, local_tools="Read", working_dir=workdir) as harness:
        client = harness.client()
        first = client.messages.create(**{**BASIC, "tools": tools})
        kinds = [b.type for b in first.content]
        assert first.stop_reason == "tool_use"
        assert kinds.count("tool_use") == 1 and "redacted_thinking" in kinds
        bash = next(b for b in first.content if b.type == "tool_use")
        assert bash.name == "Bash"
        history = [
            *BASIC["messages"],
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": bash.id, "content": "shipped ok"}
                ],
            },
        ]
        second = client.messages.create(**{**BASIC, "tools": tools, "messages": history})
        sent = harness.upstream.bodies[1]["messages"]
    assert second.content[-1].text == "Shipped."  # type: ignore[union-attr]
    roles = [m["role"] for m in sent]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]
    assert sent[1]["content"] == "Both at once."
    assert sent[1]["tool_calls"][0]["function"]["name"] == "Read"
    assert "TODO: ship it" in sent[2]["content"]
    assert sent[3]["tool_calls"][0]["function"] == {
        "name": "Bash",
        "arguments": '{"command":"make ship"}',
    }
    assert sent[4]["content"] == "shipped ok"
    assert not any(
        isinstance(m.get("content"), str) and m["content"].startswith(PROGRESS) for m in sent
    )
    assert "Starting" not in json.dumps(sent)


def test_iteration_limit(workdir: Path) -> None:
    with proxy_for(
        lambda b, n: tool_stream([("LS", {})]),
        local_tools="LS",
        working_dir=workdir,
        max_tool_iterations=3,
    ) as harness:
        events = stream(harness, BASIC)
        assert len(harness.upstream.bodies) == 3
    assert texts(events)[-1] == (
        "⚠️ Stopped after 3 model calls (MAX_TOOL_ITERATIONS=3); ask me to continue."
    )
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


def test_provider_failure_mid_loop(workdir: Path) -> None:
    def script(body: dict[str, Any], n: int) -> Reply:
        return tool_stream([("LS", {})]) if n == 0 else error(500, "provider down")

    with proxy_for(script, local_tools="LS", working_dir=workdir, max_retries=0) as harness:
        events = stream(harness, BASIC)
        assert events[-1]["type"] == "error"
        assert "provider down" in events[-1]["error"]["message"]
        assert texts(events)[-1] == "🤔 Thinking (step 2)..."
        with httpx.Client() as client:
            plain = client.post(f"{harness.url}/v1/messages", json=BASIC)
        assert plain.status_code == 500
        assert plain.json()["error"]["type"] == "api_error"


def test_client_without_tools_gets_local_definitions(agent: Harness) -> None:
    stream(agent, BASIC)
    offered = agent.upstream.bodies[0]["tools"]
    read = next(t for t in offered if t["function"]["name"] == "Read")
    assert read["function"]["parameters"]["required"] == ["file_path"]


def test_a_later_step_cut_short_is_an_error_not_an_answer(workdir: Path) -> None:
    """Each upstream call must finish on its own: step 1's finish does not vouch for step 2."""
    from support.upstream import Stream, chunk

    def script(body: dict[str, Any], n: int) -> Reply:
        if n == 0:
            return tool_stream([("LS", {})])
        return Stream([chunk({"content": "half an ans"})], done=False)

    with proxy_for(script, local_tools="LS", working_dir=workdir) as harness:
        events = stream(harness, BASIC)
    assert events[-1]["type"] == "error"
    assert "before finishing" in events[-1]["error"]["message"]
    assert not any(e["type"] == "message_stop" for e in events)


def test_a_local_call_left_as_kimi_markup_runs_in_the_proxy(workdir: Path) -> None:
    """Agent mode reads the same markup: a Read sent as Kimi's special tokens in the text is
    run by the proxy like any local call, and its result reaches the model."""

    def model(body: dict[str, Any], n: int) -> Reply:
        if not tool_messages(body):
            markup = (
                "<|tool_calls_section_begin|><|tool_call_begin|>functions.Read:0"
                '<|tool_call_argument_begin|>{"file_path": "notes.md"}<|tool_call_end|>'
                "<|tool_calls_section_end|>"
            )
            return text_stream(markup, pieces=9)
        return text_stream(f"Read it: {tool_messages(body)[0]['content'][-20:]}")

    with proxy_for(model, local_tools="Read", working_dir=workdir) as harness:
        events = stream(harness, BASIC)
    check_grammar(events)
    assert texts(events)[-1].startswith("Read it:") and "TODO: ship it" in texts(events)[-1]
    assert not any("<|" in t for t in texts(events))


def test_arguments_of_the_wrong_type_are_an_error_result_not_a_500(workdir: Path) -> None:
    """A model that sends `"offset": "ten"` reads the error and answers; the turn goes on."""

    def model(body: dict[str, Any], n: int) -> Reply:
        results = tool_messages(body)
        if not results:
            return tool_stream([("Read", {"file_path": "notes.md", "offset": "ten"})])
        assert "ValueError" in results[0]["content"]
        return text_stream("I will pass a number next time.")

    with proxy_for(model, local_tools="Read", working_dir=workdir) as harness:
        events = stream(harness, BASIC)
    assert "I will pass a number next time." in "".join(texts(events))
    assert events[-1]["type"] == "message_stop"


def test_an_agent_turn_is_billed_every_upstream_call_it_made(agent: Harness) -> None:
    """M5: a turn of three upstream calls (Read, Grep, the answer) was metered as its last
    call's input only, and its calls were never settled."""
    events = stream(agent, BASIC)
    assert events[-1]["type"] == "message_stop"
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"]["input_tokens"] == 10  # the context's size: the last call's input
    deadline = time.monotonic() + 5
    while not agent.state.feed.recent:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    record = agent.state.feed.recent[-1]
    assert record.input_tokens == 30  # 10 + 10 + 10: each call's prompt, billed
    assert record.output_tokens == delta["usage"]["output_tokens"]
    for key in agent.pool.all_keys():
        assert all(b.reserved == 0 for b in key.ledger.windows.values())
