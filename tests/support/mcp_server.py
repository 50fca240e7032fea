"""A stdio MCP server for end-to-end tests: one tool, whose name makes Claude Code's tool name
(`mcp__<server>__<tool>`) longer than the 64 characters providers accept."""

from __future__ import annotations

import json
import sys
from typing import Any

TOOL = "reverse_the_given_text_and_return_it_in_upper_case_letters"
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


def answer(request: dict[str, Any]) -> dict[str, Any]:
    params = request.get("params") or {}
    match request.get("method"):
        case "initialize":
            return {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "words", "version": "1"},
            }
        case "tools/list":
            return {
                "tools": [{"name": TOOL, "description": "Reverse text.", "inputSchema": SCHEMA}]
            }
        case "tools/call":
            text = params["arguments"]["text"]
            return {"content": [{"type": "text", "text": text[::-1].upper()}]}
        case _:
            return {}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if "id" in request:  # notifications get no answer
            result = {"jsonrpc": "2.0", "id": request["id"], "result": answer(request)}
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
