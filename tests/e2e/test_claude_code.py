"""The real Claude Code CLI, headless, through the real proxy, to the scripted model.

Each test checks what Claude Code reports (its stream-json output), what it left on disk, and
what the provider saw (the OpenAI requests the proxy sent to the scripted upstream).
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import mcp_server
from support.claude import RunClaude
from support.model import (
    CODE_WORD,
    LONG_PIECES,
    LONG_TEXT,
    MARKUP_NOTE,
    MISSING_FILE,
    OFF_SCRIPT,
    SUBTASK,
    SUMMARY_MARK,
    Call,
    Conversation,
    ScriptedModel,
    always,
    answer,
    fail_first,
    outage,
    rate_limited,
    summary,
    tool_calls,
)
from support.providers import TWO_FAMILIES, pooled_proxy
from support.proxy import proxy_for
from support.search_backends import PAGES, search_backends
from support.upstream import (
    Drop,
    Reply,
    Stream,
    chunk,
    error,
    per_minute_token_limit,
    text_stream,
    usage,
)

from bench.pdfs import make_pdf
from kimi_proxy.config.search import SearchSettings
from kimi_proxy.providers import KIMI_K2
from kimi_proxy.translate.messages import IMAGE_NOT_SHOWN
from kimi_proxy.upstream.client import MIN_ANSWER_TOKENS

pytestmark = pytest.mark.e2e


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools", [])]


def tool_messages_after_last_call(body: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids of the last assistant message's tool calls, and the tool messages after it."""
    messages = body["messages"]
    index = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids = [c["id"] for c in messages[index].get("tool_calls") or []]
    return ids, [m for m in messages[index + 1 :] if m["role"] == "tool"]


