"""The provider pool's configuration: the TOML file, or the environment alone. Pure: the file's
text, the environment and today's date come in; a `PoolSpec` (or a `ConfigError` naming the
file, the key and what to do) comes out, with the lines to log about what was skipped.

Found at `--config`, `KIMI_PROXY_CONFIG`, or `~/.config/kimi-proxy/config.toml`. Without a file:
the legacy single-provider settings (`KIMI_UPSTREAM_URL`, `KIMI_MODEL`…) when any is set, else
every catalog provider whose key variable is set (`GROQ_API_KEY`, `MOONSHOT_API_KEY`…) joins
the pool and the `kimi` family is the Kimi models those keys reach. See docs/CONFIG.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kimi_proxy.protocol.profile import ModelLimits, Prices, ProviderProfile
from kimi_proxy.providers.catalog import Catalog, ProviderEntry, Window, load_catalog
from kimi_proxy.providers.models import ModelRouter
from kimi_proxy.providers.spec import (
    DEFAULT_FAMILY,
    NO_KEY,
    CandidateSpec,
    KeySpec,
    PoolSpec,
    ProviderSpec,
    RouteConfig,
)

from .gateway import Gateway, GatewayFileConfig, gateway_from
from .search import (
    DocumentsFileConfig,
    SearchConfigError,
    SearchFileConfig,
    SearchSettings,
    search_from,
)
from .settings import Settings
from .variables import expand, key_name

DEFAULT_CONFIG_PATH = Path("~/.config/kimi-proxy/config.toml")
LEGACY_FIELDS = frozenset({"upstream_url", "model", "small_model", "provider", "model_rules"})
#: A provider asking for a longer pause than this gets its 429 passed on (legacy single provider).
MAX_LEGACY_WAIT = 20.0


class ConfigError(Exception):
    """A configuration that cannot start the proxy; the message says where and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsConfig(_Strict):
    rpm: Annotated[int, Field(gt=0)] | None = None
    tpm: Annotated[int, Field(gt=0)] | None = None
    rpd: Annotated[int, Field(gt=0)] | None = None
    tpd: Annotated[int, Field(gt=0)] | None = None

    def windows(self) -> tuple[tuple[str, Window, int], ...]:
        pairs: list[tuple[str, Window, int | None]] = [
            ("requests", "minute", self.rpm),
            ("tokens", "minute", self.tpm),
            ("requests", "day", self.rpd),
            ("tokens", "day", self.tpd),
        ]
        return tuple((k, w, n) for k, w, n in pairs if n is not None)


class PricesConfig(_Strict):
    """USD per million tokens."""

    input: Annotated[float, Field(ge=0)] = 0.0
    cached_input: Annotated[float, Field(ge=0)] | None = None  # default: the input price
    output: Annotated[float, Field(ge=0)] = 0.0


class ModelConfig(_Strict):
    prices: PricesConfig | None = None


class ProviderConfig(_Strict):
    name: str = Field(min_length=1)
    base_url: str | None = None
    keys: list[str] = []
    #: `none`: a keyless server (Ollama, vLLM on your own machine): no Authorization header.
    auth: Literal["bearer", "none"] = "bearer"
    limits: LimitsConfig | None = None
    dialect: str | None = None
    #: Per model: its prices, for models the catalog does not know (or to override it).
    models: dict[str, ModelConfig] = {}


class FamilyConfig(_Strict):
    candidates: list[str] = Field(min_length=1)


class FileConfig(_Strict):
    provider: list[ProviderConfig] = []
    family: dict[str, FamilyConfig] = {}
    route: RouteConfig = RouteConfig()
    gateway: GatewayFileConfig = GatewayFileConfig()
    search: SearchFileConfig | None = None
    documents: DocumentsFileConfig = DocumentsFileConfig()


def _keys(raws: list[str], env: Mapping[str, str]) -> tuple[KeySpec, ...]:
    keys: list[KeySpec] = []
    for raw in raws:
        value = expand(raw, env)
        if value:
            name = key_name(raw, value)
            if any(k.name == name for k in keys):
                name = f"{name}#{len(keys) + 1}"
            keys.append(KeySpec(name, value))
    return tuple(keys)


