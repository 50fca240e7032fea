"""The model a request asks for, and Kimi K2.6 as Moonshot serves it: `/model` and `--model`
reach the family, `provider:model` or model id they name; an unknown id is a 404 that lists
the families; against a provider enforcing K2.6's rules, a history without thinking, a forced
tool choice while thinking, and an overflow each end as on Anthropic's API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from support.providers import TWO_FAMILIES, kimi_k26_rules, pooled_proxy
from support.sse_client import post_stream
from support.upstream import Reply, text_stream, tool_stream

from kimi_proxy.errors import NotFoundError, error_from_provider_response
from kimi_proxy.providers.catalog import load_catalog
from kimi_proxy.providers.choice import BY_ROUTE, choose
from kimi_proxy.providers.spec import CandidateSpec, PoolSpec, ProviderSpec, RouteConfig


def said(text: str) -> Any:
    return lambda body, call: text_stream(text)


def spec() -> PoolSpec:
    catalog = load_catalog()
    moonshot = catalog.providers["moonshot"]
    provider = ProviderSpec("moonshot", "http://x", moonshot.dialect, moonshot.profile, ())
    k26 = CandidateSpec("moonshot", "kimi-k2.6", moonshot.profile.limits("kimi-k2.6"))
    fast = CandidateSpec("moonshot", "kimi-k2.7-code-highspeed", moonshot.profile.limits("x"))
    return PoolSpec(
        {"moonshot": provider}, {"kimi": (k26,), "fast": (fast,)}, RouteConfig(default="kimi")
    )


@pytest.mark.parametrize(
    ("asked", "labels", "family"),
    [
        ("fast", ["moonshot:kimi-k2.7-code-highspeed"], "fast"),
        ("claude-fast", ["moonshot:kimi-k2.7-code-highspeed"], "fast"),
        ("moonshot:kimi-k3", ["moonshot:kimi-k3"], "moonshot:kimi-k3"),
        ("kimi-k2.6", ["moonshot:kimi-k2.6"], "kimi-k2.6"),
    ],
)
def test_a_model_id_names_what_serves_it(asked: str, labels: list[str], family: str) -> None:
    choice = choose(spec(), asked, load_catalog())
    assert choice.candidates is not None
    assert [c.label for c in choice.candidates] == labels and choice.family == family


def test_claudes_ids_keep_the_routes_and_anything_else_is_a_404_listing_families() -> None:
    for claude in ("claude-opus-4-5", "claude-haiku-5-5", "opus", "my-sonnet"):
        assert choose(spec(), claude, load_catalog()) is BY_ROUTE
    with pytest.raises(NotFoundError, match=r"No model 'gpt-4'.*\(fast, kimi\)"):
        choose(spec(), "gpt-4", load_catalog())
    with pytest.raises(NotFoundError, match="set GROQ_API_KEY"):
        choose(spec(), "groq:openai/gpt-oss-120b", load_catalog())
    with pytest.raises(NotFoundError, match="No provider 'acme'"):
        choose(spec(), "acme:model", load_catalog())


def test_model_fast_reaches_family_fast_and_a_switched_session_stays_there(
    tmp_path: Path,
) -> None:
    providers = {"moonshot": said("from kimi"), "fastco": said("from fast")}
    with pooled_proxy(tmp_path, TWO_FAMILIES, providers) as pool:
        client = pool.harness.client(default_headers={"x-claude-code-session-id": "s-1"})

        def ask(model: str) -> str:
            message = client.messages.create(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            return message.content[0].text  # type: ignore[union-attr]

        assert ask("claude-sonnet-4-5") == "from kimi"
        assert ask("fast") == "from fast"  # /model fast
        assert ask("fast") == "from fast"
        assert ask("claude-fast") == "from fast"
        with pytest.raises(anthropic.NotFoundError) as unknown:
            ask("gpt-4o")
        models = pool.harness.client().models.list(limit=1000)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "fast, kimi" in str(unknown.value)
    entries = {m.id: m for m in models.data}
    assert entries["claude-kimi"].display_name == "Kimi K2.6 via moonshot"
    assert entries["claude-fast"].display_name == "Fast Model via fastco"
    assert entries["claude-kimi"].model_dump()["max_input_tokens"] == 262_144


def calls_then_answers(body: dict[str, Any], call: int) -> Reply:
    if not any(m["role"] == "tool" for m in body["messages"]):
        return tool_stream([("Read", {"file_path": "a.txt"})])
    return text_stream("done")


HISTORY_WITHOUT_THINKING = [
    {"role": "user", "content": "read a.txt"},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"p": 1}}],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}],
    },
]
READ_TOOL = {"name": "Read", "input_schema": {"type": "object", "properties": {}}}


@pytest.mark.parametrize("stream", [False, True])
def test_against_k26s_rules_each_case_ends_as_on_anthropics_api(
    tmp_path: Path, stream: bool
) -> None:
    moonshot = kimi_k26_rules(lambda body, call: text_stream("fine"), context=20_000)
    providers = {"moonshot": moonshot, "fastco": said("unused")}
    with pooled_proxy(tmp_path, TWO_FAMILIES, providers) as pool:
        base: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 1000}

        def send(**body: Any) -> tuple[int, str]:
            if stream:
                response, events = post_stream(pool.url, {**base, **body})
                if response.status_code != 200:
                    return response.status_code, response.json()["error"]["message"]
                texts = [d.get("delta", {}).get("text", "") for _, d in events]
                errors = [d["error"]["message"] for n, d in events if n == "error"]
                return response.status_code, "".join(texts) + "".join(errors)
            answer = pool.harness.client().messages.create(**{**base, **body})
            return 200, answer.content[0].text  # type: ignore[union-attr]

        # 1. A history whose tool call lost its thinking (after /compact, a model switch).
        assert send(messages=HISTORY_WITHOUT_THINKING, tools=[READ_TOOL]) == (200, "fine")
        sent = pool.providers["moonshot"].bodies[-1]
        [call] = [m for m in sent["messages"] if m.get("tool_calls")]
        assert call["reasoning_content"] and "thinking" not in sent
        # 2. A forced tool choice while thinking: thinking is turned off for that request.
        forced = {"type": "tool", "name": "Read"}
        messages = [{"role": "user", "content": "read"}]
        assert send(messages=messages, tools=[READ_TOOL], tool_choice=forced) == (200, "fine")
        assert pool.providers["moonshot"].bodies[-1]["thinking"] == {"type": "disabled"}
        # 3. Claude Code's small calls with thinking disabled reach Moonshot's switch.
        send(messages=messages, thinking={"type": "disabled"})
        assert pool.providers["moonshot"].bodies[-1]["thinking"] == {"type": "disabled"}
        # 4. An overflow, in Moonshot's words, becomes the words Claude Code compacts on.
        huge = [{"role": "user", "content": "word " * 100_000}]
        if stream:
            status, text = send(messages=huge)
            assert status == 400 and "prompt is too long: " in text
        else:
            with pytest.raises(anthropic.BadRequestError) as overflow:
                send(messages=huge)
            text = str(overflow.value)
        assert "tokens > 20000 maximum" in text


WORDINGS = {  # each provider's overflow, as its API words it (269,030 asked of 262,144)
    "moonshot": "Invalid request: Your request exceeded model token limit: 262144 "
    "(requested: 269030)",
    "openrouter": "This endpoint's maximum context length is 262144 tokens. However, you "
    "requested about 269030 tokens (261030 of text input, 8000 in the output). Please reduce "
    'the length of either one, or use the "middle-out" transform to compress your prompt '
    "automatically.",
    "fireworks": "The prompt is too long: 269030, model maximum context length: 262144",
    "together": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 262144. "
    "Given: 261030 `inputs` tokens and 8000 `max_new_tokens`",
    "deepinfra": "This model's maximum context length is 262144 tokens. However, you requested "
    "269030 tokens (261030 in the messages, 8000 in the completion). Please reduce the length "
    "of the messages or completion.",
}


@pytest.mark.parametrize("provider", sorted(WORDINGS))
def test_each_providers_overflow_wording_becomes_anthropics(provider: str) -> None:
    pattern = load_catalog().providers[provider].profile.overflow_pattern
    body = json.dumps({"error": {"message": WORDINGS[provider]}}).encode()
    error = error_from_provider_response(
        400, body, httpx.Headers(), model="m", overflow_pattern=pattern
    )
    assert error.message.startswith("prompt is too long: 269030 tokens > 262144 maximum")


def test_groqs_overflow_without_figures_uses_the_estimate_and_the_window() -> None:
    message = "Please reduce the length of the messages or completion."
    body = json.dumps({"error": {"message": message, "code": "context_length_exceeded"}})
    error = error_from_provider_response(
        400,
        body.encode(),
        httpx.Headers(),
        model="m",
        prompt_tokens=140_000,
        context_window=131_072,
    )
    assert error.message.startswith("prompt is too long: 140000 tokens > 131072 maximum")