def test_long_streamed_answer_arrives_intact(claude: RunClaude) -> None:
    assert len(LONG_TEXT) > 20_000
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-LONG: tell me a long story", "--include-partial-messages")
    run.assert_success(LONG_TEXT)
    texts = [b["text"] for b in run.assistant_blocks if b["type"] == "text"]
    assert texts == [LONG_TEXT]
    # It streamed: Claude Code saw the text arrive in many deltas, in one well-formed message.
    events = [line["event"] for line in run.of_type("stream_event")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds[:3] + kinds[-3:]
    assert kinds.count("content_block_start") == 1
    deltas = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert len(deltas) > LONG_PIECES // 2
    assert "".join(deltas) == LONG_TEXT
    [body] = proxy.upstream.bodies
    assert body["stream"] is True
    assert body["model"] == "kimi-big"
    assert proxy.upstream.requests[0].finished


@pytest.mark.parametrize("provider", [None, "groq"])
def test_write_edit_bash_and_a_failed_read(
    claude: RunClaude, project: Path, provider: str | None
) -> None:
    overrides = {"provider": provider} if provider else {}
    with proxy_for(ScriptedModel(), **overrides) as proxy:
        run = claude(proxy.url, "E2E-FILES: make notes, change them, run a command")
    run.assert_success("Done. Bash printed e2e-42; reading the missing file failed.")

    # What Claude Code did: four tools, in order; the file is there, edited.
    assert [u["name"] for u in run.tool_uses] == ["Write", "Edit", "Bash", "Read"]
    assert (project / "notes.txt").read_text() == "alpha\ngamma\n"
    results = {r["tool_use_id"]: r for r in run.tool_results}
    read_use = run.tool_uses[3]
    assert read_use["input"]["file_path"] == f"{project}/{MISSING_FILE}"
    assert results[read_use["id"]].get("is_error") is True
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", u["id"]) for u in run.tool_uses)

    # What the provider saw: one request per step, each result after the call that made it.
    bodies = proxy.upstream.bodies
    assert len(bodies) == 5, [tool_names(b) for b in bodies]
    for step, body in enumerate(bodies[1:], start=1):
        ids, tools = tool_messages_after_last_call(body)
        assert [m["tool_call_id"] for m in tools] == ids and len(ids) == 1, step
        if provider == "groq":
            assert all(re.fullmatch(r"functions\.\w+:\d+", i) for i in ids), ids
    _, [bash_result] = tool_messages_after_last_call(bodies[3])
    assert "e2e-42" in bash_result["content"]
    _, [read_result] = tool_messages_after_last_call(bodies[4])
    assert read_result["content"].startswith("Error:"), read_result
    assert all(b["model"] == "kimi-big" for b in bodies)


def test_a_call_left_as_kimi_markup_in_the_text_still_runs(
    claude: RunClaude, project: Path
) -> None:
    """A provider without Kimi's tool parser passes the model's call on as special tokens in
    the text. Claude Code runs the call, never shows the markup, and the model gets the result
    (before: the markup was the answer and the session ended with nothing written)."""
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-MARKUP: write the note")
    result = run.assert_success()
    assert result["result"].startswith("Write said: File created successfully"), result
    assert (project / "leaked.txt").read_text() == MARKUP_NOTE + "\n"
    assert [u["name"] for u in run.tool_uses] == ["Write"]
    shown = [b["text"] for b in run.assistant_blocks if b["type"] == "text"]
    assert shown[0] == "Writing it now." and not any("<|" in t for t in shown), shown
    _, [result] = tool_messages_after_last_call(proxy.upstream.bodies[-1])
    assert "leaked.txt" in result["content"]


def test_two_tool_calls_in_one_turn(claude: RunClaude, project: Path) -> None:
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-PARALLEL: do two things")
    run.assert_success("Both done: second-2.")
    assert (project / "first.txt").read_text() == "first\n"

    # Claude Code got both calls in one message, after the text that came first.
    uses = run.tool_uses
    assert [u["name"] for u in uses] == ["Write", "Bash"]
    messages = {line["message"]["id"] for line in run.of_type("assistant")[:3]}
    assert len(messages) == 1, "the text and both calls belong to one assistant message"
    assert run.assistant_blocks[0] == {"type": "text", "text": "Doing two things at once."}
    assert {r["tool_use_id"] for r in run.tool_results} == {u["id"] for u in uses}

    # The provider got both results back, in call order, right after the calls.
    bodies = proxy.upstream.bodies
    assert len(bodies) == 2
    messages_sent = bodies[1]["messages"]
    index = max(i for i, m in enumerate(messages_sent) if m["role"] == "assistant")
    call_ids = [c["id"] for c in messages_sent[index]["tool_calls"]]
    assert len(call_ids) == 2 and len(set(call_ids)) == 2
    following = messages_sent[index + 1 : index + 3]
    assert [m["role"] for m in following] == ["tool", "tool"]
    assert [m["tool_call_id"] for m in following] == call_ids
    assert "first.txt" in following[0]["content"]
    assert "second-2" in following[1]["content"]


def test_tool_search_loads_a_deferred_tool(claude: RunClaude, project: Path) -> None:
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-NOTEBOOK: fix my notebook")
    result = run.assert_success()
    assert result["result"].startswith("Notebook edited"), run.describe()
    assert OFF_SCRIPT not in result["result"]
    assert [u["name"] for u in run.tool_uses] == ["Write", "Read", "ToolSearch", "NotebookEdit"]
    assert not any(r.get("is_error") for r in run.tool_results), run.tool_results
    notebook = json.loads((project / "nb.ipynb").read_text())
    assert "".join(notebook["cells"][0]["source"]) == "print('after')"

    bodies = proxy.upstream.bodies
    assert len(bodies) == 5
    # Requests 0-2 come before the ToolSearch result; 3 and 4 after it.
    assert ["NotebookEdit" in tool_names(b) for b in bodies] == [False, False, False, True, True]
    assert not any("DeferredToolPlaceholder" in tool_names(b) for b in bodies)
    ids, [search_result] = tool_messages_after_last_call(bodies[3])
    assert search_result["tool_call_id"] == ids[0]
    assert "NotebookEdit" in search_result["content"]
    assert "notebook_path" in search_result["content"], "the reference shows the definition"
    [notebook_edit] = [t for t in bodies[3]["tools"] if t["function"]["name"] == "NotebookEdit"]
    assert "notebook_path" in notebook_edit["function"]["parameters"]["properties"]


def test_web_search_returns_the_backends_links_to_the_model(claude: RunClaude) -> None:
    """Claude Code's WebSearch sends a side call offering only Anthropic's `web_search` server
    tool. The proxy runs the search on the configured backend, the model summarises, and the
    tool result the main model reads holds the backend's links."""
    with search_backends() as backends:
        search = SearchSettings("searxng", backends.url("searxng"), "", "")
        with proxy_for(ScriptedModel(), search=search) as proxy:
            run = claude(
                proxy.url, "E2E-SEARCH: look it up", "--allowedTools", "ToolSearch WebSearch"
            )
    result = run.assert_success()["result"]
    assert 'Web search results for query: "kimi-proxy release notes"' in result, run.describe()
    assert "Links:" in result
    for url, title, _ in PAGES:
        assert url in result and title in result, run.describe()
    assert "Search summary: 3 pages" in result  # the side call's model wrote the summary
    assert backends.asked[0].query == "kimi-proxy release notes"


def test_web_search_without_a_backend_tells_the_user_what_to_set(claude: RunClaude) -> None:
    """No backend configured: no API error, and no answer made up without a search; the tool
    result says what to set."""
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-SEARCH: look it up", "--allowedTools", "ToolSearch WebSearch")
    result = run.assert_success()["result"]
    assert "Web search is not set up" in result and "SEARXNG_URL" in result, run.describe()
    assert all(body.get("tools") for body in proxy.upstream.bodies), "a search reached the model"


def test_an_mcp_tool_with_a_name_too_long_for_the_provider(claude: RunClaude) -> None:
    """Claude Code names an MCP server's tool `mcp__<server>__<tool>`, here 95 characters; the
    provider takes 64. The model gets a shortened name, and its call reaches the MCP server
    under the real one."""
    server = {"command": sys.executable, "args": [str(Path(mcp_server.__file__))]}
    config = json.dumps({"mcpServers": {"words_server_with_a_long_name": server}})
    allowed = "mcp__words_server_with_a_long_name ToolSearch"
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(
            proxy.url, "E2E-MCP: reverse kimi", "--mcp-config", config, "--allowedTools", allowed
        )
    run.assert_success("The MCP tool said IMIK.")
    [called] = [u["name"] for u in run.tool_uses if u["name"] != "ToolSearch"]
    assert called == f"mcp__words_server_with_a_long_name__{mcp_server.TOOL}"
    offered = [t["function"]["name"] for t in proxy.upstream.bodies[-1]["tools"]]
    assert all(len(name) <= 64 for name in offered)


def test_model_fast_reaches_family_fast_and_the_picker_gets_the_families(
    claude: RunClaude, tmp_path: Path
) -> None:
    """`claude --model fast` (as `/model fast`) reaches the family `fast`; with gateway model
    discovery on (./kimi.sh turns it on), Claude Code asks `GET /v1/models?limit=1000` and gets
    each family as `claude-<family>`, the ids its picker keeps."""
    providers = {
        "moonshot": lambda b, n: text_stream("from kimi"),
        "fastco": lambda b, n: text_stream("from fast"),
    }
    with pooled_proxy(tmp_path, TWO_FAMILIES, providers) as pool:
        run = claude(
            pool.url, "say hi", "--model", "fast", CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY="1"
        )
        metrics = httpx.get(f"{pool.url}/metrics").text
        listed = httpx.get(f"{pool.url}/v1/models", params={"limit": 1000}).json()["data"]
    run.assert_success("from fast")
    assert [b["model"] for b in pool.providers["fastco"].bodies] == ["fast-model"]
    assert 'kimi_requests_total{path="/v1/models",status="200"}' in metrics, run.describe()
    picker = {m["id"]: m["display_name"] for m in listed if "claude" in m["id"]}
    assert picker["claude-fast"] == "Fast Model via fastco"
    assert picker["claude-kimi"] == "Kimi K2.6 via moonshot"


def test_model_haiku_reaches_the_small_model(claude: RunClaude) -> None:
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-HELLO: hi", "--model", "haiku")
    run.assert_success("Hello from the scripted model.")
    assert "haiku" in run.init["model"]
    models = [b["model"] for b in proxy.upstream.bodies]
    assert models and all(m == "kimi-small" for m in models), models


@pytest.mark.parametrize("proxy_retries", [0, 2], ids=["client-retries", "proxy-retries"])
def test_rate_limited_once_then_the_session_completes(
    claude: RunClaude, proxy_retries: int
) -> None:
    model = ScriptedModel(failures=fail_first(1, lambda: rate_limited("1")))
    with proxy_for(model, max_retries=proxy_retries) as proxy:
        run = claude(proxy.url, "E2E-HELLO: hi", CLAUDE_CODE_MAX_RETRIES="2")
    run.assert_success("Hello from the scripted model.")
    assert len(proxy.upstream.requests) == 2
    if proxy_retries:
        assert run.retries == [], "the proxy retried; Claude Code never saw the 429"
    else:
        [retry] = run.retries
        assert retry["error_status"] == 429, retry
    assert run.seconds < 30


def test_provider_down_for_good_ends_with_the_proxys_message(claude: RunClaude) -> None:
    with proxy_for(ScriptedModel(failures=always(outage)), max_retries=1) as proxy:
        run = claude(proxy.url, "E2E-HELLO: hi", CLAUDE_CODE_MAX_RETRIES="1", timeout=90)
    result = run.result
    assert run.returncode != 0, run.describe()
    assert result["is_error"] is True
    assert result["api_error_status"] == 500, run.describe()
    assert "The provider failed with HTTP 500: scripted provider outage" in result["result"]
    # Claude Code tried twice (CLAUDE_CODE_MAX_RETRIES=1); the proxy twice per try (max_retries=1).
    assert len(run.retries) == 1
    assert len(proxy.upstream.requests) == 4
    assert run.seconds < 30, run.describe()


def test_a_key_whose_tokens_a_minute_cannot_hold_a_request_says_so(claude: RunClaude) -> None:
    """Groq's free plan allows 10,000 tokens a minute; Claude Code's first request counts more.
    Claude Code shows the proxy's explanation (as a 413 it would blame images instead)."""
    with proxy_for(per_minute_token_limit(10_000, ScriptedModel())) as proxy:
        run = claude(proxy.url, "E2E-HELLO: hi")
    result = run.result
    assert run.returncode != 0 and result["is_error"] is True, run.describe()
    assert result["api_error_status"] == 402, run.describe()
    assert "allows this key 10,000 tokens a minute" in result["result"], run.describe()
    assert "console.groq.com/settings/billing" in result["result"]
    assert run.retries == [] and len(proxy.upstream.requests) == 1


def test_a_session_fits_the_tokens_a_minute_by_a_smaller_answer_budget(claude: RunClaude) -> None:
    """A limit the prompt fits but prompt + Claude Code's answer budget does not: each request
    is sent once more with the budget that fits, and the session answers."""
    with proxy_for(per_minute_token_limit(20_000, ScriptedModel())) as proxy:
        run = claude(proxy.url, "E2E-HELLO: hi")
    run.assert_success("Hello from the scripted model.")
    asked = [body["max_tokens"] for body in proxy.upstream.bodies]
    assert len(asked) == 2 and MIN_ANSWER_TOKENS <= asked[1] < asked[0], asked


def test_a_model_the_provider_does_not_serve_is_named_with_the_setting_to_fix(
    claude: RunClaude,
) -> None:
    """Claude Code answers any 404 with "There's an issue with the selected model": the proxy
    answers a 400 instead, whose message Claude Code shows (after retrying with fewer betas)."""
    unknown = "The model `kimi-big` does not exist or you do not have access to it."
    with proxy_for(ScriptedModel(failures=always(lambda: error(404, unknown)))) as proxy:
        run = claude(proxy.url, "E2E-HELLO: hi")
    result = run.result
    assert run.returncode != 0 and result["is_error"] is True, run.describe()
    assert "does not know model 'kimi-big'" in result["result"], run.describe()
    assert "KIMI_MODEL" in result["result"] and "selected model" not in result["result"]
    assert run.seconds < 30


def test_the_agent_tool_runs_a_subagent_through_the_proxy(claude: RunClaude) -> None:
    """Claude Code's Agent tool: the subagent's own conversation goes through the proxy, and
    its answer comes back to the main one as the Agent call's result."""
    with proxy_for(ScriptedModel()) as proxy:
        run = claude(proxy.url, "E2E-AGENT: ask a helper for the code word")
    run.assert_success(f"The agent found {CODE_WORD}.")
    assert [u["name"] for u in run.tool_uses] == ["Agent"], run.describe()
    tasks = [Conversation(body).task for body in proxy.upstream.bodies]
    assert [SUBTASK in t for t in tasks] == [False, True, False], tasks


OVERFLOW = (
    "Please reduce the length of the messages or completion. This model's maximum context "
    "length is 262144 tokens. However, your messages resulted in 300000 tokens."
)


class OverflowingModel:
    """Two Bash steps, then a provider context overflow; answers Claude Code's request for a
    summary, and finishes once the conversation carries that summary. `log` is what it did."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def __call__(self, body: dict[str, Any], call: int) -> Reply:
        conversation = Conversation(body)
        if conversation.asks_for_summary:
            self.log.append("summary")
            return summary()
        if SUMMARY_MARK in json.dumps(conversation.messages):
            self.log.append("done")
            return answer("Done after compaction.")
        if len(conversation.calls) < 2:
            self.log.append("step")
            return tool_calls(("Bash", {"command": "echo step", "description": "Print a word"}))
        self.log.append("overflow")
        return error(400, OVERFLOW)


def test_a_context_overflow_makes_claude_code_compact_and_go_on(claude: RunClaude) -> None:
    """A provider's context-length error reaches Claude Code as one it acts on (a 400 saying
    "prompt is too long"): it asks for a summary of the conversation and carries on from it."""
    model = OverflowingModel()
    with proxy_for(model) as proxy:
        run = claude(proxy.url, "E2E-COMPACT: run two steps", "--allowedTools", "Bash")
    run.assert_success("Done after compaction.")
    assert model.log[:3] == ["step", "step", "overflow"] and model.log[-1] == "done", model.log
    assert model.log.count("overflow") == 1 and "summary" in model.log, model.log
    assert len(Conversation(proxy.upstream.bodies[-1]).calls) < 2, "both steps still sent"


def cut_short(stream: Stream, keep: int, drop: bool) -> Stream:
    """The first `keep` chunks of a stream, then a dropped connection or a bare end."""
    return Stream([*stream.items[:keep], *([Drop()] if drop else [])], done=False)


@pytest.mark.parametrize("drop", [True, False], ids=["dropped", "ended-early"])
@pytest.mark.parametrize("cut", ["text", "tool-call"])
def test_a_stream_cut_short_is_retried_never_taken_as_the_answer(
    claude: RunClaude, project: Path, cut: str, drop: bool
) -> None:
    """The provider's stream breaks off mid-text or mid tool-call arguments: the proxy ends it
    with an error event, so Claude Code retries the request instead of keeping the fragment
    (or running a tool with half its arguments), and the session ends with the whole answer."""
    partial = (
        text_stream("Partial answer that must not be kept", pieces=4)
        if cut == "text"
        else tool_calls(("Write", {"file_path": f"{project}/half.txt", "content": "x" * 200}))
    )

    def script(body: dict[str, Any], call: int) -> Reply:
        return cut_short(partial, 3, drop) if call == 0 else answer("The whole answer.")

    with proxy_for(script) as proxy:
        run = claude(proxy.url, "E2E-CUT: answer")
    run.assert_success("The whole answer.")
    assert len(proxy.upstream.requests) == 2
    assert run.tool_uses == [] and not (project / "half.txt").exists()
    assert "Partial" not in json.dumps(run.assistant_blocks)


def tiny_png() -> bytes:
    def part(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = (2).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"\x00\xff\x00\x00\xff\x00\x00" * 2)
    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", header) + part(b"IDAT", pixels) + part(b"IEND", b"")


def test_reading_a_pdf_puts_its_text_in_front_of_a_text_only_model(
    claude: RunClaude, project: Path
) -> None:
    """Claude Code's Read returns a PDF as a document block and an image as an image block.
    Kimi K2 reads text only: the PDF reaches it as each page's text, under its number (the
    pages' images are left out without a note each), and the image as a note saying it cannot
    be shown. The session goes on."""
    pages = ["The kimi-proxy spec, page one.", "Second page: the code word is PELICAN-7."]
    (project / "spec.pdf").write_bytes(make_pdf(pages))
    (project / "dot.png").write_bytes(tiny_png())
    with proxy_for(ScriptedModel(), model=KIMI_K2) as proxy:
        run = claude(proxy.url, "E2E-MEDIA: read the pdf and the picture")
    result = run.result
    assert result["is_error"] is False and result["result"].startswith("Read both"), run.describe()
    assert "--- Page 2 --- Second page: the code word is PELICAN-7." in result["result"]
    assert "pages=2>" in result["result"]
    assert IMAGE_NOT_SHOWN in result["result"]
    assert result["result"].count(IMAGE_NOT_SHOWN) == 1  # the picture's; none for the pages
    assert [u["name"] for u in run.tool_uses] == ["Read", "Read"]
    sent = json.dumps(proxy.upstream.bodies)
    assert "image_url" not in sent and "JVBER" not in sent  # no image part, no PDF bytes


def write_cut_off(target: Path) -> list[dict[str, Any]]:
    """The chunks of a Write to `target` whose arguments stop inside the content."""
    cut = json.dumps({"file_path": str(target), "content": "line\n" * 50})[:-30]
    write = {"index": 0, "id": "functions.Write:0", "type": "function"}
    write["function"] = {"name": "Write", "arguments": cut}
    return [chunk({"role": "assistant", "content": ""}), chunk({"tool_calls": [write]})]


def told(last: list[Call]) -> Stream:
    """The model's answer after its call: what the tool result said."""
    return answer(f"Told: {(last[0].result or '')[:40]}")