def read_config_file(path: Path) -> FileConfig:
    """The file parsed and validated, or a ConfigError saying where it is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix the syntax there.") from None
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}. See docs/CONFIG.md for every key.") from None


def spec_from_file(
    config: FileConfig, where: str, env: Mapping[str, str], catalog: Catalog, today: date
) -> PoolSpec:
    notes: list[str] = []
    providers: dict[str, ProviderSpec] = {}
    for index, cfg in enumerate(config.provider):
        at = f"{where}: [[provider]] #{index + 1} ({cfg.name!r})"
        if cfg.name in providers:
            raise ConfigError(f"{at}: a provider of this name is already configured; rename one.")
        entry = catalog.get(cfg.name)
        base_url = cfg.base_url or (entry.base_url if entry else "")
        if not base_url:
            raise ConfigError(
                f"{at}: base_url is missing, and the catalog has no provider of this name "
                f"(it knows {', '.join(sorted(catalog.providers))}). Add its base_url."
            )
        dialect_name = cfg.dialect or (entry.dialect_name if entry else "openai")
        if dialect_name not in catalog.dialects:
            raise ConfigError(
                f"{at}: dialect {dialect_name!r} is unknown; use one of "
                f"{', '.join(sorted(catalog.dialects))}."
            )
        if cfg.auth == "none" and cfg.keys:
            raise ConfigError(
                f'{at}: auth = "none" takes no keys; remove keys, or remove auth = "none".'
            )
        profile = entry.profile if entry else catalog.for_url(base_url).profile
        profile = _with_prices(profile, cfg.models)
        providers[cfg.name] = ProviderSpec(
            name=cfg.name,
            base_url=base_url,
            dialect=catalog.dialects[dialect_name],
            profile=profile,
            keys=(NO_KEY,) if cfg.auth == "none" else _keys(cfg.keys, env),
            limits=cfg.limits.windows() if cfg.limits else (),
            url_setting=(
                f"the base_url of [[provider]] {cfg.name!r} in {where}"
                if cfg.base_url
                else f"the catalog's base_url for {cfg.name} (set base_url in {where})"
            ),
        )
    families: dict[str, tuple[CandidateSpec, ...]] = {}
    for family, fam in config.family.items():
        chosen: list[CandidateSpec] = []
        for index, candidate in enumerate(fam.candidates):
            at = f"{where}: [family.{family}] candidates[{index}] {candidate!r}"
            provider, sep, model = candidate.partition(":")
            if not sep or not provider or not model:
                raise ConfigError(f"{at}: write it as provider:model (groq:openai/gpt-oss-120b).")
            spec = providers.get(provider) or _catalog_provider(provider, env, catalog)
            if spec is None:
                known = sorted({*providers, *catalog.providers})
                raise ConfigError(
                    f"{at}: provider {provider!r} is neither configured nor in the catalog. "
                    f"Add a [[provider]] named {provider!r} with base_url and keys, or use one "
                    f"of: {', '.join(known)}."
                )
            providers.setdefault(provider, spec)
            usable = _usable(spec, model, today, notes)
            if usable is not None:
                chosen.append(usable)
        families[family] = tuple(chosen)
    routes = config.route
    if DEFAULT_FAMILY not in families and routes.default == DEFAULT_FAMILY:
        families[DEFAULT_FAMILY] = _kimi_family(providers, catalog, env, today, notes)
    if routes.vision is not None and routes.vision not in families:
        raise ConfigError(
            f"{where}: [route] vision = {routes.vision!r}: no [family.{routes.vision}] is "
            f"defined. Define it, or use one of: {', '.join(sorted(families)) or '(none)'}."
        )
    for route, family in routes.families.items():
        if family not in families:
            raise ConfigError(
                f"{where}: [route] {route} = {family!r}: no [family.{family}] is defined. "
                f"Define it, or use one of: {', '.join(sorted(families)) or '(none)'}."
            )
        if not families[family]:
            raise ConfigError(
                f"{where}: [family.{family}] (route {route}) has no usable candidate: "
                + " ".join(notes)
                + " Set a key for one of its providers, or add a candidate that is served."
            )
    for name in catalog.providers:  # `provider:model` may name any with a key (choice.py)
        keyed = None if name in providers else _catalog_provider(name, env, catalog)
        if keyed is not None and keyed.keys:
            providers[name] = keyed
    return PoolSpec(providers, families, routes, notes=tuple(notes), source=where)


def _with_prices(profile: ProviderProfile, models: dict[str, ModelConfig]) -> ProviderProfile:
    """The profile with the prices the config file gives its models."""
    priced = {}
    for model, config in models.items():
        if config.prices is not None:
            given = config.prices
            cached = given.input if given.cached_input is None else given.cached_input
            prices = Prices(given.input, cached, given.output)
            priced[model] = replace(profile.limits(model), prices=prices)
    return replace(profile, models={**profile.models, **priced}) if priced else profile


def _catalog_provider(name: str, env: Mapping[str, str], catalog: Catalog) -> ProviderSpec | None:
    entry = catalog.get(name)
    if entry is None:
        return None
    raws = [f"${{{entry.key_env}}}"] if entry.key_env else []
    return ProviderSpec(
        name=name,
        base_url=entry.base_url,
        dialect=entry.dialect,
        profile=entry.profile,
        keys=_keys(raws, env),
    )


def _usable(spec: ProviderSpec, model: str, today: date, notes: list[str]) -> CandidateSpec | None:
    limits = spec.profile.limits(model)
    if not spec.keys:
        notes.append(f"{spec.name}:{model} skipped: {spec.name} has no key set.")
        return None
    if _shut_down(limits, today):
        instead = f"; {spec.name} suggests {limits.replacement}" if limits.replacement else ""
        notes.append(
            f"{spec.name}:{model} skipped: the provider shut this model down on "
            f"{limits.shutdown}{instead}."
        )
        return None
    return CandidateSpec(spec.name, model, limits)


def _kimi_family(
    providers: dict[str, ProviderSpec],
    catalog: Catalog,
    env: Mapping[str, str],
    today: date,
    notes: list[str],
) -> tuple[CandidateSpec, ...]:
    """The Kimi models every keyed provider serves; for a provider whose Kimi models are all
    gone, the model it suggests instead (so one Groq key still works), logged."""
    chosen: list[CandidateSpec] = []
    fallbacks: list[CandidateSpec] = []
    for name, entry in catalog.providers.items():
        spec = providers.get(name) or _catalog_provider(name, env, catalog)
        if spec is None or not spec.keys or not entry.models_of_family(DEFAULT_FAMILY):
            continue
        providers.setdefault(name, spec)
        live = [
            candidate
            for model in entry.models_of_family(DEFAULT_FAMILY)
            if (candidate := _usable(spec, model, today, notes)) is not None
        ]
        chosen += live
        if not live:
            for model in entry.models_of_family(DEFAULT_FAMILY):
                replacement = spec.profile.limits(model).replacement
                if replacement and all(c.model != replacement for c in fallbacks):
                    notes.append(
                        f"{name} serves no Kimi model any more: using {replacement} there "
                        "instead. For Kimi, add MOONSHOT_API_KEY or OPENROUTER_API_KEY."
                    )
                    fallbacks.append(
                        CandidateSpec(name, replacement, spec.profile.limits(replacement))
                    )
                    break
    return tuple(chosen + fallbacks)


def spec_from_environment(
    settings: Settings, env: Mapping[str, str], catalog: Catalog, today: date
) -> PoolSpec:
    """No file: the legacy single provider when its settings are given, else the catalog
    providers whose key variables are set."""
    if settings.model_fields_set & LEGACY_FIELDS:
        return _legacy_spec(settings, catalog, today)
    notes: list[str] = []
    providers: dict[str, ProviderSpec] = {}
    groq = _catalog_provider("groq", {}, catalog)
    if settings.api_key_value and groq is not None:  # GROQ_API_KEY, or KIMI_API_KEY
        key = KeySpec(_settings_key_name(env), settings.api_key_value)
        providers["groq"] = replace(groq, keys=(key,))
    family = _kimi_family(providers, catalog, env, today, notes)
    return PoolSpec(
        providers, {DEFAULT_FAMILY: family} if family else {}, RouteConfig(), notes=tuple(notes)
    )


def _settings_key_name(env: Mapping[str, str]) -> str:
    return "KIMI_API_KEY" if env.get("KIMI_API_KEY", "").strip() else "GROQ_API_KEY"


def _legacy_spec(settings: Settings, catalog: Catalog, today: date) -> PoolSpec:
    """One provider at `KIMI_UPSTREAM_URL`, one key, the models `KIMI_MODEL_RULES` names:
    `KIMI_MODEL`, else the live Kimi model the catalog knows at that provider."""
    profile = settings.profile
    entry = catalog.get(profile.name) or catalog.for_url(settings.upstream_url)
    key = settings.api_key_value
    keys = (KeySpec(f"…{key[-4:]}", key),) if key else ()
    provider = ProviderSpec(
        profile.name,
        settings.upstream_url,
        entry.dialect,
        profile,
        keys,
        url_setting="KIMI_UPSTREAM_URL",
    )
    big = settings.model or _live_kimi(entry, today)
    if big is None:
        raise ConfigError(
            f"KIMI_MODEL is not set, and the provider catalog knows no Kimi model that "
            f"{profile.name} ({settings.upstream_url}) still serves. Set KIMI_MODEL (and "
            "KIMI_SMALL_MODEL) to a model id your provider lists, or use a provider that "
            "serves Kimi: export MOONSHOT_API_KEY=sk-... (docs/CONFIG.md)."
        )
    router = ModelRouter.from_spec(settings.model_rules, big, settings.small_model or big)
    models = dict.fromkeys([router.big, router.small, *(target for _, target in router.rules)])
    families: dict[str, tuple[CandidateSpec, ...]] = {}
    if keys:
        families = {m: (CandidateSpec(profile.name, m, profile.limits(m)),) for m in models}
    routes = RouteConfig(default=router.big, max_wait_s=MAX_LEGACY_WAIT)
    return PoolSpec({profile.name: provider}, families, routes, legacy_router=router)


def _live_kimi(entry: ProviderEntry, today: date) -> str | None:
    """The catalog's first Kimi model at this provider that is not shut down."""
    models = entry.models_of_family(DEFAULT_FAMILY)
    return next((m for m in models if not _shut_down(entry.profile.limits(m), today)), None)


