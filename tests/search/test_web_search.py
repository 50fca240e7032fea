"""Anthropic's `web_search` server tool served by the proxy, against each scripted backend,
through the official `anthropic` SDK: Claude Code's side call, an API client's own turn, the
blocks in Anthropic's order and shape, usage counted, every failure as Anthropic reports it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.model import content_text, outage
from support.proxy import Harness, proxy_for
from support.search_backends import KEY, PAGES, SearchBackends, search_backends
from support.sse_client import post_stream
from support.streams import check_grammar
from support.upstream import Reply, text_stream, tool_stream

from kimi_proxy.config.search import SearchSettings
from kimi_proxy.gateway.metering import increments
from kimi_proxy.protocol.record import RequestRecord
from kimi_proxy.server.app import proxy_state

BACKENDS = ("searxng", "brave", "tavily", "exa")
QUERY = "kimi k2.6 release date"
SIDE_CALL: dict[str, Any] = {  # as Claude Code 2.1.332 sends it (issue #30)
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332"},
        {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."},
        {
            "type": "text",
            "text": "You run a web search for another Claude model, which is waiting on the "
            "result and can search again. Search once, then reply with a brief summary of the "
            "results.",
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": f"Perform a web search for the query: {QUERY}"}],
        }
    ],
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
    "tool_choice": {"type": "tool", "name": "web_search"},
    "thinking": {"type": "disabled"},
}


def summary(body: dict[str, Any], call: int) -> Reply:
    """The model: summarise what the search's tool message says (its first URL)."""
    results = [m for m in body["messages"] if m["role"] == "tool"]
    if not results:
        return text_stream("OFF SCRIPT: no search results")
    first_url = next((w for w in content_text(results[-1]["content"]).split() if "://" in w), "")
    return text_stream(f"Summary: the first page is {first_url}.")


@pytest.fixture
def backends() -> Iterator[SearchBackends]:
    with search_backends() as running:
        yield running


def searching(backends: SearchBackends, backend: Any, **options: Any) -> SearchSettings:
    return SearchSettings(backend, backends.url(backend), KEY, "TEST_SEARCH_KEY", **options)


def events_of(proxy: Harness, body: dict[str, Any]) -> list[dict[str, Any]]:
    response, events = post_stream(proxy.url, body)
    assert response.status_code == 200, response.text
    return [data for _, data in events]


@pytest.mark.parametrize("backend", BACKENDS)
def test_claude_codes_side_call_streams_the_search_as_anthropic_does(
    backend: str, backends: SearchBackends
) -> None:
    with proxy_for(summary, search=searching(backends, backend)) as proxy:
        events = events_of(proxy, SIDE_CALL)
        with proxy.client().messages.stream(**SIDE_CALL) as stream:  # the SDK's accumulator
            message = stream.get_final_message()
    assert check_grammar(events) == ["server_tool_use", "web_search_tool_result", "text"]
    assert events[2]["delta"] == {
        "type": "input_json_delta",
        "partial_json": f'{{"query":"{QUERY}"}}',
    }
    assert events[4] == {"type": "ping"}  # while the backend answers
    result = events[5]["content_block"]
    assert result["tool_use_id"] == events[1]["content_block"]["id"]
    assert [r["url"] for r in result["content"]] == [url for url, _, _ in PAGES]
    assert all(
        r["type"] == "web_search_result" and r["encrypted_content"] for r in result["content"]
    )
    assert events[-2]["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert backends.asked[0].backend == backend and QUERY in backends.asked[0].query
    # The model wrote the summary from the results; the query was never its to choose.
    assert message.content[-1].text == f"Summary: the first page is {PAGES[0][0]}."
    assert message.content[0].type == "server_tool_use" and message.content[0].input == {
        "query": QUERY
    }
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == 1
    assert all(
        "tools" not in body or body["tools"][0]["function"]["name"] == "web_search"
        for body in proxy.upstream.bodies
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_side_call_without_streaming(backend: str, backends: SearchBackends) -> None:
    with proxy_for(summary, search=searching(backends, backend)) as proxy:
        message = proxy.client().messages.create(
            **{**SIDE_CALL, "stream": False, "max_tokens": 4096}
        )
    assert [b.type for b in message.content] == [
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert [r.url for r in message.content[1].content] == [url for url, _, _ in PAGES]  # type: ignore[union-attr]
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == 1


def test_an_api_client_offering_web_search_beside_its_tools_gets_searches_in_its_turn(
    backends: SearchBackends,
) -> None:
    """The model calls the `web_search` function; the proxy searches, streams the blocks,
    feeds the results back, and the model goes on in the same message."""

    def model(body: dict[str, Any], call: int) -> Reply:
        offered = sorted(t["function"]["name"] for t in body.get("tools", []))
        assert offered == ["get_weather", "web_search"], offered
        if not any(m["role"] == "tool" for m in body["messages"]):
            return tool_stream(
                [("web_search", {"query": "k2 context window"})], text="Let me look."
            )
        return summary(body, call)

    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "How long is K2's context?"}],
        "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {"type": "object", "properties": {}},
            },
        ],
    }
    with proxy_for(model, search=searching(backends, "tavily")) as proxy:
        events = events_of(proxy, body)
        message = proxy.client().messages.create(**body)
    assert check_grammar(events) == ["text", "server_tool_use", "web_search_tool_result", "text"]
    assert [b.type for b in message.content] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert message.content[1].input == {"query": "k2 context window"}  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (
        backends.asked[0].body is not None
        and backends.asked[0].body["query"] == "k2 context window"
    )