def test_a_write_the_answer_budget_cut_off_is_not_run_and_the_model_is_told(
    claude: RunClaude, project: Path
) -> None:
    """The model's Write runs out of answer budget mid-content (`finish_reason: length`). As on
    Anthropic's API the call stands with `max_tokens`: Claude Code refuses to run it and tells
    the model, which can write in parts. Never half a file on disk, never the same request
    resent until the retries run out."""
    target = project / "big.txt"

    def script(body: dict[str, Any], call: int) -> Reply:
        last = Conversation(body).last_turn
        if last:
            return told(last)
        ran_out = chunk({}, finish="length", usage=usage(completion=16384))
        return Stream([*write_cut_off(target), ran_out])

    with proxy_for(script) as proxy:
        run = claude(proxy.url, "E2E-CUTOFF: write a big file")
    assert run.result["is_error"] is False and run.result["result"].startswith("Told: Error:"), (
        run.describe()
    )
    assert not target.exists()
    assert len(proxy.upstream.requests) == 2, "the cut-off request was resent"


@pytest.mark.parametrize("drop", [True, False], ids=["dropped", "ended-early"])
def test_a_write_cut_short_on_every_attempt_never_leaves_half_a_file(
    claude: RunClaude, project: Path, drop: bool
) -> None:
    """Claude Code answers a broken stream by asking again without streaming, and runs the
    tool calls of that answer. When that answer's Write arguments stop inside the content too,
    they are passed on unrepaired: Claude Code refuses the call instead of writing half a file
    (repairing the JSON would close the string where it was cut)."""
    target = project / "big.txt"

    def script(body: dict[str, Any], call: int) -> Reply:
        last = Conversation(body).last_turn
        if last:
            return told(last)
        head = write_cut_off(target)
        return cut_short(Stream(head), len(head), drop)

    with proxy_for(script) as proxy:
        run = claude(proxy.url, "E2E-CUTOFF: write a big file")
    assert run.result["result"].startswith("Told: Error:"), run.describe()
    assert not target.exists()
    assert [r.body["stream"] for r in proxy.upstream.requests] == [True, False, True]
