"""`kimi-proxy doctor`: one line per provider and key — reachable, key valid, candidates
served, limits read — from each provider's `GET /models`, without a model call; then what
to fix."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import httpx

from kimi_proxy.config.pool_file import ConfigError, load_search
from kimi_proxy.config.settings import Settings
from kimi_proxy.errors import (
    CLAUDE_CODE_PROMPT_TOKENS,
    KEY_ADVICE,
    TOKEN_LIMIT_ADVICE,
    provider_error_message,
)
from kimi_proxy.providers.dialects import read_limits
from kimi_proxy.providers.discovery import model_ids, unserved
from kimi_proxy.providers.spec import KeySpec, PoolSpec, ProviderSpec
from kimi_proxy.server.app import new_transport
from kimi_proxy.upstream.client import MIN_ANSWER_TOKENS

from .claude_code import LaunchError
from .launch_plan import NoSetup, decide
from .launcher import gateway_target, health, look, proxy_url

# Auto mode's built-in check (Claude Code 2.1.328, which the launcher turns on) sends the main
# model about 35,400 tokens of rules and transcript, by the proxy's estimate, per action checked.
AUTO_MODE_CHECK_TOKENS = 36_000


def _say(ok: bool, text: str) -> None:
    print(f"{'✅' if ok else '❌'} {text}")


async def _check_key(
    client: httpx.AsyncClient, spec: PoolSpec, provider: ProviderSpec, key: KeySpec
) -> bool:
    label = f"{provider.name} key {key.name}"
    url = provider.base_url.rstrip("/") + "/models"
    try:
        response = await client.get(url, headers=key.headers())
    except httpx.HTTPError as exc:
        _say(False, f"{label}: cannot reach {url} ({type(exc).__name__}: {exc}).")
        return False
    if response.status_code in (401, 403):
        message = provider_error_message(response.content).replace(key.secret, "[REDACTED]")
        _say(
            False,
            f"{label}: the provider rejected the key (HTTP {response.status_code}: "
            f"{message}). {KEY_ADVICE}",
        )
        return False
    served: set[str] | None = None
    if response.status_code == 200:
        with contextlib.suppress(ValueError):
            served = model_ids(response.content)
    candidates = [c for family in spec.families.values() for c in dict.fromkeys(family)]
    mine = [c for c in dict.fromkeys(candidates) if c.provider == provider.name]
    ok = True
    parts = ["reachable, key valid"]
    if served is None:
        parts.append(f"no model list (HTTP {response.status_code})")
    else:
        missing = unserved(mine, provider.name, served)
        gone = {c.model for c, _ in missing}
        live = [c.model for c in mine if c.model not in gone]
        if live:
            parts.append("serves " + ", ".join(live))
        for _candidate, why in missing:
            parts.append(f"NOT SERVED: {why}")
        ok = not missing or bool(live)
    loop = asyncio.get_running_loop()
    reported = read_limits(provider.dialect, response.headers, loop.time(), 0.0)
    tpm = next((r.limit for r in reported if r.kind == "tokens" and r.window == "minute"), None)
    configured = dict(((k, w), n) for k, w, n in provider.limits)
    tpm = tpm or configured.get(("tokens", "minute"))
    if reported or configured:
        shown = [f"{r.limit or r.remaining:,} {r.kind} a {r.window}" for r in reported]
        shown += [f"{n:,} {k} a {w} (configured)" for (k, w), n in configured.items()]
        parts.append("limits: " + ", ".join(shown))
    else:
        parts.append("limits: none reported without a model call")
    _say(ok, f"{label}: " + "; ".join(parts) + ".")
    if tpm is not None:
        ok = _token_limit_fits(label, tpm) and ok
    return ok


async def _check(settings: Settings, spec: PoolSpec) -> bool:
    for note in spec.notes:
        print(f"⚠️ {note}")
    ok = True
    async with (
        new_transport(settings) as transport,
        httpx.AsyncClient(
            transport=transport, timeout=settings.connect_timeout + settings.read_timeout
        ) as client,
    ):
        for provider in spec.providers.values():
            for key in provider.keys:
                ok = await _check_key(client, spec, provider, key) and ok
    return ok


def _token_limit_fits(label: str, limit: int) -> bool:
    """Whether the key's tokens a minute leave room for one Claude Code request and an answer."""
    needed = CLAUDE_CODE_PROMPT_TOKENS + MIN_ANSWER_TOKENS
    if limit < needed:
        _say(
            False,
            f"{label}: this key allows {limit:,} tokens a minute, and one Claude Code request "
            f"needs about {needed:,} (its instructions and tool definitions, then the answer): "
            f"the provider will refuse them. {TOKEN_LIMIT_ADVICE}",
        )
        return False
    if limit < AUTO_MODE_CHECK_TOKENS:
        print(
            f"⚠️ {label}: auto mode's safety check sends about {AUTO_MODE_CHECK_TOKENS:,} tokens "
            f"for each action it checks, more than this key allows a minute: Claude Code will "
            "block those actions. Raise the limit, or pick another permission mode (Shift+Tab in "
            "Claude Code, or ./kimi.sh --permission-mode acceptEdits)."
        )
    return True


def rechecking(answer: object) -> list[str]:
    """A running proxy's keys that its provider refused, each checked again soon."""
    if not isinstance(answer, dict):
        return []
    return [
        f"{k.get('provider')}: a key is disabled (the provider refused it), rechecking in "
        f"{k.get('recheck_in_s', 0):.0f} s; it serves again once the provider accepts it"
        for k in answer.get("keys_rechecking") or ()
        if isinstance(k, dict)
    ]


def run_doctor(settings: Settings) -> int:
    """The launcher's decision first (`launch_plan.py`), then what that setup depends on: the
    team gateway and the user's key, or each provider key."""
    try:
        found, spec = look(settings)
    except ConfigError as exc:
        _say(False, str(exc))
        return 2
    plan = decide(found)
    if isinstance(plan, NoSetup):
        _say(False, plan.message)
        return 2
    print(f"./kimi.sh would be {plan.line}.")
    if plan.mode == "running":
        for line in rechecking(health(proxy_url(settings))):
            _say(False, line)
    if plan.mode == "gateway":
        try:
            target = gateway_target(settings)
        except LaunchError as exc:
            _say(False, str(exc))
            return 1
        _say(True, f"{target.url}: answers, and takes your key.")
        print("All good: run ./kimi.sh")
        return 0
    if spec is None or not spec.usable:  # a running proxy with keys that are not ours
        print("All good: run ./kimi.sh")
        return 0
    ok = asyncio.run(_check(settings, spec))
    try:
        search = load_search(settings, os.environ)
    except ConfigError as exc:
        _say(False, str(exc))
        ok = False
    else:
        print(
            f"🔎 Web search: {search.backend} at {search.url}"
            if search is not None
            else "🔎 Web search is off: set BRAVE_API_KEY, TAVILY_API_KEY, EXA_API_KEY or "
            "SEARXNG_URL (or [search] in the config file) for Claude Code's WebSearch."
        )
    print(
        "All good: run ./kimi.sh" if ok else "Fix the item marked ❌ and run doctor again.",
        file=sys.stdout,
    )
    return 0 if ok else 1
