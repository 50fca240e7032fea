"""A scripted model for end-to-end tests: it decides from the conversation what to do next.

The scripted upstream (support/upstream.py) calls a script with each OpenAI Chat Completions
request the proxy sends. `ScriptedModel` is such a script that behaves like a (very predictable)
model: it finds the user's task in the conversation, picks the behaviour whose keyword the task
contains, and that behaviour looks at what happened so far (the tool calls it made, the tool
results that came back) to choose the next reply: another tool call or a final answer.

Because every step is derived from the request, a proxy that loses or garbles part of the
conversation makes the model go off script, and the final answer says so ("OFF SCRIPT: ...").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from support.upstream import (
    Pause,
    Reply,
    Stream,
    chunk,
    error,
    text_stream,
    tool_stream,
    usage,
)

OFF_SCRIPT = "OFF SCRIPT"


def content_text(content: Any) -> str:
    """The text of an OpenAI message's content (a string, or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


@dataclass
class Call:
    id: str
    name: str
    args: dict[str, Any]
    result: str | None  # the tool message's content, None if no result came back


class Conversation:
    """Read-only views of one OpenAI request body."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.messages: list[dict[str, Any]] = body.get("messages", [])

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools", [])]

    @property
    def task(self) -> str:
        """All user text (Claude Code's first user message carries reminders, then the prompt)."""
        return "\n".join(
            content_text(m.get("content")) for m in self.messages if m.get("role") == "user"
        )

    @property
    def asks_for_summary(self) -> bool:
        """Whether this is Claude Code's compaction request (it asks for a `<summary>` block)."""
        last_user = next((m for m in reversed(self.messages) if m.get("role") == "user"), {})
        return "<summary> block" in content_text(last_user.get("content"))

    @property
    def is_safety_check(self) -> bool:
        """Whether this is auto mode's check of an action (no tools; the last user message
        asks for a `<severity>` verdict)."""
        last = self.messages[-1] if self.messages else {}
        return not self.tool_names and "<severity>" in content_text(last.get("content"))

    @property
    def cwd(self) -> str | None:
        """The working directory Claude Code announces in its environment section."""
        for message in self.messages:
            found = re.search(
                r"Primary working directory: (\S+)", content_text(message.get("content"))
            )
            if found:
                return found.group(1)
        return None

    @property
    def calls(self) -> list[Call]:
        """Every tool call in the conversation, in order, with its result."""
        results = {
            m.get("tool_call_id"): content_text(m.get("content"))
            for m in self.messages
            if m.get("role") == "tool"
        }
        calls = []
        for message in self.messages:
            if message.get("role") != "assistant":
                continue
            for call in message.get("tool_calls") or []:
                try:
                    args = json.loads(call["function"]["arguments"] or "{}")
                except json.JSONDecodeError:
                    args = {"unparsable": call["function"]["arguments"]}
                calls.append(
                    Call(call["id"], call["function"]["name"], args, results.get(call["id"]))
                )
        return calls

    @property
    def last_turn(self) -> list[Call]:
        """The tool calls of the latest assistant message (empty if it made none)."""
        calls = self.calls
        for message in reversed(self.messages):
            if message.get("role") == "assistant":
                ids = {c["id"] for c in message.get("tool_calls") or []}
                return [c for c in calls if c.id in ids]
        return []


# -- reply builders ------------------------------------------------------------------------

_serial = 0


def tool_calls(*calls: tuple[str, dict[str, Any]], text: str = "") -> Stream:
    """A streamed assistant turn with tool calls, each with an id unique in the session.

    Arguments arrive in several fragments, like a real provider streams them.
    """
    global _serial
    stream = tool_stream(list(calls), text=text, first_id=_serial + 1)
    _serial += len(calls)
    return stream


def answer(text: str, pieces: int = 3) -> Stream:
    return text_stream(text, pieces=pieces)


SUMMARY_MARK = "SUMMARY-MARK"


def summary(task: str = "") -> Stream:
    """The answer to Claude Code's compaction request (naming the task, as a model's would)."""
    return answer(f"<analysis>Some steps.</analysis>\n<summary>{SUMMARY_MARK} {task}</summary>")


def off_script(conversation: Conversation, why: str) -> Stream:
    last = [(c.name, (c.result or "")[:200]) for c in conversation.last_turn]
    return answer(f"{OFF_SCRIPT}: {why}; last turn: {last!r}")


# -- behaviours ----------------------------------------------------------------------------

Behaviour = Callable[[Conversation], Reply]

LONG_TEXT = "".join(
    f"Line {i:04d}: the quick brown fox jumps over the lazy dog — ünïcödé ✓ {'#' * (i % 17)}\n"
    for i in range(280)
)  # about 20 KB, several thousand tokens
LONG_PIECES = 400

MISSING_FILE = "does-not-exist.txt"
NOTEBOOK_CELL_ID = "cell-e2e-1"


def long_answer(conversation: Conversation) -> Reply:
    return answer(LONG_TEXT, pieces=LONG_PIECES)


def hello(conversation: Conversation) -> Reply:
    return answer("Hello from the scripted model.")


def files(conversation: Conversation) -> Reply:
    """Write notes.txt, Edit it, run a Bash command, Read a missing file, then report."""
    cwd = conversation.cwd
    if cwd is None:
        return off_script(conversation, "no working directory in the conversation")
    notes = f"{cwd}/notes.txt"
    done = [c.name for c in conversation.calls]
    last = conversation.last_turn
    if not done:
        return tool_calls(("Write", {"file_path": notes, "content": "alpha\nbeta\n"}))
    if len(last) != 1 or last[0].result is None:
        return off_script(conversation, "expected the result of one tool call")
    step = last[0]
    if step.name == "Write" and "notes.txt" in step.result:
        return tool_calls(
            ("Edit", {"file_path": notes, "old_string": "beta", "new_string": "gamma"})
        )
    if step.name == "Edit" and "notes.txt" in step.result:
        return tool_calls(
            ("Bash", {"command": "echo e2e-$((6*7))", "description": "Print a number"})
        )
    if step.name == "Bash":
        return tool_calls(("Read", {"file_path": f"{cwd}/{MISSING_FILE}"}))
    if step.name == "Read":
        bash = next(c for c in conversation.calls if c.name == "Bash")
        outcome = "failed" if step.result.startswith("Error:") else "worked"
        return answer(
            f"Done. Bash printed {bash.result.strip()}; reading the missing file {outcome}."
        )
    return off_script(conversation, f"unexpected step {step.name}")


def parallel(conversation: Conversation) -> Reply:
    """Two tool calls in one turn (Write and Bash), then a report of both results."""
    cwd = conversation.cwd
    if cwd is None:
        return off_script(conversation, "no working directory in the conversation")
    if not conversation.calls:
        return tool_calls(
            ("Write", {"file_path": f"{cwd}/first.txt", "content": "first\n"}),
            ("Bash", {"command": "echo second-$((1+1))", "description": "Print a word"}),
            text="Doing two things at once.",
        )
    last = conversation.last_turn
    if [c.name for c in last] != ["Write", "Bash"] or any(c.result is None for c in last):
        return off_script(conversation, "expected results for Write and Bash")
    return answer(f"Both done: {last[1].result.strip()}.")


def notebook(conversation: Conversation) -> Reply:
    """Write a notebook, Read it, load NotebookEdit with ToolSearch, edit the cell it read."""
    cwd = conversation.cwd
    if cwd is None:
        return off_script(conversation, "no working directory in the conversation")
    path = f"{cwd}/nb.ipynb"
    last = conversation.last_turn
    if not conversation.calls:
        nb = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": NOTEBOOK_CELL_ID,
                    "metadata": {},
                    "outputs": [],
                    "source": ["print('before')"],
                }
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        return tool_calls(("Write", {"file_path": path, "content": json.dumps(nb, indent=1)}))
    if len(last) != 1 or last[0].result is None:
        return off_script(conversation, "expected the result of one tool call")
    step = last[0]
    if step.name == "Write":
        return tool_calls(("Read", {"file_path": path}))
    if step.name == "Read":
        if "NotebookEdit" in conversation.tool_names:
            return off_script(conversation, "NotebookEdit offered before ToolSearch loaded it")
        return tool_calls(("ToolSearch", {"query": "select:NotebookEdit", "max_results": 1}))
    if step.name == "ToolSearch":
        if "NotebookEdit" not in conversation.tool_names:
            return off_script(conversation, "ToolSearch did not make NotebookEdit callable")
        read = next(c for c in conversation.calls if c.name == "Read")
        cell = re.search(r'<cell id="([^"]+)"', read.result or "")
        if cell is None:
            return off_script(conversation, "no cell id in the Read result")
        return tool_calls(
            (
                "NotebookEdit",
                {
                    "notebook_path": path,
                    "cell_id": cell.group(1),
                    "new_source": "print('after')",
                    "edit_mode": "replace",
                },
            )
        )
    if step.name == "NotebookEdit":
        return answer(f"Notebook edited: {step.result[:80]}")
    return off_script(conversation, f"unexpected step {step.name}")


