"""Which candidates a request may go to, and what the request record says about where it went:
the glue between the route handler and the provider pool."""

from __future__ import annotations

from starlette.datastructures import Headers

from .errors import (
    KEY_ADVICE,
    AuthenticationError,
    InvalidRequestError,
    ProxyError,
)
from .models import ModelRouter
from .observability import RequestRecord
from .pool_config import CandidateSpec
from .protocol.anthropic import MessagesRequest
from .providers.call import Call, Opened
from .providers.pool import Pool
from .state import ProxyState
from .tokens import estimate_tokens
from .translate.request import UpstreamRequest, anthropic_to_openai_request, has_images


def route_of(request: MessagesRequest, headers: Headers, prompt_tokens: int, long: int) -> str:
    """Which route a request takes (`[route]` in the config file maps each to a family)."""
    if prompt_tokens > long:
        return "long_context"
    if "haiku" in request.model.lower():
        return "background"
    if headers.get("x-claude-code-agent-id"):
        return "subagent"
    thinking = (request.model_extra or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        return "thinking"
    return "default"


def plan_call(
    state: ProxyState,
    message_request: MessagesRequest,
    headers: Headers,
    record: RequestRecord,
    raw: bytes | None = None,
) -> Call:
    """The pool call for this request: its route's candidates, and how to translate for each.

    With `raw` (the body as it came), the call keeps those bytes instead of the parsed request
    for translating to another candidate: 50 KB a stream instead of the parsed objects, parsed
    again only when a failover needs it.
    """
    pool = state.pool
    settings = state.settings
    parsed: list[MessagesRequest] = [message_request]

    def build(candidate: CandidateSpec) -> UpstreamRequest:
        profile = pool.spec.providers[candidate.provider].profile
        source = parsed[0] if parsed else MessagesRequest.model_validate_json(raw or b"")
        return anthropic_to_openai_request(
            source,
            router=ModelRouter.fixed(candidate.model),
            profile=profile,
            max_output_tokens=settings.max_output_tokens,
            served_by=candidate.provider,
        )

    routes = pool.spec.routes
    first = pool.first_candidate("default", message_request.model)
    if first is None:
        raise no_candidate_error(pool, message_request.model)
    preview = build(first)
    prompt_tokens = estimate_tokens(preview.payload)
    route = route_of(message_request, headers, prompt_tokens, routes.long_context_tokens)
    candidates = pool.candidates(route, message_request.model)
    if not candidates:
        raise no_candidate_error(pool, message_request.model)
    if has_images(message_request):  # to a model that sees them first; the others get a note
        candidates = tuple(sorted(candidates, key=lambda c: not c.limits.accepts_images))
    record.route = route
    record.family = (
        pool.spec.family_for(route) if pool.spec.legacy_router is None else candidates[0].model
    )
    record.session = headers.get("x-claude-code-session-id")
    record.agent = headers.get("x-claude-code-agent-id")
    call = pool.call(
        candidates,
        build,
        prompt_tokens=prompt_tokens,
        answer_tokens=min(message_request.max_tokens, settings.max_output_tokens or 1 << 30),
        session=record.session,
    )
    call.built[first.label] = preview
    if raw is not None:
        parsed.clear()
    else:  # agent mode: the loop edits the payload step by step
        call.keep_payload = True
    return call


def unservable(pool: Pool) -> str | None:
    """Why no request can be served (no candidate, every model retired, every key disabled),
    or None: what `/ready` answers 503 for."""
    candidates = [c for family in pool.spec.families.values() for c in family]
    if not candidates:
        notes = " ".join(pool.spec.notes)
        return f"No provider key or usable candidate is configured. {notes}".strip()
    live = [c for c in candidates if c.label not in pool.retired]
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


def note_target(record: RequestRecord, call: Call, opened: Opened) -> None:
    candidate = opened.target.candidate
    record.model_used = candidate.model
    record.provider = candidate.provider
    record.prices = candidate.limits.prices
    record.context_window = candidate.limits.context_window
    record.key = opened.target.key.key.name
    record.retries = call.retries
    record.failovers = call.failovers
    record.waited_ms = round(call.waited * 1000, 1)
