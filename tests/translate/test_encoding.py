"""The payload sent to the provider is exactly `orjson.dumps(payload)`, its tools' JSON made
once for a list of the same definitions and never given for another list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.providers import MOONSHOT
from kimi_proxy.providers.models import ModelRouter
from kimi_proxy.translate.encoding import KEPT, payload_json, tools_json
from kimi_proxy.translate.request import anthropic_to_openai_request

FIRST_REQUEST = Path(__file__).resolve().parent.parent / "fixtures/claude_code/first_request.json"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
DEFINITION = st.fixed_dictionaries({"type": st.just("function"), "function": JSON})


def test_claude_codes_request_is_sent_as_its_payload_encodes_each_time() -> None:
    body = orjson.loads(FIRST_REQUEST.read_bytes())
    router = ModelRouter.fixed("kimi-k2.6")
    for _ in range(3):  # the first makes the tools' JSON; the others reuse it
        request = MessagesRequest.model_validate(body)
        payload = anthropic_to_openai_request(request, router=router, profile=MOONSHOT).payload
        assert payload["tools"]
        assert payload_json(payload) == orjson.dumps(payload)


@settings(max_examples=300)
@given(st.lists(st.lists(DEFINITION, min_size=1, max_size=4), min_size=1, max_size=KEPT + 8))
def test_a_tool_list_is_encoded_as_itself_never_as_another(lists: list[list[Any]]) -> None:
    """Lists of new definitions (identities freed and reused between examples), and lists
    sent again (the same objects), past the number kept."""
    for tools in [*lists, *lists[::-1]]:
        assert tools_json(tools) == orjson.dumps(tools)
        payload = {"model": "m", "tools": tools, "messages": [{"role": "user", "content": "x"}]}
        assert payload_json(payload) == orjson.dumps(payload)
