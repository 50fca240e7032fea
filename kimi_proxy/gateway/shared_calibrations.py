"""Each model's token-count calibration on a gateway with Redis: one hash,
`{prefix}:calibration`, model → the calibration as JSON. Every instance reads it at start and
writes what it learned; the last write of a model wins (each is a full fit of its own)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

from redis.exceptions import RedisError

from .link import RedisLink


async def read_calibrations(link: RedisLink) -> dict[str, bytes]:
    """Model → saved calibration (JSON); empty when Redis does not answer."""
    try:
        saved = link.client.hgetall(f"{link.gateway.prefix}:calibration")
        fields = await cast("Awaitable[dict[bytes, bytes]]", saved)
    except (RedisError, OSError):
        return {}
    return {model.decode(): value for model, value in fields.items()}


async def write_calibrations(link: RedisLink, calibrations: dict[str, bytes]) -> None:
    if calibrations:
        try:
            written = link.client.hset(f"{link.gateway.prefix}:calibration", mapping=calibrations)
            await cast("Awaitable[int]", written)
        except (RedisError, OSError):
            pass  # the next save tries again
