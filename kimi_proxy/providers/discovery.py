"""What each provider serves now: its live `GET /models`, checked against the candidates.

Model ids rot (PROVIDERS.md): a candidate the provider no longer lists is reported once, with
what it serves instead, and skipped — before a user's session meets it as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import httpx
import orjson

from .spec import CandidateSpec, KeySpec, ProviderSpec

log = logging.getLogger("kimi_proxy.pool")
SHOWN_IDS = 8  # how many served ids a message lists


async def served_models(
    transport: httpx.AsyncBaseTransport, provider: ProviderSpec, key: KeySpec, timeout: float
) -> set[str]:
    """The ids `GET {base_url}/models` lists; raises `httpx.HTTPError` or `ValueError`."""
    status, content = await models_answer(transport, provider, key, timeout)
    if status >= 400:
        raise httpx.HTTPStatusError(
            f"GET /models answered {status}",
            request=httpx.Request("GET", provider.base_url),
            response=httpx.Response(status),
        )
    return model_ids(content)


async def models_answer(
    transport: httpx.AsyncBaseTransport, provider: ProviderSpec, key: KeySpec, timeout: float
) -> tuple[int, bytes]:
    """`GET {base_url}/models` with `key`: its status and body. Sent on the shared transport
    directly: a client around it would close every connection of the pool when done."""
    request = httpx.Request(
        "GET",
        provider.base_url.rstrip("/") + "/models",
        headers=key.headers(),
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )
    response = await transport.handle_async_request(request)
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


def model_ids(content: bytes) -> set[str]:
    """The ids in a `GET /models` answer (`{"data": [{"id": …}]}` or a bare list); raises
    `ValueError` when it holds no list of models."""
    data = orjson.loads(content)
    entries = data.get("data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError("no list of models in the answer")
    return {str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e}


def unserved(
    candidates: Iterable[CandidateSpec], provider: str, served: set[str]
) -> list[tuple[CandidateSpec, str]]:
    """The candidates of `provider` that its list does not contain, each with the reason."""
    missing = []
    for candidate in candidates:
        if candidate.provider != provider or candidate.model in served:
            continue
        instead = candidate.limits.replacement
        suggestion = (
            f"{provider} suggests {instead}"
            if instead and instead in served
            else f"it serves {', '.join(sorted(served)[:SHOWN_IDS]) or 'nothing'}"
            + (" …" if len(served) > SHOWN_IDS else "")
        )
        missing.append((candidate, f"{provider} does not serve {candidate.model} ({suggestion})"))
    return missing
