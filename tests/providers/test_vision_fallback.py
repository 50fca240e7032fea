"""Images where the model cannot see them: `[route] vision = "FAMILY"` has the image described
by a model that sees, and the text model reads the description in the image's place."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from support.providers import pooled_proxy
from support.upstream import Reply, text_stream

VISION = """
[[provider]]
name = "textco"
base_url = "{TEXTCO_URL}"
keys = ["text-key-1"]
[[provider]]
name = "visionco"
base_url = "{VISIONCO_URL}"
keys = ["vision-key-1"]
[family.kimi]
candidates = ["textco:openai/gpt-oss-120b"]
[family.eyes]
candidates = ["visionco:kimi-k2.6"]
[route]
default = "kimi"
vision = "eyes"
"""
RED = base64.b64encode(b"\x89PNG\r\n\x1a\n red square").decode()
BLUE = base64.b64encode(b"\x89PNG\r\n\x1a\n blue circle").decode()


def eyes(body: dict[str, Any], call: int) -> Reply:
    """The vision model: says which picture it was shown."""
    parts = body["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    return text_stream("A red square saying HELLO." if RED in url else "A blue circle.")


def image(data: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def test_a_text_only_route_gets_the_vision_familys_description_once_per_image(
    tmp_path: Path,
) -> None:
    providers = {"textco": lambda b, n: text_stream("I read it."), "visionco": eyes}
    with pooled_proxy(tmp_path, VISION, providers) as pool:
        client = pool.harness.client()
        first: list[Any] = [
            {"role": "user", "content": [image(RED), {"type": "text", "text": "what?"}]}
        ]
        client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=first)
        later = [
            *first,
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image(BLUE)]}],
            },
        ]
        client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=later)
    text_bodies = pool.providers["textco"].bodies
    seen_first = json.dumps(text_bodies[0])
    assert "A red square saying HELLO." in seen_first and "image_url" not in seen_first
    seen_later = json.dumps(text_bodies[1])
    assert "A red square saying HELLO." in seen_later and "A blue circle." in seen_later
    assert "image_url" not in seen_later and "image not shown" not in seen_later
    # Each image was described once, though the first came again with the second request.
    assert len(pool.providers["visionco"].requests) == 2
