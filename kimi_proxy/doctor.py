"""`kimi-proxy doctor`: check the key, reach the provider, stream one token; say what to fix."""

from __future__ import annotations

import asyncio
import sys

import httpx

from .app import new_transport, new_upstream
from .config import Settings
from .errors import KEY_ADVICE, ProxyError
from .upstream import CallContext


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
    return True


def run_doctor(settings: Settings) -> int:
    ok = asyncio.run(_check(settings))
    print(
        "All good: run ./kimi.sh" if ok else "Fix the item marked ❌ and run doctor again.",
        file=sys.stdout,
    )
    return 0 if ok else 1
