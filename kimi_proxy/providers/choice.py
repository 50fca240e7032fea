"""The model a request asks for (`model`, Claude Code's `--model` and `/model`), resolved to
what serves it. Pure: the pool's spec and the catalog in, a `Choice` (or a 404 that lists what
can be asked for) out.

In this order, the first that matches:
1. a family's name (`fast`);
2. `claude-<family>` (`claude-fast`: the form Claude Code's model picker keeps);
3. `provider:model` of a configured provider, or of a catalog provider with a key
   (`moonshot:kimi-k3`): that one candidate, under the same admission and limits;
4. a model id that a configured candidate serves (`kimi-k2.6`): the candidates serving it;
5. ids with `claude`, `opus`, `sonnet` or `haiku`: the routes, as before (`[route]`).
Anything else is a 404 `not_found_error` whose message lists the families. With the legacy
single-provider settings (no families) every id takes the routes, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from kimi_proxy.errors import NotFoundError

from .catalog import Catalog
from .spec import CandidateSpec, PoolSpec

CLAUDE_WORDS = ("claude", "opus", "sonnet", "haiku")
FAMILY_ALIAS_PREFIX = "claude-"


@dataclass(frozen=True, slots=True)
class Choice:
    """The candidates a model id names, or None: the request's route decides."""

    candidates: tuple[CandidateSpec, ...] | None = None
    family: str | None = None  # the family named, for the record and the dashboard


BY_ROUTE = Choice()


def choose(spec: PoolSpec, model: str, catalog: Catalog) -> Choice:
    if spec.legacy_router is not None:
        return BY_ROUTE
    name = model.strip()
    families = spec.families
    if name in families:
        return Choice(families[name], name)
    if name.startswith(FAMILY_ALIAS_PREFIX) and name[len(FAMILY_ALIAS_PREFIX) :] in families:
        family = name[len(FAMILY_ALIAS_PREFIX) :]
        return Choice(families[family], family)
    provider, sep, provider_model = name.partition(":")
    if sep and provider and provider_model:
        return Choice((_pinned(spec, provider, provider_model, catalog),), name)
    serving = _serving(spec, name)
    if serving:
        return Choice(serving, name)
    if any(word in name.lower() for word in CLAUDE_WORDS):
        return BY_ROUTE
    raise NotFoundError(
        f"No model {model!r} here. Ask for a family ({_listed(spec)}), `claude-<family>`, "
        '`provider:model`, or a model id a family serves; docs/CONFIG.md, "Model choice".'
    )


def _pinned(spec: PoolSpec, provider: str, model: str, catalog: Catalog) -> CandidateSpec:
    configured = spec.providers.get(provider)
    if configured is not None:
        return CandidateSpec(provider, model, configured.profile.limits(model))
    entry = catalog.providers.get(provider)
    if entry is not None:
        raise NotFoundError(
            f"Provider {provider!r} has no key here: set {entry.key_env} (or add it to the "
            "config file's [[provider]] entries) to use "
            f"{provider}:{model}. Families: {_listed(spec)}."
        )
    known = sorted({*spec.providers, *catalog.providers})
    raise NotFoundError(
        f"No provider {provider!r}: the providers are {', '.join(known)}. Families: "
        f"{_listed(spec)}."
    )


def _serving(spec: PoolSpec, model: str) -> tuple[CandidateSpec, ...]:
    found: dict[str, CandidateSpec] = {}
    for candidates in spec.families.values():
        for candidate in candidates:
            if candidate.model == model:
                found.setdefault(candidate.label, candidate)
    return tuple(found.values())


def _listed(spec: PoolSpec) -> str:
    return ", ".join(sorted(spec.families)) or "none configured"
