"""The provider catalog (`catalog.toml`, package data) loaded once into typed values."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib.resources import files
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from kimi_proxy.protocol.profile import ModelLimits, Prices, ProviderProfile

GENERIC_NAME = "openai-compatible"
Window = Literal["minute", "day"]
ResetFormat = Literal["duration", "seconds", "epoch_ms"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeaderNames(_Strict):
    """The headers of one limit (requests or tokens) and the window it counts."""

    limit: str
    remaining: str
    reset: str
    window: Window


class Dialect(_Strict):
    """How a provider reports its rate limits."""

    requests: HeaderNames | None = None
    tokens: HeaderNames | None = None
    reset_format: ResetFormat = "duration"


class CatalogModel(_Strict):
    id: str
    family: str | None = None
    context_window: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    images: bool = False
    reasoning: bool = False
    temperature: float | None = None
    shutdown: date | None = None
    replacement: str | None = None
    price_input: float = 0.0
    price_cached_input: float = 0.0
    price_output: float = 0.0
    thinking_param: str | None = None
    reasoning_required_on_tool_calls: bool = False
    forced_tool_choice_with_thinking: bool = True
    json_schema: bool = False

    def limits(self) -> ModelLimits:
        return ModelLimits(
            output_tokens=self.output_tokens,
            context_window=self.context_window,
            accepts_images=self.images,
            reasoning=self.reasoning,
            fixed_temperature=self.temperature,
            shutdown=self.shutdown,
            replacement=self.replacement,
            family=self.family,
            prices=Prices(self.price_input, self.price_cached_input, self.price_output),
            thinking_param=self.thinking_param,
            reasoning_required_on_tool_calls=self.reasoning_required_on_tool_calls,
            forced_tool_choice_with_thinking=self.forced_tool_choice_with_thinking,
            json_schema=self.json_schema,
        )


class CatalogProvider(_Strict):
    base_url: str
    key_env: str
    dialect: str
    hosts: list[str] = []
    max_tools: int = 128
    supports_top_k: bool = False
    reasoning_history_field: str | None = None
    temperature_scale: float = 1.0
    kimi_tool_ids: bool = False
    overflow_pattern: str | None = None
    default_context_window: int = 131072
    default_output_tokens: int = 16384
    model: list[CatalogModel] = []


class CatalogFile(_Strict):
    dialect: dict[str, Dialect]
    provider: dict[str, CatalogProvider]


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """A catalog provider: where it is, its key variable, its dialect and its profile."""

    name: str
    base_url: str
    key_env: str
    dialect_name: str
    dialect: Dialect
    hosts: tuple[str, ...]
    profile: ProviderProfile

    def models_of_family(self, family: str) -> list[str]:
        return [mid for mid, limits in self.profile.models.items() if limits.family == family]


@dataclass(frozen=True, slots=True)
class Catalog:
    providers: dict[str, ProviderEntry]
    dialects: dict[str, Dialect]

    def get(self, name: str) -> ProviderEntry | None:
        return self.providers.get(name)

    def for_url(self, url: str) -> ProviderEntry:
        host = urlsplit(url).hostname or ""
        for entry in self.providers.values():
            if any(host == s or host.endswith("." + s) for s in entry.hosts):
                return entry
        return self.providers[GENERIC_NAME]


def _entry(name: str, raw: CatalogProvider, dialects: dict[str, Dialect]) -> ProviderEntry:
    models = {m.id: m.limits() for m in raw.model}
    profile = ProviderProfile(
        name=name,
        models=models,
        default_limits=ModelLimits(raw.default_output_tokens, raw.default_context_window),
        max_tools=raw.max_tools,
        supports_top_k=raw.supports_top_k,
        reasoning_history_field=raw.reasoning_history_field,
        temperature_scale=raw.temperature_scale,
        kimi_tool_ids=raw.kimi_tool_ids,
        overflow_pattern=raw.overflow_pattern,
    )
    return ProviderEntry(
        name=name,
        base_url=raw.base_url,
        key_env=raw.key_env,
        dialect_name=raw.dialect,
        dialect=dialects[raw.dialect],
        hosts=tuple(raw.hosts),
        profile=profile,
    )


def parse_catalog(data: dict[str, Any]) -> Catalog:
    raw = CatalogFile.model_validate(data)
    providers = {name: _entry(name, p, raw.dialect) for name, p in raw.provider.items()}
    generic = providers[GENERIC_NAME]
    # An unknown URL serving a model the catalog knows gets that model's limits.
    known = {mid: lim for e in providers.values() for mid, lim in e.profile.models.items()}
    providers[GENERIC_NAME] = ProviderEntry(
        name=generic.name,
        base_url=generic.base_url,
        key_env=generic.key_env,
        dialect_name=generic.dialect_name,
        dialect=generic.dialect,
        hosts=generic.hosts,
        profile=ProviderProfile(name=GENERIC_NAME, models=known),
    )
    return Catalog(providers=providers, dialects=raw.dialect)


@cache
def load_catalog() -> Catalog:
    """The packaged catalog, read once."""
    text = files("kimi_proxy.providers").joinpath("catalog.toml").read_text(encoding="utf-8")
    return parse_catalog(tomllib.loads(text))
