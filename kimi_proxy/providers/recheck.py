"""Keys that come back: a key disabled for 401/403 is asked the provider's free `GET /models`
again after `[route] key_recheck_s`, the wait doubling (up to 15 minutes) while it keeps being
refused; the first time the provider accepts it, it serves again (providers return transient
401s, and a key fixed at the provider must not wait for a restart)."""

from __future__ import annotations

import asyncio
import logging

import httpx

from .discovery import models_answer
from .pool import KeyState, Pool

log = logging.getLogger("kimi_proxy.pool")
LONGEST_WAIT_S = 900.0
TICK_S = 0.25


async def keep_rechecking(pool: Pool, transport: httpx.AsyncBaseTransport, timeout: float) -> None:
    """Run for the app's life: each disabled key is asked again when its time comes."""
    while True:
        await asyncio.sleep(TICK_S)
        now = pool.clock()
        due = [k for k in pool.all_keys() if k.recheck_at is not None and k.recheck_at <= now]
        if due:
            await asyncio.gather(*(recheck(pool, key, transport, timeout) for key in due))


async def recheck(
    pool: Pool, key: KeyState, transport: httpx.AsyncBaseTransport, timeout: float
) -> None:
    try:
        status, _ = await models_answer(transport, key.provider, key.key, timeout)
    except httpx.HTTPError as exc:
        status = 0
        log.info("%s could not be checked again (%s)", key.label, type(exc).__name__)
    if 200 <= status < 300:
        pool.enable(key)
        return
    if status in (401, 403):  # still refused: ask less often
        key.recheck_every = min(key.recheck_every * 2, LONGEST_WAIT_S)
    key.recheck_at = pool.clock() + key.recheck_every
