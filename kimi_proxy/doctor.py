"""`kimi-proxy doctor`: check the key, reach the provider, stream one token, read the key's
tokens-per-minute limit; say what to fix."""

from __future__ import annotations

import asyncio
import sys

import httpx

from .app import new_transport, new_upstream
from .config import Settings
from .errors import CLAUDE_CODE_PROMPT_TOKENS, KEY_ADVICE, TOKEN_LIMIT_ADVICE, ProxyError
from .upstream import MIN_ANSWER_TOKENS, CallContext

# Groq and OpenAI name the key's tokens-per-minute limit in this header on every answer.
TOKEN_LIMIT_HEADER = "x-ratelimit-limit-tokens"
# Auto mode's built-in check (Claude Code 2.1.328, which the launcher turns on) sends the main
# model about 35,400 tokens of rules and transcript, by the proxy's estimate, per action checked.
AUTO_MODE_CHECK_TOKENS = 36_000


def _say(ok: bool, text: str) -> None:
    print(f"{'✅' if ok else '❌'} {text}")


async def _check(settings: Settings) -> bool:
    api_key = settings.api_key_value
    if api_key is None:
        _say(False, f"No API key. {KEY_ADVICE}")
        return False
    _say(True, "API key is set (not shown).")
    async with new_transport(settings) as transport:
        client = new_upstream(settings.model_copy(update={"max_retries": 0}), transport)
        for model in dict.fromkeys((settings.model, settings.small_model)):
            payload = {
                "model": model,
                "max_tokens": 1,
                "stream": True,
                "messages": [{"role": "user", "content": "Say OK."}],
            }
            try:
                response = await client.open(payload, CallContext(model=model))
                limit = response.headers.get(TOKEN_LIMIT_HEADER, "")
                try:
                    async for _batch in client.chunk_batches(response):
                        pass
                finally:
                    await response.aclose()
            except ProxyError as exc:
                _say(False, f"{model} at {settings.upstream_url}: {exc.message}")
                return False
            except httpx.HTTPError as exc:
                _say(False, f"Cannot reach {settings.upstream_url}: {exc}")
                return False
            _say(True, f"{model} streams a reply from {settings.upstream_url}.")
            if limit.isdigit():
                if not _token_limit_fits(model, int(limit)):
                    return False
                if model == settings.model:
                    _warn_if_auto_mode_checks_cannot_fit(model, int(limit))
    return True


def _warn_if_auto_mode_checks_cannot_fit(model: str, limit: int) -> None:
    if limit < AUTO_MODE_CHECK_TOKENS:
        print(
            f"⚠️ {model}: auto mode's safety check sends about {AUTO_MODE_CHECK_TOKENS:,} tokens "
            f"for each action it checks, more than this key allows a minute: Claude Code will "
            "block those actions. Raise the limit, or pick another permission mode (Shift+Tab in "
            "Claude Code, or ./kimi.sh --permission-mode acceptEdits)."
        )


def _token_limit_fits(model: str, limit: int) -> bool:
    """Whether the key's tokens a minute leave room for one Claude Code request and an answer."""
    needed = CLAUDE_CODE_PROMPT_TOKENS + MIN_ANSWER_TOKENS
    if limit < needed:
        _say(
            False,
            f"{model}: this key allows {limit:,} tokens a minute, and one Claude Code request "
            f"needs about {needed:,} (its instructions and tool definitions, then the answer): "
            f"the provider will refuse them. {TOKEN_LIMIT_ADVICE}",
        )
        return False
    _say(True, f"{model}: this key allows {limit:,} tokens a minute.")
    return True


def run_doctor(settings: Settings) -> int:
    ok = asyncio.run(_check(settings))
    print(
        "All good: run ./kimi.sh" if ok else "Fix the item marked ❌ and run doctor again.",
        file=sys.stdout,
    )
    return 0 if ok else 1
