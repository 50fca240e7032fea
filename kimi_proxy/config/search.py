"""Web search and documents: the config file's `[search]` and `[documents]` tables, or, without
a `[search]` table, the first of `BRAVE_API_KEY`, `TAVILY_API_KEY`, `EXA_API_KEY` and
`SEARXNG_URL` that is set. Pure: the file's tables and the environment in, a `SearchSettings`
out (docs/CONFIG.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .variables import expand, key_name

Backend = Literal["searxng", "brave", "tavily", "exa"]

#: Each backend's API base URL (SearXNG has none: it is the instance you run).
DEFAULT_URLS: dict[Backend, str] = {
    "searxng": "",
    "brave": "https://api.search.brave.com",
    "tavily": "https://api.tavily.com",
    "exa": "https://api.exa.ai",
}
#: Without a `[search]` table, the first of these that is set picks the backend.
ENVIRONMENT_ORDER: tuple[tuple[str, Backend], ...] = (
    ("BRAVE_API_KEY", "brave"),
    ("TAVILY_API_KEY", "tavily"),
    ("EXA_API_KEY", "exa"),
    ("SEARXNG_URL", "searxng"),
)


class SearchFileConfig(BaseModel):
    """`[search]` in the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend | Literal["off"]
    url: str | None = None  # ${VAR} is replaced by the variable's value
    key: str | None = None  # ${VAR} likewise; never logged
    max_results: Annotated[int, Field(gt=0, le=50)] = 8
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    price_per_1k: Annotated[float, Field(ge=0)] = 0.0  # dollars per 1,000 searches


class DocumentsFileConfig(BaseModel):
    """`[documents]` in the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: How many first pages of a PDF also go to a model that reads images (0: text only).
    page_images: Annotated[int, Field(ge=0, le=100)] = 5


@dataclass(frozen=True, slots=True)
class SearchSettings:
    backend: Backend
    url: str  # the API's base URL, no trailing slash
    key: str  # secret: never logged
    key_name: str  # how logs and errors name the key: its variable, or its last four
    max_results: int = 8
    timeout_s: float = 10.0
    price_per_1k: float = 0.0


class SearchConfigError(ValueError):
    """A `[search]` table that cannot work (a backend without its key or URL)."""


def search_from(file: SearchFileConfig | None, env: Mapping[str, str]) -> SearchSettings | None:
    """The search backend to use, or None: search is off (and says so where it is asked for)."""
    if file is None:
        return _from_environment(env)
    if file.backend == "off":
        return None
    backend: Backend = file.backend
    key_raw = file.key or ""
    key = expand(key_raw, env)
    url = expand(file.url, env) if file.url else DEFAULT_URLS[backend]
    if backend == "searxng" and not url:
        raise SearchConfigError('[search] backend = "searxng" needs url = "http://…".')
    if backend != "searxng" and not key:
        raise SearchConfigError(
            f'[search] backend = {backend!r} needs key = "${{{backend.upper()}_API_KEY}}"'
            + (f" ({key_raw} is empty)." if key_raw else ".")
        )
    return SearchSettings(
        backend=backend,
        url=url.rstrip("/"),
        key=key,
        key_name=key_name(key_raw, key) if key else "",
        max_results=file.max_results,
        timeout_s=file.timeout_seconds,
        price_per_1k=file.price_per_1k,
    )


def _from_environment(env: Mapping[str, str]) -> SearchSettings | None:
    for variable, backend in ENVIRONMENT_ORDER:
        value = env.get(variable, "").strip()
        if not value:
            continue
        if backend == "searxng":
            return SearchSettings(backend, value.rstrip("/"), "", "")
        return SearchSettings(backend, DEFAULT_URLS[backend], value, variable)
    return None
