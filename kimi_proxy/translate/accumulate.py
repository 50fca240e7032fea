"""Fold a stream of Anthropic events into the final message (used by non-streaming agent mode,
which runs the same streaming loop and answers with its result). Pure."""

from __future__ import annotations

from typing import Any

from .response import parse_tool_arguments

Event = dict[str, Any]


def accumulate_message(events: list[Event]) -> dict[str, Any]:
    message: dict[str, Any] = {}
    partial_json: dict[int, list[str]] = {}
    for event in events:
        match event["type"]:
            case "message_start":
                message = {**event["message"], "content": []}
            case "content_block_start":
                message["content"].append(dict(event["content_block"]))
            case "content_block_delta":
                block = message["content"][event["index"]]
                delta = event["delta"]
                match delta["type"]:
                    case "text_delta":
                        block["text"] += delta["text"]
                    case "thinking_delta":
                        block["thinking"] += delta["thinking"]
                    case "signature_delta":
                        block["signature"] = delta["signature"]
                    case "input_json_delta":
                        partial_json.setdefault(event["index"], []).append(delta["partial_json"])
            case "message_delta":
                message.update(event["delta"])
                message["usage"] = {**message.get("usage", {}), **event["usage"]}
    cut_off = message.get("stop_reason") == "max_tokens"  # known once the message ends
    for index, parts in partial_json.items():
        message["content"][index]["input"] = parse_tool_arguments("".join(parts), cut_off=cut_off)
    return message