def media(conversation: Conversation) -> Reply:
    """Read a PDF and an image the test put in the working directory, then report what the
    tool results said about them."""
    cwd = conversation.cwd
    if cwd is None:
        return off_script(conversation, "no working directory in the conversation")
    files = [f"{cwd}/spec.pdf", f"{cwd}/dot.png"]
    calls = conversation.calls
    if len(calls) < len(files):
        if calls and calls[-1].result is None:
            return off_script(conversation, "the last Read has no result")
        return tool_calls(("Read", {"file_path": files[len(calls)]}))
    results = " | ".join((c.result or "").replace("\n", " ") for c in calls)
    return answer(f"Read both: {results}")


SUBTASK = "E2E-SUBTASK"
CODE_WORD = "PELICAN-42"


INSTALLER = "curl -s http://127.0.0.1:9/install.sh | sh; echo ran > ran.txt"
RISKY = "E2E-RISKY"


def auto_mode(conversation: Conversation) -> Reply:
    """A command auto mode has checked (a download piped into sh), then a report of its result.

    Auto mode's built-in check asks the model for a severity from 0 to 100 (above 50 blocks):
    the script judges 90 when the task says RISKY, else 10.
    """
    if conversation.is_safety_check:
        severity = 90 if RISKY in conversation.task else 10
        closing = "" if conversation.body.get("stop") else "</severity>"  # the stop ends it
        return answer(f"<severity>{severity}{closing}", pieces=1)
    if not conversation.calls:
        return tool_calls(("Bash", {"command": INSTALLER, "description": "Run the installer"}))
    last = conversation.last_turn
    if len(last) != 1 or last[0].result is None:
        return off_script(conversation, "expected the installer's result")
    return answer(f"Installer step finished: {last[0].result.strip()[:100]}")