def test_search_blocks_sent_back_in_history_reach_the_model_as_its_call_and_results(
    backends: SearchBackends,
) -> None:
    with proxy_for(summary, search=searching(backends, "searxng")) as proxy:
        first = proxy.client().messages.create(**{**SIDE_CALL, "stream": False, "max_tokens": 4096})
        follow_up = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1000,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "messages": [
                SIDE_CALL["messages"][0],
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": "And the second page?"},
            ],
        }
        proxy.client().messages.create(**follow_up)
    sent = proxy.upstream.bodies[-1]["messages"]
    call = next(m for m in sent if m.get("tool_calls"))
    assert call["tool_calls"][0]["function"] == {
        "name": "web_search",
        "arguments": f'{{"query":"{QUERY}"}}',
    }
    results = next(m for m in sent if m["role"] == "tool")
    assert results["tool_call_id"] == call["tool_calls"][0]["id"]
    for url, _, snippet in PAGES:  # the snippets came back through encrypted_content
        assert url in results["content"] and snippet in results["content"]


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("down", "unavailable"),
        ("slow", "unavailable"),
        ("refused_key", "unavailable"),
        ("rate_limited", "too_many_requests"),
    ],
)
def test_a_failing_backend_answers_200_with_the_error_in_the_result_block(
    setup: str, code: str, backends: SearchBackends, caplog: pytest.LogCaptureFixture
) -> None:
    options: dict[str, Any] = {}
    if setup == "slow":
        backends.delay, options = 2.0, {"timeout_s": 0.3}
    elif setup == "rate_limited":
        backends.status = 429
    search = searching(backends, "brave", **options)
    if setup == "down":
        search = SearchSettings("searxng", "http://127.0.0.1:9", "", "")
    elif setup == "refused_key":
        search = SearchSettings("brave", backends.url("brave"), "wrong-key-9876", "BRAVE_API_KEY")
    with proxy_for(summary, search=search) as proxy:
        with caplog.at_level(logging.WARNING, logger="kimi_proxy.search"):
            events = events_of(proxy, SIDE_CALL)
        health = httpx.get(f"{proxy.url}/health", timeout=2)
    result = events[5]["content_block"]
    assert result["content"] == {"type": "web_search_tool_result_error", "error_code": code}
    assert check_grammar(events) == ["server_tool_use", "web_search_tool_result", "text"]
    assert "server_tool_use" not in events[-2]["usage"]  # a failed search is not billed
    lines = [r.getMessage() for r in caplog.records if r.name == "kimi_proxy.search"]
    assert len(lines) == 1, lines
    assert "9876" not in lines[0] and KEY not in lines[0]
    if setup == "refused_key":
        assert "BRAVE_API_KEY" in lines[0]
    assert health.status_code == 200


def test_allowed_and_blocked_domains_hold_whatever_the_backend_does(
    backends: SearchBackends,
) -> None:
    allowed = {
        **SIDE_CALL,
        "tools": [{**SIDE_CALL["tools"][0], "allowed_domains": ["example.com", "example.org"]}],
    }
    blocked = {
        **SIDE_CALL,
        "tools": [{**SIDE_CALL["tools"][0], "blocked_domains": ["docs.example.com"]}],
    }
    with proxy_for(summary, search=searching(backends, "searxng")) as proxy:
        kept = events_of(proxy, allowed)[5]["content_block"]["content"]
    with proxy_for(summary, search=searching(backends, "tavily")) as proxy:
        dropped = events_of(proxy, blocked)[5]["content_block"]["content"]
    assert [r["url"] for r in kept] == [PAGES[0][0], PAGES[1][0]]
    assert "(site:example.com OR site:example.org)" in backends.asked[0].query
    assert [r["url"] for r in dropped] == [PAGES[1][0], PAGES[2][0]]
    assert backends.asked[1].body is not None
    assert backends.asked[1].body["exclude_domains"] == ["docs.example.com"]


