"""Providers: the catalog (data), rate-limit dialects, the pure admission arithmetic and plan,
and the pool that picks, waits and fails over.

    catalog.toml / catalog.py   known providers and models (package data, loaded once)
    spec.py                     the pool's spec: providers, keys, families, routes (plain data)
    models.py                   which provider model serves a client's model id
    dialects.py                 rate-limit headers → budget observations (pure)
    budget.py                   admission arithmetic per key (pure)
    plan.py                     which key, wait or switch, refuse — and what a refusal says (pure)
    lessons.py                  what a failed attempt teaches about its key and model (pure)
    pool.py                     the runtime state: keys, ledgers, retired models, affinity
    call.py                     one request through the pool: pick, wait, send, fail over
    routing.py                  a request's route, its candidates and its call
    discovery.py                the providers' live model lists against the candidates

May import `translate`, `upstream`, `protocol` and `errors`; never the configuration file's
model (`config` builds the spec and hands it in), the server or the gateway.
"""

from __future__ import annotations

from kimi_proxy.protocol.profile import ModelLimits, Prices, ProviderProfile

from .catalog import GENERIC_NAME, load_catalog

GROQ_URL = "https://api.groq.com/openai/v1"
KIMI_K2 = "moonshotai/kimi-k2-instruct-0905"

_CATALOG = load_catalog()
GROQ = _CATALOG.providers["groq"].profile
MOONSHOT = _CATALOG.providers["moonshot"].profile
OPENROUTER = _CATALOG.providers["openrouter"].profile
GENERIC = _CATALOG.providers[GENERIC_NAME].profile


def profile_for_url(url: str) -> ProviderProfile:
    return _CATALOG.for_url(url).profile


def profile_by_name(name: str) -> ProviderProfile:
    entry = _CATALOG.get(name)
    if entry is None:
        raise ValueError(f"unknown provider profile {name!r}")
    return entry.profile


__all__ = [
    "GENERIC",
    "GROQ",
    "GROQ_URL",
    "KIMI_K2",
    "MOONSHOT",
    "OPENROUTER",
    "ModelLimits",
    "Prices",
    "ProviderProfile",
    "profile_by_name",
    "profile_for_url",
]
