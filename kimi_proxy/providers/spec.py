"""What the pool is made of, once the configuration has been read: providers with their keys,
the candidate models of each family, and which family serves which route. Plain frozen data;
`kimi_proxy.config` builds it from the TOML file or the environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from kimi_proxy.protocol.profile import ModelLimits, ProviderProfile

from .catalog import Dialect, Window
from .models import ModelRouter

DEFAULT_FAMILY = "kimi"
DEFAULT_CONTEXT_WINDOW = 131072  # when no candidate names its model's window


class RouteConfig(BaseModel):
    """The `[route]` table: which family serves each kind of request, and how long a request
    may wait for a key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str = DEFAULT_FAMILY
    background: str | None = None  # Claude Code's small/fast (haiku) slot
    subagent: str | None = None  # requests with x-claude-code-agent-id
    thinking: str | None = None  # requests with thinking enabled
    long_context: str | None = None  # requests whose input estimate is over the threshold
    long_context_tokens: Annotated[int, Field(gt=0)] = 100_000
    max_wait_s: Annotated[float, Field(ge=0)] = 20.0
    #: A key disabled for 401/403 is asked `GET /models` again after this long (doubling, up
    #: to 15 minutes, while it keeps failing) and serves again once the provider accepts it.
    key_recheck_s: Annotated[float, Field(gt=0, le=900)] = 60.0
    #: The family that describes images for a route whose candidates read text only.
    vision: str | None = None

    @cached_property
    def families(self) -> Mapping[str, str]:
        """Route name → family, for the routes that are set (worked out once: the routing
        asks it for every request)."""
        named = {
            "default": self.default,
            "background": self.background,
            "subagent": self.subagent,
            "thinking": self.thinking,
            "long_context": self.long_context,
        }
        return MappingProxyType({route: family for route, family in named.items() if family})


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str  # the variable it came from, or its last four characters: never the key
    secret: str = field(repr=False)  # empty for a provider with `auth = "none"`

    def headers(self) -> dict[str, str]:
        """The request headers that carry this key (none for a keyless provider)."""
        return {"authorization": f"Bearer {self.secret}"} if self.secret else {}


#: The one "key" of a provider with `auth = "none"`.
NO_KEY = KeySpec("no key", "")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    base_url: str
    dialect: Dialect
    profile: ProviderProfile
    keys: tuple[KeySpec, ...]
    limits: tuple[tuple[str, Window, int], ...] = ()
    #: Where its base_url is set, for error advice: a variable, or the config file's entry.
    url_setting: str = "its base_url in the provider catalog"


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    provider: str
    model: str
    limits: ModelLimits

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    providers: dict[str, ProviderSpec]
    families: dict[str, tuple[CandidateSpec, ...]]
    routes: RouteConfig
    #: Legacy single-provider settings: client model → provider model by rule, no families.
    legacy_router: ModelRouter | None = None
    notes: tuple[str, ...] = ()  # what was skipped and why: logged once at start-up
    source: str = "environment"

    def family_for(self, route: str) -> str:
        return self.routes.families.get(route) or self.routes.default

    def candidates(self, route: str, client_model: str) -> tuple[CandidateSpec, ...]:
        """What serves a request on `route` for `client_model`, in order of preference."""
        if self.legacy_router is not None:
            return self.families.get(self.legacy_router.resolve(client_model), ())
        return self.families.get(self.family_for(route), ())

    @property
    def has_keys(self) -> bool:
        return any(p.keys for p in self.providers.values())

    def config_id(self) -> str:
        """A short digest of the providers, keys and families: equal for two proxies started
        with the same setup (the launcher reuses a running proxy only then). A digest, so the
        keys cannot be read back from it."""
        parts = [self.source, repr(sorted(self.routes.families.items()))]
        for name in sorted(self.providers):
            provider = self.providers[name]
            parts += [name, provider.base_url, *(k.secret for k in provider.keys)]
        for family in sorted(self.families):
            parts += [family, *(c.label for c in self.families[family])]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    def smallest_window(self, default: int = DEFAULT_CONTEXT_WINDOW) -> int:
        """The smallest context window of the models Claude Code's main and background
        requests may be routed to (a failover must not meet a window Claude Code has not
        compacted for); `default` when none is named."""
        windows = [
            candidate.limits.context_window
            for route, model in (("default", "claude-sonnet"), ("background", "claude-haiku"))
            for candidate in self.candidates(route, model)
        ]
        return min(windows, default=default)

    @property
    def usable(self) -> bool:
        """Whether any route has a candidate to serve it (a key, or a keyless provider)."""
        return any(self.families.values())
