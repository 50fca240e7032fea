"""Agent mode through the real Claude Code CLI: the proxy runs Read and LS itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.claude import RunClaude
from support.proxy import proxy_for
from support.upstream import Reply, text_stream, tool_stream

pytestmark = pytest.mark.e2e

ANSWER = "The notes say: remember the milk."


def tool_results(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def lister_then_reader(body: dict[str, Any], n: int) -> Reply:
    """A model that lists the directory, reads the notes it found, then answers."""
    results = tool_results(body)
    if not results:
        return tool_stream([("LS", {})], text="Let me look around.")
    if len(results) == 1:
        assert "notes.txt" in results[0], results
        return tool_stream([("Read", {"file_path": "notes.txt"})])
    return text_stream(ANSWER if "remember the milk" in results[1] else "OFF SCRIPT")


def test_local_tools_loop_through_claude_code(claude: RunClaude, project: Path) -> None:
    (project / "notes.txt").write_text("remember the milk\n")
    with proxy_for(lister_then_reader, local_tools="Read,LS", working_dir=project) as proxy:
        run = claude(proxy.url, "What do my notes say?")
        bodies = proxy.upstream.bodies
    run.assert_success()
    assert run.result["result"].endswith(ANSWER)
    assert len(bodies) == 3, "one model call per step, all inside one Claude Code turn"
    assert run.tool_uses == [], "Claude Code ran no tool: the proxy ran both"
    texts = [b["text"] for b in run.assistant_blocks if b["type"] == "text"]
    assert "🔄 Starting..." in texts and "⚙️ Read (1/1)..." in texts
    assert texts.index("🤔 Thinking (step 1)...") < texts.index("🔧 Executing LS...")
    offered = {t["function"]["name"] for t in bodies[0]["tools"]}
    assert {"Read", "LS", "Bash"} <= offered  # the client's tools plus the proxy's LS
    assert (project / "notes.txt").read_text() == "remember the milk\n"


def test_next_turn_remembers_local_calls_without_progress(claude: RunClaude, project: Path) -> None:
    (project / "notes.txt").write_text("remember the milk\n")

    def script(body: dict[str, Any], n: int) -> Reply:
        if "And the second line?" in str(body["messages"][-1]["content"]):
            return text_stream("There is no second line.")
        return lister_then_reader(body, n)

    with proxy_for(script, local_tools="Read,LS", working_dir=project) as proxy:
        claude(proxy.url, "What do my notes say?").assert_success()
        second = claude(proxy.url, "And the second line?", "--continue")
        sent = proxy.upstream.bodies[-1]["messages"]
    second.assert_success("There is no second line.")
    calls = [
        c["function"]["name"]
        for m in sent
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or []
    ]
    assert calls == ["LS", "Read"], "the model sees the calls it made in the first turn"
    assert any("remember the milk" in r for r in tool_results({"messages": sent}))
    spoken = " ".join(m["content"] or "" for m in sent if m["role"] == "assistant")
    assert ANSWER in spoken and "Let me look around." in spoken
    assert not any(mark in spoken for mark in ("🔄", "🤔", "🔧", "⚙️"))
