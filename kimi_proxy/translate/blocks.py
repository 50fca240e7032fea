"""Anthropic's content blocks as a stream writes them: one block open at a time, indexes
contiguous from 0, and a `content_block_stop` for every `content_block_start` — only
`_open_block` and `_close_block` emit those. Tool calls are keyed by the provider's index and
open in index order: a call whose fragments arrive while another call's arguments are still
incomplete is held until it can open (`stream.py` tells the whole theory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from .tools import ToolNames, anthropic_tool_id, new_nonce

log = logging.getLogger("kimi_proxy.stream")

Event = dict[str, Any]
UNKNOWN_TOOL = "unknown_tool"


@dataclass(slots=True)
class ToolCall:
    upstream_id: str | None = None
    name: str | None = None
    held: list[str] = field(default_factory=list)  # fragments not yet sent
    sent: list[str] = field(default_factory=list)  # fragments sent (for the completeness check)
    block: int | None = None
    closed: bool = False

    def arguments_complete(self) -> bool:
        """The arguments sent so far form a JSON object (nothing yet: not complete)."""
        try:
            return isinstance(orjson.loads("".join(self.sent)), dict)
        except orjson.JSONDecodeError:
            return False

    def arguments_broken(self) -> bool:
        """Ended with arguments that are not a JSON object (none at all means `{}`)."""
        return bool("".join(self.sent).strip()) and not self.arguments_complete()


@dataclass(slots=True)
class _Block:
    index: int
    kind: str  # "text" | "thinking" | "tool_use" | "structured" (a call shown as text)
    call: ToolCall | None = None


class ContentBlocks:
    """The open block, the next index and the tool calls by provider index, for one stream."""

    __slots__ = (
        "_calls",
        "_local",
        "_next_index",
        "_nonce",
        "_open",
        "_relayed_chars",
        "_step_client_calls",
        "_structured",
        "_tool_names",
        "_used_tools",
    )

    def __init__(
        self,
        tool_names: ToolNames,
        local_tools: frozenset[str],
        structured: str | None = None,
    ) -> None:
        self._tool_names = tool_names
        self._structured = structured  # structured output's tool: its arguments are the text
        self._local = local_tools  # agent mode: calls the proxy runs, never shown as blocks
        self._nonce = new_nonce()
        self._next_index = 0
        self._open: _Block | None = None
        self._calls: dict[int, ToolCall] = {}
        self._used_tools = False
        self._step_client_calls = False
        self._relayed_chars = 0  # of text, thinking and arguments sent: a cancel's output

    def _append(
        self, kind: str, delta_type: str, field_name: str, text: str, events: list[Event]
    ) -> None:
        if self._open is None or self._open.kind != kind:
            self._close_block(events)
            self._open_block(kind, events)
        assert self._open is not None
        self._relayed_chars += len(text)
        events.append(
            {
                "type": "content_block_delta",
                "index": self._open.index,
                "delta": {"type": delta_type, field_name: text},
            }
        )

    def _open_block(self, kind: str, events: list[Event], call: ToolCall | None = None) -> None:
        index = self._next_index
        self._next_index += 1
        self._open = _Block(index=index, kind=kind, call=call)
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        elif call is not None and self._structured and call.name == self._structured:
            call.block = index
            self._open = _Block(index=index, kind="structured", call=call)
            block = {"type": "text", "text": ""}
        else:
            assert call is not None
            call.block = index
            self._used_tools = self._step_client_calls = True
            block = {
                "type": "tool_use",
                "id": anthropic_tool_id(call.upstream_id, self._nonce),
                "name": self._tool_names.to_client(call.name or UNKNOWN_TOOL),
                "input": {},
            }
        events.append({"type": "content_block_start", "index": index, "content_block": block})

    def _close_block(self, events: list[Event]) -> None:
        block = self._open
        if block is None:
            return
        if block.kind == "thinking":
            events.append(
                {
                    "type": "content_block_delta",
                    "index": block.index,
                    "delta": {"type": "signature_delta", "signature": ""},
                }
            )
        elif block.call is not None:
            block.call.closed = True
        events.append({"type": "content_block_stop", "index": block.index})
        self._open = None

    def whole_block(self, block: dict[str, Any], input_json: str | None = None) -> list[Event]:
        """A block of the proxy's own, complete at once: its start (with `input_json` as one
        `input_json_delta`, as a `server_tool_use` streams its input) and its stop."""
        events: list[Event] = []
        self._close_block(events)
        index = self._next_index
        self._next_index += 1
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        if input_json is not None:
            self._relayed_chars += len(input_json)
            delta = {"type": "input_json_delta", "partial_json": input_json}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
        return events

    # -- tool calls ----------------------------------------------------------------------

    def _tool_fragment(self, fragment: dict[str, Any], events: list[Event]) -> None:
        key = fragment.get("index", 0)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = ToolCall()
        if fragment.get("id") and call.upstream_id is None:
            call.upstream_id = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name") and call.name is None:
            call.name = function["name"]
        arguments = function.get("arguments") or ""
        if call.closed:
            if arguments.strip():
                log.warning("dropping arguments for an already closed tool call %s", call.name)
            return
        if arguments:
            call.held.append(arguments)
        current = self._open.call if self._open is not None else None
        if current is call:
            self._send_held(call, events)
            self._advance_calls(events)
            return
        if call.name is None or call.name in self._local:
            return  # a call opens once its name is known; local calls never open
        if current is not None and not current.arguments_complete():
            return  # the open call is still receiving its arguments: hold this one
        self._close_block(events)
        self._open_next_held_call(events, allow_unnamed=False)
        self._advance_calls(events)

    def _advance_calls(self, events: list[Event]) -> None:
        """While the open call's arguments are complete, let a held call take its place.

        Without this a held call would wait for its next fragment (or `finish`), and text
        arriving meanwhile would jump ahead of it.
        """
        while (
            self._open is not None
            and self._open.call is not None
            and any(self._waiting(c) for c in self._calls.values())
            and self._open.call.arguments_complete()
        ):
            self._close_block(events)
            self._open_next_held_call(events, allow_unnamed=False)

    def _waiting(self, call: ToolCall) -> bool:
        """A client call, named, not yet started."""
        return call.block is None and call.name is not None and call.name not in self._local

    def _open_next_held_call(self, events: list[Event], *, allow_unnamed: bool) -> bool:
        """Open the lowest-index client call not yet started, sending its held fragments."""
        for key in sorted(self._calls):
            call = self._calls[key]
            if self._waiting(call) or (allow_unnamed and call.block is None and call.name is None):
                self._open_block("tool_use", events, call)
                self._send_held(call, events)
                return True
        return False

    def _send_held(self, call: ToolCall, events: list[Event]) -> None:
        if not call.held or self._open is None:
            return
        fragment = "".join(call.held)
        call.held.clear()
        self._relayed_chars += len(fragment)
        call.sent.append(fragment)
        if self._open.kind == "structured":
            delta = {"type": "text_delta", "text": fragment}
        else:
            delta = {"type": "input_json_delta", "partial_json": fragment}
        events.append({"type": "content_block_delta", "index": self._open.index, "delta": delta})
