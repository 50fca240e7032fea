"""A request of the size and shape Claude Code sends, generated (no captured prompt text).

`anthropic_request()` builds a Messages API body of about 50 KB: a 3-block system prompt (a short
header, a short identity line, a long main prompt), 12 tools with real-sized JSON schemas (one of
them deferred), and a multi-turn history: user text, a `role: "system"` environment message,
then assistant tool calls answered by tool results (plain strings and block lists), ending on a
user turn. `openai_request()` is the same conversation as the proxy translates it, so the client
talking straight to the upstream sends a body of comparable size and shape.

All text is made from a fixed vocabulary with a seeded RNG: deterministic, realistic in length
and JSON-escaping load (newlines, quotes, paths, code), and nobody's prompt.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

TARGET_BYTES = 50_000
MODEL = "claude-sonnet-5-5"

_VOCABULARY = (
    "the a an of to in for on with by from when while before after each every any this that "
    "file files path directory project repository branch commit change changes diff patch test "
    "tests suite failing passing error errors warning log logs output input request response "
    "server client proxy stream streams event events token tokens model models tool tools call "
    "calls result results argument arguments schema field fields value values string number list "
    "object array boolean default optional required must should may never always only first last "
    "next previous read write edit search find replace run start stop open close create delete "
    "update check verify return use using user users agent agents task tasks step steps plan "
    "context window limit budget time timeout retry retries cache memory process thread queue "
    "function method class module package import export build install configure config setting "
    "settings option options flag flags command commands shell terminal script line lines code "
    "comment comments type types interface value-level exact careful small large fast slow safe "
    "unsafe local remote network connection socket header headers body payload message messages"
)
_WORDS = _VOCABULARY.split()
_IDENTIFIERS = (
    "parse_config load_settings StreamTranslator encode_event feed finish open_block close_block "
    "handle_request run_server make_client retry_after backoff read_chunk write_frame flush "
    "tokenize estimate_tokens route_model resolve_alias upstream_url max_tokens tool_calls "
    "user_id session_id cursor offset limit buffer decoder encoder payload response_headers"
)
_IDENTS = _IDENTIFIERS.split()


def _sentence(rng: random.Random, low: int = 8, high: int = 22) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"`{rng.choice(_IDENTS)}`")
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), f'"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"')
    return " ".join(words).capitalize() + "."


def _prose(rng: random.Random, size: int, *, bullets: bool = False) -> str:
    """About `size` characters of paragraphs (or `- ` bullet lines), with markdown headings."""
    parts: list[str] = []
    length = 0
    while length < size:
        if rng.random() < 0.08:
            piece = f"\n## {rng.choice(_WORDS).capitalize()} {rng.choice(_WORDS)}\n"
        elif bullets or rng.random() < 0.25:
            piece = f"- {_sentence(rng)}\n"
        else:
            piece = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) + "\n\n"
        parts.append(piece)
        length += len(piece)
    return "".join(parts)[:size].rstrip()


def _code(rng: random.Random, size: int) -> str:
    """Numbered source lines, as a file-reading tool returns them."""
    lines: list[str] = []
    length = 0
    number = 1
    indent = 0
    while length < size:
        ident = rng.choice(_IDENTS)
        roll = rng.random()
        if roll < 0.12:
            text = f"def {ident}(self, {rng.choice(_IDENTS)}: str) -> dict[str, Any]:"
            indent = 4
        elif roll < 0.2:
            text = f'{" " * indent}"""{_sentence(rng, 5, 10)}"""'
        elif roll < 0.3:
            text = f"{' ' * indent}if {ident} is None:\n{' ' * (indent + 4)}return {{}}"
        elif roll < 0.35:
            text = ""
            indent = 0
        else:
            value = rng.choice((f'"{rng.choice(_WORDS)}"', str(rng.randint(0, 4096)), "None"))
            text = f"{' ' * indent}{ident} = {rng.choice(_IDENTS)}.get({value})"
        line = f"{number:>6}\t{text}"
        lines.append(line)
        length += len(line) + 1
        number += 1 + text.count("\n")
    return "\n".join(lines)


def _prop(rng: random.Random, kind: str, *, words: int = 18) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "description": _sentence(rng, words // 2, words)}
    if kind == "number" and rng.random() < 0.5:
        schema["default"] = rng.choice((5, 10, 120000))
    return schema


def _schema(rng: random.Random, props: list[tuple[str, str]], size: int) -> dict[str, Any]:
    """An object schema with the named properties, padded toward `size` bytes of JSON."""
    properties: dict[str, Any] = {}
    for name, kind in props:
        if kind == "enum":
            prop = _prop(rng, "string")
            prop["enum"] = [rng.choice(_IDENTS) for _ in range(rng.randint(3, 6))]
        elif kind == "array":
            subs = ("path", "line", "severity", "message")
            item = {
                "type": "object",
                "properties": {sub: _prop(rng, "string", words=10) for sub in subs},
                "required": list(subs),
                "additionalProperties": False,
            }
            prop = {"type": "array", "items": item, "description": _sentence(rng)}
        else:
            prop = _prop(rng, kind)
        properties[name] = prop
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": [name for name, _ in props[: max(1, len(props) // 2)]],
        "additionalProperties": False,
    }
    # Lengthen descriptions until the schema has roughly the wanted size.
    names = list(properties)
    while len(orjson.dumps(schema)) < size and names:
        target = properties[rng.choice(names)]
        target["description"] += " " + _sentence(rng)
    return schema


# (name, description chars, schema bytes, properties): sizes like Claude Code's real tools.
_TOOLS: list[tuple[str, int, int, list[tuple[str, str]]]] = [
    (
        "Agent",
        3200,
        2000,
        [
            ("description", "string"),
            ("prompt", "string"),
            ("subagent_type", "string"),
            ("model", "enum"),
            ("run_in_background", "boolean"),
            ("isolation", "enum"),
        ],
    ),
    (
        "Bash",
        2100,
        1800,
        [
            ("command", "string"),
            ("timeout", "number"),
            ("description", "string"),
            ("run_in_background", "boolean"),
        ],
    ),
    (
        "Edit",
        360,
        580,
        [
            ("file_path", "string"),
            ("old_string", "string"),
            ("new_string", "string"),
            ("replace_all", "boolean"),
        ],
    ),
    ("Glob", 1400, 500, [("pattern", "string"), ("path", "string"), ("limit", "number")]),
    (
        "Read",
        790,
        1100,
        [("file_path", "string"), ("offset", "number"), ("limit", "number"), ("pages", "string")],
    ),
    ("Review", 570, 1900, [("level", "enum"), ("findings", "array")]),
    (
        "Schedule",
        3400,
        1400,
        [("delay_seconds", "number"), ("reason", "string"), ("prompt", "string")],
    ),
    ("Skill", 1400, 350, [("skill", "string"), ("args", "string")]),
    ("ToolSearch", 950, 430, [("query", "string"), ("max_results", "number")]),
    (
        "Workflow",
        3500,
        2100,
        [
            ("script", "string"),
            ("name", "string"),
            ("title", "string"),
            ("args", "string"),
            ("resume_from", "string"),
        ],
    ),
    ("DeferredPlaceholder", 80, 0, []),
    ("Write", 240, 370, [("file_path", "string"), ("content", "string")]),
]


def tools(rng: random.Random) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for name, description, schema_size, props in _TOOLS:
        tool: dict[str, Any] = {"name": name, "description": _prose(rng, description)}
        if props:
            tool["input_schema"] = _schema(rng, props, schema_size)
        else:
            tool["input_schema"] = {"type": "object", "properties": {}}
            tool["defer_loading"] = True
        result.append(tool)
    return result


def _tool_id(rng: random.Random) -> str:
    return "toolu_" + "".join(rng.choice("0123456789abcdef") for _ in range(24))


def _history(rng: random.Random, code_size: int) -> list[dict[str, Any]]:
    ephemeral = {"type": "ephemeral"}
    read_id, grep_id, edit_id = _tool_id(rng), _tool_id(rng), _tool_id(rng)
    path = "/home/dev/project/src/server/stream.py"
    return [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": f"<system-reminder>\n{_prose(rng, 600)}\n</system-reminder>",
                },
                {"type": "text", "text": _sentence(rng, 15, 30)},
            ],
        },
        {
            "role": "system",
            "content": [
                {
                    "type": "text",
                    "text": "# Environment\n" + _prose(rng, 5000, bullets=True),
                    "cache_control": ephemeral,
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": _sentence(rng)},
                {"type": "tool_use", "id": read_id, "name": "Read", "input": {"file_path": path}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": read_id,
                    "content": _code(random.Random(code_size), code_size),
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": grep_id,
                    "name": "Bash",
                    "input": {
                        "command": "grep -rn encode_event src/",
                        "description": "find callers",
                    },
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": grep_id,
                    "content": [{"type": "text", "text": _code(rng, 1500)}],
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": " ".join(_sentence(rng) for _ in range(3))},
                {
                    "type": "tool_use",
                    "id": edit_id,
                    "name": "Edit",
                    "input": {
                        "file_path": path,
                        "old_string": _code(rng, 300),
                        "new_string": _code(rng, 360),
                    },
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": edit_id,
                    "content": f"The file {path} has been updated.",
                    "cache_control": ephemeral,
                },
                {"type": "text", "text": _sentence(rng, 20, 40)},
            ],
        },
    ]


def anthropic_request(
    *, stream: bool = True, seed: int = 6, target_bytes: int = TARGET_BYTES
) -> dict[str, Any]:
    """A Claude-Code-shaped Messages request of about `target_bytes` of JSON."""
    code_size = 8000
    body: dict[str, Any] = {}
    for _ in range(4):  # calibrate the one free size (the file read back) to hit the target
        rng = random.Random(seed)
        body = {
            "model": MODEL,
            "messages": _history(rng, code_size),
            "system": [
                {"type": "text", "text": "x-bench-header: version=0.0.0; entry=bench;"},
                {
                    "type": "text",
                    "text": _sentence(rng, 8, 12),
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": _prose(rng, 5500), "cache_control": {"type": "ephemeral"}},
            ],
            "tools": tools(rng),
            "metadata": {"user_id": '{"device_id":"bench","account_uuid":"","session_id":"bench"}'},
            "max_tokens": 32000,
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "medium"},
            "stream": stream,
        }
        missing = target_bytes - len(orjson.dumps(body))
        if abs(missing) < target_bytes * 0.005:
            break
        code_size = max(500, code_size + missing)
    return body


def openai_request(
    body: dict[str, Any] | None = None, *, upstream_url: str = "http://127.0.0.1:1/v1"
) -> dict[str, Any]:
    """The Chat Completions payload the proxy sends upstream for `body` (its own translator)."""
    from kimi_proxy.config.settings import load_settings
    from kimi_proxy.protocol.anthropic import MessagesRequest
    from kimi_proxy.translate.request import anthropic_to_openai_request

    settings = load_settings(upstream_url=upstream_url, api_key="bench")
    request = MessagesRequest.model_validate(body or anthropic_request())
    translated = anthropic_to_openai_request(
        request,
        router=settings.router,
        profile=settings.profile,
        max_output_tokens=settings.max_output_tokens,
    )
    return translated.payload


if __name__ == "__main__":  # pragma: no cover - a quick look at the sizes
    anthropic = anthropic_request()
    openai = openai_request(anthropic)
    print(f"anthropic: {len(orjson.dumps(anthropic))} bytes, openai: {len(orjson.dumps(openai))}")