def test_max_uses_reached_is_reported_in_the_block_and_the_model_told(
    backends: SearchBackends,
) -> None:
    def searches_twice(body: dict[str, Any], call: int) -> Reply:
        done = sum(m["role"] == "tool" for m in body["messages"])
        if done < 2:
            return tool_stream([("web_search", {"query": f"q{done}"})], first_id=done)
        return text_stream("Done: " + content_text(body["messages"][-1]["content"]))

    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 500,
        "messages": [{"role": "user", "content": "search twice"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
    }
    with proxy_for(searches_twice, search=searching(backends, "exa")) as proxy:
        events = events_of(proxy, body)
    results = [
        e["content_block"]["content"]
        for e in events
        if e["type"] == "content_block_start"
        and e["content_block"]["type"] == "web_search_tool_result"
    ]
    assert isinstance(results[0], list) and len(results[0]) == 3
    assert results[1] == {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}
    assert events[-2]["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert "max_uses_exceeded" in events[-4]["delta"]["text"]
    assert len(backends.asked) == 1


def test_without_a_backend_the_answer_says_what_to_set_not_an_api_error() -> None:
    with proxy_for(summary) as proxy:
        events = events_of(proxy, SIDE_CALL)
    assert check_grammar(events) == ["text"]
    text = events[2]["delta"]["text"]
    assert "BRAVE_API_KEY" in text and "SEARXNG_URL" in text and "[search]" in text
    assert not proxy.upstream.bodies  # no model was asked to guess


def test_searches_are_metered_and_priced_for_usage_rows_and_the_dashboard(
    backends: SearchBackends,
) -> None:
    search = searching(backends, "brave", price_per_1k=5.0)
    with proxy_for(summary, search=search) as proxy:
        events_of(proxy, SIDE_CALL)
        [row] = proxy_state(proxy.app).feed.finished_rows()
    assert row["web_searches"] == 1
    assert row["cost_usd"] == pytest.approx(0.005)  # the scripted model's tokens cost nothing
    record = RequestRecord("r", "POST", "/v1/messages")
    record.provider, record.user = "p", "alice"
    record.searched(2, 5.0)
    assert {k.rsplit("\x1f", 1)[1]: v for k, v in increments(record).items()}["web_searches"] == 2


def test_when_no_provider_answers_the_side_call_the_results_are_the_answer(
    backends: SearchBackends,
) -> None:
    """The search ran; the summary's model is out of reach: Claude Code still gets the
    results' titles, links and snippets as the text, not an error."""
    with proxy_for(
        lambda body, n: outage(), search=searching(backends, "exa"), max_retries=0
    ) as proxy:
        events = events_of(proxy, SIDE_CALL)
    assert check_grammar(events) == ["server_tool_use", "web_search_tool_result", "text"]
    text = "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )
    for url, title, snippet in PAGES:
        assert url in text and title in text and snippet in text
    assert events[-2]["usage"]["server_tool_use"] == {"web_search_requests": 1}


def test_the_users_country_reaches_the_backends_that_take_one(backends: SearchBackends) -> None:
    located = {
        **SIDE_CALL,
        "tools": [
            {
                **SIDE_CALL["tools"][0],
                "user_location": {"type": "approximate", "country": "DE", "city": "Berlin"},
            }
        ],
    }
    with proxy_for(summary, search=searching(backends, "brave")) as proxy:
        events_of(proxy, located)
    with proxy_for(summary, search=searching(backends, "exa")) as proxy:
        events_of(proxy, located)
    assert backends.asked[0].params["country"] == "de"
    assert backends.asked[1].body is not None and backends.asked[1].body["userLocation"] == "DE"


def test_a_backend_answer_over_4_mb_is_cut_off_and_reported_unavailable(
    backends: SearchBackends,
) -> None:
    backends.pages = [("https://big.example.com/", "Big", "x" * (5 * 2**20))]
    with proxy_for(summary, search=searching(backends, "searxng")) as proxy:
        events = events_of(proxy, SIDE_CALL)
        health = httpx.get(f"{proxy.url}/health", timeout=5)
    assert events[5]["content_block"]["content"] == {
        "type": "web_search_tool_result_error",
        "error_code": "unavailable",
    }
    assert health.status_code == 200