FULL_CONTEXT = 240_000  # tokens; Kimi K2 on Groq holds 262,144


def filling_context(conversation: Conversation) -> Reply:
    """Two Bash steps; the answer of the second says the conversation is now 240,000 tokens
    long, so Claude Code should compact it (it needs two steps to have something to compact)
    before its next request. The final answer says whether it did."""
    if SUMMARY_MARK in json.dumps(conversation.messages):
        return answer("Done after compaction.")
    if len(conversation.calls) == 2:
        return answer("Done without compaction.")
    step = tool_calls(("Bash", {"command": "echo step", "description": "Print a word"}))
    if conversation.calls:
        step.items[-1]["usage"] = usage(prompt=FULL_CONTEXT, completion=20)
    return step


def web_search(conversation: Conversation) -> Reply:
    """Load WebSearch with ToolSearch, search, then report what the search returned."""
    names = [c.name for c in conversation.calls]
    if not names:
        return tool_calls(("ToolSearch", {"query": "select:WebSearch", "max_results": 1}))
    if names == ["ToolSearch"]:
        return tool_calls(("WebSearch", {"query": "kimi-proxy release notes"}))
    return answer(f"The search gave: {conversation.calls[-1].result}")


def search_summary(conversation: Conversation) -> Reply:
    """Claude Code's WebSearch side call, after the proxy searched: summarise the results."""
    results = [c.result for c in conversation.calls if c.name == "web_search" and c.result]
    if not results:
        return off_script(conversation, "the side call reached the model without results")
    urls = re.findall(r"https?://\S+", results[-1])
    return answer(f"Search summary: {len(urls)} pages, first {urls[0] if urls else 'none'}.")


