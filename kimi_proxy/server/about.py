"""What the proxy says about itself: the models it serves (`/v1/models`), liveness
(`/health`), readiness (`/ready`), metrics and Claude Code's connectivity probe."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from kimi_proxy import __version__
from kimi_proxy.providers.choice import FAMILY_ALIAS_PREFIX
from kimi_proxy.providers.models import DEFAULT_ALIASES
from kimi_proxy.providers.pool import Pool
from kimi_proxy.providers.routing import unservable

from .bodies import json_response
from .state import ProxyState

MODEL_CREATED_AT = "2025-01-01T00:00:00Z"


def _model_entry(model_id: str, display_name: str, context: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": MODEL_CREATED_AT,
    }
    if context is not None:
        entry["max_input_tokens"] = context
    return entry


def _serves(pool: Pool, model_id: str) -> str:
    """What a client model id reaches: its family and the candidates that serve it."""
    route = "background" if "haiku" in model_id.lower() else "default"
    live = [c.label for c in pool.live(pool.candidates(route, model_id))]
    if pool.spec.legacy_router is not None:
        return ", ".join(live) or "nothing"
    return f"{pool.spec.family_for(route)}: {', '.join(live) or 'nothing'}"


def model_name(model: str) -> str:
    """`kimi-k2.6` → `Kimi K2.6`; a provider's path (`moonshotai/…`) left out."""
    words = model.rsplit("/", 1)[-1].replace("_", "-").split("-")
    return " ".join(w[:1].upper() + w[1:] for w in words if w)


def _family_entries(pool: Pool) -> list[dict[str, Any]]:
    """Each family, and its `claude-<family>` alias (the id Claude Code's picker keeps), named
    after the model that serves it first, with its context window."""
    entries = []
    for family, candidates in pool.spec.families.items():
        live = pool.live(candidates)
        if not live:
            continue
        first = live[0]
        name = f"{model_name(first.model)} via {first.provider}"
        context = first.limits.context_window
        entries.append(_model_entry(f"{FAMILY_ALIAS_PREFIX}{family}", name, context))
        entries.append(_model_entry(family, name, context))
    return entries


async def list_models(request: Request) -> Response:
    """Claude's ids, each naming the family and candidates it reaches, then every family and
    its `claude-<family>` alias (Claude Code's gateway model discovery lists them in `/model`)."""
    pool: Pool = request.app.state.proxy.pool
    data = [
        _model_entry(alias, f"{alias} → {_serves(pool, alias)} (kimi-proxy)")
        for alias in DEFAULT_ALIASES
    ]
    if pool.spec.legacy_router is None:
        data += _family_entries(pool)
    return json_response(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def get_model(request: Request) -> Response:
    pool: Pool = request.app.state.proxy.pool
    model_id = request.path_params["model_id"]
    for entry in _family_entries(pool) if pool.spec.legacy_router is None else ():
        if entry["id"] == model_id:
            return json_response(entry)
    return json_response(
        _model_entry(model_id, f"{model_id} → {_serves(pool, model_id)} (kimi-proxy)")
    )


async def health(request: Request) -> Response:
    """Liveness, open to anyone: no URL, no key, nothing a stranger could use. `config_id` (a
    digest of the setup) and `context_window` are what the launcher reads."""
    state = request.app.state.proxy
    pool: Pool = state.pool
    first = pool.first_candidate("default", "claude-sonnet")
    now = pool.clock()
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "provider": first.provider if first else None,
            "config_id": pool.spec.config_id(),
            "context_window": pool.spec.smallest_window(),
            "families": {
                family: [c.label for c in pool.live(candidates)]
                for family, candidates in pool.spec.families.items()
            },
            "api_key_configured": any(k.disabled is None for k in pool.all_keys()),
            # Keys the provider refused, checked again soon (doctor says so; no key's name).
            "keys_rechecking": [
                {"provider": k.provider.name, "recheck_in_s": round(k.recheck_at - now, 1)}
                for k in pool.all_keys()
                if k.disabled is not None and k.recheck_at is not None
            ],
            "active_streams": state.active_streams,
            "time": time.time(),
            **({"launch_id": state.settings.launch_id} if state.settings.launch_id else {}),
        }
    )


async def ready(request: Request) -> Response:
    """Readiness: 503 once the instance is draining, while no candidate can be served (a
    broken configuration then does not roll out), or while Redis is down under `fail_closed`
    (liveness is `/health`, which never asks Redis)."""
    state: ProxyState = request.app.state.proxy
    if state.draining:
        return json_response({"status": "draining", "active_streams": state.active_streams}, 503)
    pool: Pool = state.pool
    if (why := unservable(pool)) is not None:
        return json_response({"status": "no_candidate", "reason": why}, 503)
    users = state.gateway.users
    if users is not None and not users.known:  # every request would be refused: not ready
        status = "users_unreadable" if users.problem else "users_unknown"
        reason = users.problem or "The users have not been read from Redis yet."
        return json_response({"status": status, "reason": reason}, 503)
    link = state.gateway.link
    answer: dict[str, Any] = {"status": "ready", "active_streams": state.active_streams}
    if link is not None:
        answer["redis"] = "up" if link.up else "down"
        if state.gateway.refusing:
            return json_response({**answer, "status": "redis_down", "policy": "fail_closed"}, 503)
    return json_response(answer)


async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    registry = request.app.state.proxy.metrics.registry
    # Rendered in a worker thread: the event loop keeps serving streams during a scrape.
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def hello(request: Request) -> Response:
    """Claude Code's connectivity probe (`HEAD /api/hello`)."""
    return Response(status_code=200)
