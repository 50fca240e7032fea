"""Which candidates a request may go to: its route (`[route]` in the config file), the call
through the pool that tries them, and why nothing can serve it when nothing can."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kimi_proxy.errors import (
    KEY_ADVICE,
    AuthenticationError,
    InvalidRequestError,
    ProxyError,
)
from kimi_proxy.protocol.anthropic import MessagesRequest
from kimi_proxy.protocol.record import client_id
from kimi_proxy.translate.calibration import Prompt, measure
from kimi_proxy.translate.messages import has_images
from kimi_proxy.translate.request import UpstreamRequest, anthropic_to_openai_request

from .call import Call
from .catalog import load_catalog
from .choice import Choice, choose
from .models import ModelRouter
from .pool import Pool
from .spec import CandidateSpec

T = TypeVar("T")


def route_of(
    request: MessagesRequest, headers: Mapping[str, str], prompt_tokens: int, long: int
) -> str:
    """Which route a request takes (`[route]` in the config file maps each to a family)."""
    if prompt_tokens > long:
        return "long_context"
    if "haiku" in request.model.lower():
        return "background"
    if client_id(headers.get("x-claude-code-agent-id")):
        return "subagent"
    thinking = (request.model_extra or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        return "thinking"
    return "default"


@dataclass(frozen=True, slots=True)
class Planned:
    """A request's way through the pool: the call, the route it took and the family serving it."""

    call: Call
    route: str
    family: str


class Offload(Protocol):
    """Where a request's heavy, pure work runs: here, or off the event loop (a large body)."""

    def __call__(self, work: Callable[[], T], /) -> Awaitable[T]: ...


async def inline(work: Callable[[], T], /) -> T:
    return work()


async def plan_call(
    pool: Pool,
    message_request: MessagesRequest,
    headers: Mapping[str, str],
    *,
    max_output_tokens: int | None,
    raw: bytes | None = None,
    offload: Offload = inline,
) -> Planned:
    """The pool call for this request: its route's candidates, and how to translate for each.

    With `raw` (the body as it came), the call keeps those bytes instead of the parsed request
    for translating to another candidate: 50 KB a stream instead of the parsed objects, parsed
    again only when a failover needs it.
    """
    parsed: list[MessagesRequest] = [message_request]

    def build(candidate: CandidateSpec) -> UpstreamRequest:
        profile = pool.spec.providers[candidate.provider].profile
        source = parsed[0] if parsed else MessagesRequest.model_validate_json(raw or b"")
        return anthropic_to_openai_request(
            source,
            router=ModelRouter.fixed(candidate.model),
            profile=profile,
            max_output_tokens=max_output_tokens,
            served_by=candidate.provider,
        )

    routes = pool.spec.routes
    model = message_request.model
    choice = choose(pool.spec, model, load_catalog())
    first = pool.first_live(candidates_for(pool, choice, "default", model))
    if first is None:
        raise no_candidate_error(pool, model)

    def translate_first() -> tuple[UpstreamRequest, Prompt, bool]:
        preview = build(first)
        images = has_images(message_request)  # a walk over the blocks: 1–8 µs
        return preview, measure(preview.payload), images

    preview, prompt, images = await offload(translate_first)
    prompt_tokens = pool.calibration(first.model).estimate(prompt)
    route = route_of(message_request, headers, prompt_tokens, routes.long_context_tokens)
    candidates = candidates_for(pool, choice, route, model)
    if not candidates:
        raise no_candidate_error(pool, model)
    # To a model that sees images first (the others get a note); the bytes rule most out.
    if images:
        candidates = tuple(sorted(candidates, key=lambda c: not c.limits.accepts_images))
    if choice.family is not None:
        family = choice.family
    elif pool.spec.legacy_router is None:
        family = pool.spec.family_for(route)
    else:
        family = candidates[0].model
    call = Call.start(
        pool,
        candidates,
        build,
        prompt_tokens=prompt_tokens,
        # What may be sent: Claude Code asks 128,000, a candidate's cap may be far lower (a
        # user's token limit counts this, not the ask).
        answer_tokens=min(
            message_request.max_tokens,
            max_output_tokens or 1 << 30,
            max(c.limits.output_tokens for c in candidates),
        ),
        session=client_id(headers.get("x-claude-code-session-id")),
    )
    call.built[first.label] = preview
    call.prompt = prompt
    if raw is not None:
        parsed.clear()
    else:  # agent mode: the loop edits the payload step by step
        call.keep_payload = True
    return Planned(call, route, family)


def candidates_for(pool: Pool, choice: Choice, route: str, model: str) -> tuple[CandidateSpec, ...]:
    """What serves a request: the candidates its model id names, else its route's."""
    if choice.candidates is not None:
        return choice.candidates
    return pool.candidates(route, model)


def first_candidate_for(pool: Pool, model: str) -> CandidateSpec | None:
    """The candidate a request for `model` would try first (`count_tokens` counts for it)."""
    choice = choose(pool.spec, model, load_catalog())
    return pool.first_live(candidates_for(pool, choice, "default", model))


def unservable(pool: Pool) -> str | None:
    """Why no request can be served (no candidate, every model retired, every key disabled),
    or None: what `/ready` answers 503 for."""
    candidates = [c for family in pool.spec.families.values() for c in family]
    if not candidates:
        notes = " ".join(pool.spec.notes)
        return f"No provider key or usable candidate is configured. {notes}".strip()
    live = pool.live(candidates)
    if not live:
        return f"Every candidate model is retired: {pool.retired_summary()}"
    if not any(k.disabled is None for c in live for k in pool.keys.get(c.provider, ())):
        return f"Every provider key was rejected: {pool.disabled_summary()}"
    return None


def no_candidate_error(pool: Pool, model: str) -> ProxyError:
    if not any(pool.all_keys()):
        return AuthenticationError(f"No provider API key is configured. {KEY_ADVICE}")
    gone = pool.retired_summary()
    return InvalidRequestError(
        f"No model is left to serve {model!r}" + (f" ({gone})" if gone else "") + ". Update the "
        "candidates in your config file (docs/CONFIG.md), or run kimi-proxy doctor."
    )