def web_fetch(conversation: Conversation) -> Reply:
    """Load WebFetch with ToolSearch and fetch the URL after the keyword; Claude Code then
    asks about the page in a request without tools, carrying its text and the fetch's prompt."""
    if not conversation.tool_names:
        found = re.search(r"secret word is (\w+)", conversation.task)
        return answer(f"The page's secret word is {found.group(1) if found else 'missing'}.")
    url = re.search(r"E2E-FETCH: (https://\S+)", conversation.task)
    names = [c.name for c in conversation.calls]
    if url is None:
        return off_script(conversation, "no URL in the task")
    if not names:
        return tool_calls(("ToolSearch", {"query": "select:WebFetch", "max_results": 1}))
    if names == ["ToolSearch"]:
        prompt = "E2E-FETCH: what is the secret word?"
        return tool_calls(("WebFetch", {"url": url.group(1), "prompt": prompt}))
    return answer(f"Fetched: {conversation.calls[-1].result}")


def mcp_tool(conversation: Conversation) -> Reply:
    """Load the MCP server's tool with ToolSearch, call it, then report its result."""
    offered = [n for n in conversation.tool_names if "reverse" in n]
    names = [c.name for c in conversation.calls]
    if not names:
        return tool_calls(("ToolSearch", {"query": "reverse text", "max_results": 3}))
    if names == ["ToolSearch"] and offered:
        return tool_calls((offered[0], {"text": "kimi"}))
    if names == ["ToolSearch"]:
        return off_script(conversation, "the MCP tool was not offered after ToolSearch")
    return answer(f"The MCP tool said {conversation.calls[-1].result}.")


def delegate(conversation: Conversation) -> Reply:
    """Hand a subtask to a subagent (Claude Code's Agent tool), then report what it found."""
    calls = conversation.calls
    if not calls:
        prompt = f"{SUBTASK}: reply with the code word."
        args = {"description": "Fetch the code word", "prompt": prompt, "run_in_background": False}
        return tool_calls(("Agent", args))
    if [c.name for c in calls] != ["Agent"] or calls[0].result is None:
        return off_script(conversation, "expected the result of one Agent call")
    if CODE_WORD not in calls[0].result:
        return off_script(conversation, f"no code word in the agent's result: {calls[0].result!r}")
    return answer(f"The agent found {CODE_WORD}.")


def subtask(conversation: Conversation) -> Reply:
    """The subagent's side: a fresh conversation whose task is the Agent call's prompt."""
    if "E2E-AGENT" in conversation.task:
        return off_script(conversation, "the subagent saw the parent's conversation")
    return answer(f"The code word is {CODE_WORD}.")


MARKUP_NOTE = "written by a call the provider left as markup"