def _shut_down(limits: ModelLimits, today: date) -> bool:
    return limits.shutdown is not None and today >= limits.shutdown


def load_pool_spec(settings: Settings, env: Mapping[str, str], today: date) -> PoolSpec:
    """The pool from `settings.config` when set, else from the environment."""
    catalog = load_catalog()
    if settings.config is None:
        return spec_from_environment(settings, env, catalog, today)
    path = settings.config.expanduser()
    return spec_from_file(read_config_file(path), str(path), env, catalog, today)


def load_gateway(settings: Settings, env: Mapping[str, str]) -> Gateway:
    """The gateway's settings: the environment's over the config file's `[gateway]`."""
    file = GatewayFileConfig()
    if settings.config is not None:
        file = read_config_file(settings.config.expanduser()).gateway
        if file.redis_url:
            file = file.model_copy(update={"redis_url": expand(file.redis_url, env)})
    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    return gateway_from(file, url, settings.on_redis_down)


def load_search(settings: Settings, env: Mapping[str, str]) -> SearchSettings | None:
    """The web search backend: the config file's `[search]`, else the environment's."""
    table = None
    if settings.config is not None:
        path = settings.config.expanduser()
        table = read_config_file(path).search
        try:
            return search_from(table, env)
        except SearchConfigError as exc:
            raise ConfigError(f"{path}: {exc} See docs/CONFIG.md.") from None
    return search_from(table, env)


def load_documents(settings: Settings) -> DocumentsFileConfig:
    """`[documents]` from the config file (its defaults without one)."""
    if settings.config is None:
        return DocumentsFileConfig()
    return read_config_file(settings.config.expanduser()).documents
