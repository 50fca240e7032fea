"""The gateway's settings: from the environment (`KIMI_REDIS_URL`, `KIMI_ON_REDIS_DOWN`) or the
config file's `[gateway]` table, the environment winning. Without a Redis URL, users live in the
users file and every budget in the process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Policy = Literal["fail_open", "fail_closed"]
DEFAULT_USER_CONCURRENCY = 8
DEFAULT_COUNT_TOKENS_PER_MINUTE = 120


class GatewayFileConfig(BaseModel):
    """`[gateway]` in the config file (docs/CONFIG.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str | None = None  # ${VAR} is replaced by the variable's value
    on_redis_down: Policy = "fail_open"
    lease_seconds: Annotated[float, Field(gt=0, le=3_600)] = 30.0
    usage_retention_days: Annotated[int, Field(gt=0, le=3_650)] = 90
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] = "kimi"
    #: Streams at once for a user without a concurrency limit of their own: no one user can
    #: take every slot of the gateway (`KIMI_MAX_STREAMS`).
    user_concurrency: Annotated[int, Field(gt=0, le=10_000)] = DEFAULT_USER_CONCURRENCY
    #: `count_tokens` requests a minute per user: they reach no provider, but each costs the
    #: instance its body's work.
    count_tokens_per_minute: Annotated[int, Field(gt=0, le=1_000_000)] = (
        DEFAULT_COUNT_TOKENS_PER_MINUTE
    )


@dataclass(frozen=True, slots=True)
class Gateway:
    redis_url: str | None  # secret: may carry a password; never logged
    on_redis_down: Policy
    lease_ms: int
    retention_days: int
    prefix: str
    user_concurrency: int = DEFAULT_USER_CONCURRENCY
    count_tokens_per_minute: int = DEFAULT_COUNT_TOKENS_PER_MINUTE

    @property
    def fail_closed(self) -> bool:
        return self.on_redis_down == "fail_closed"


def gateway_from(
    file: GatewayFileConfig, redis_url: str | None, on_redis_down: Policy | None
) -> Gateway:
    """The file's `[gateway]` (expanded), with the environment's values over it."""
    return Gateway(
        redis_url=(redis_url or file.redis_url or "").strip() or None,
        on_redis_down=on_redis_down or file.on_redis_down,
        lease_ms=int(file.lease_seconds * 1000),
        retention_days=file.usage_retention_days,
        prefix=file.key_prefix,
        user_concurrency=file.user_concurrency,
        count_tokens_per_minute=file.count_tokens_per_minute,
    )