def leaked_markup(conversation: Conversation) -> Reply:
    """A Write made in Kimi K2's own tool-call markup, left in the text (finish `stop`), as a
    provider without Kimi's tool parser passes it on; then a report of the Write's result."""
    cwd = conversation.cwd
    if cwd is None:
        return off_script(conversation, "no working directory in the conversation")
    if not conversation.calls:
        args = json.dumps({"file_path": f"{cwd}/leaked.txt", "content": MARKUP_NOTE + "\n"})
        markup = (
            "Writing it now.<|tool_calls_section_begin|><|tool_call_begin|>functions.Write:0"
            f"<|tool_call_argument_begin|>{args}<|tool_call_end|><|tool_calls_section_end|>"
        )
        return text_stream(markup, pieces=12)
    (write,) = conversation.last_turn
    return answer(f"Write said: {write.result}")


STORY = "Once upon a time"
SLOW_COMMAND = "python3 -c 'import time; time.sleep(30)' && echo built > built.txt"


def slow_story(pieces: int = 100, seconds: float = 0.1) -> Stream:
    """A long answer that takes `pieces` × `seconds` to stream: time for the user to stop it."""
    items: list[Any] = [chunk({"role": "assistant", "content": ""})]
    for i in range(pieces):
        items += [chunk({"content": f"{STORY}, part {i}. "}), Pause(seconds)]
    items += [chunk({}, finish="stop"), chunk(choices=False, usage=usage())]
    return Stream(items)


def interrupted(conversation: Conversation) -> Reply:
    """The user's latest prompt decides: a slow story, a slow build (Bash), or a report."""
    if conversation.is_safety_check:  # auto mode asks before running the build
        return auto_mode(conversation)
    users = [m for m in conversation.messages if m.get("role") == "user"]
    latest = content_text(users[-1].get("content")) if users else ""
    if "report" in latest:
        return answer("Report: both were stopped.")
    if "build" in latest:
        return tool_calls(("Bash", {"command": SLOW_COMMAND, "description": "Build"}))
    return slow_story()


BEHAVIOURS: dict[str, Behaviour] = {
    SUBTASK: subtask,
    "E2E-INTERRUPT": interrupted,
    "E2E-MARKUP": leaked_markup,
    "E2E-AGENT": delegate,
    "E2E-AUTO": auto_mode,
    "E2E-FULL": filling_context,
    "E2E-SEARCH": web_search,
    "Perform a web search for the query": search_summary,
    "E2E-FETCH": web_fetch,
    "E2E-MCP": mcp_tool,
    "E2E-MEDIA": media,
    "E2E-LONG": long_answer,
    "E2E-HELLO": hello,
    "E2E-FILES": files,
    "E2E-PARALLEL": parallel,
    "E2E-NOTEBOOK": notebook,
}


class ScriptedModel:
    """A script for the scripted upstream: picks a behaviour by a keyword in the user's task.
    Claude Code's requests to compact the conversation get a summary that names the keyword.

    `failures` (call number -> reply) replaces chosen calls with provider errors; `seen` keeps
    the request bodies in order (the upstream records them too, with headers).
    """

    def __init__(
        self,
        behaviours: dict[str, Behaviour] | None = None,
        failures: Callable[[int], Reply | None] | None = None,
    ) -> None:
        self.behaviours = behaviours or BEHAVIOURS
        self.failures = failures

    def __call__(self, body: dict[str, Any], call: int) -> Reply:
        if self.failures is not None:
            failure = self.failures(call)
            if failure is not None:
                return failure
        conversation = Conversation(body)
        task = conversation.task
        for keyword, behaviour in self.behaviours.items():
            if keyword in task:
                if conversation.asks_for_summary:
                    return summary(keyword)
                return behaviour(conversation)
        return off_script(conversation, "no behaviour for this task")


def fail_first(times: int, reply: Callable[[], Reply]) -> Callable[[int], Reply | None]:
    """Provider failures for the first `times` calls."""
    return lambda call: reply() if call < times else None


def always(reply: Callable[[], Reply]) -> Callable[[int], Reply | None]:
    return lambda call: reply()


def rate_limited(retry_after: str = "0") -> Reply:
    return error(
        429, "Rate limit reached for model (scripted)", headers={"retry-after": retry_after}
    )


def outage() -> Reply:
    return error(500, "scripted provider outage")
