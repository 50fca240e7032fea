"""Each search backend's real API as data: the HTTP request for a query, and its JSON answer
read into `SearchResult`s. Pure: no I/O (`client.py` sends the request).

* SearXNG: `GET {url}/search?q=…&format=json` → `results[].{url,title,content,publishedDate}`.
* Brave: `GET {url}/res/v1/web/search?q=…&count=N`, `X-Subscription-Token` →
  `web.results[].{url,title,description,page_age|age}`; `country` from the user's location.
* Tavily: `POST {url}/search`, `Authorization: Bearer` → `results[].{url,title,content,
  published_date}`; domains filtered by the API (`include_domains`, `exclude_domains`).
* Exa: `POST {url}/search`, `x-api-key` → `results[].{url,title,text|highlights,publishedDate}`;
  domains by the API (`includeDomains`, `excludeDomains`), `userLocation` from the location.

Backends without a domain filter get `site:` terms in the query; every backend's results are
filtered again (`keep_domains`), so a filter holds whatever the backend did with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kimi_proxy.config.search import SearchSettings

SNIPPET_CHARS = 1_000  # of a result's text kept for the model


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    max_results: int
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    country: str | None = None  # ISO 3166 alpha-2, from `user_location.country`


@dataclass(frozen=True, slots=True)
class SearchResult:
    url: str
    title: str
    snippet: str = ""
    page_age: str | None = None


@dataclass(frozen=True, slots=True)
class HttpCall:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


class BadAnswer(ValueError):
    """The backend answered 200 with JSON of another shape."""


def http_call(settings: SearchSettings, query: Query) -> HttpCall:
    """The request that asks `settings.backend` for `query`."""
    base = settings.url
    match settings.backend:
        case "searxng":
            return HttpCall(
                "GET", f"{base}/search", params={"q": _with_sites(query), "format": "json"}
            )
        case "brave":
            params = {"q": _with_sites(query), "count": str(min(query.max_results, 20))}
            if query.country:
                params["country"] = query.country.lower()
            headers = {"X-Subscription-Token": settings.key, "Accept": "application/json"}
            return HttpCall("GET", f"{base}/res/v1/web/search", headers=headers, params=params)
        case "tavily":
            body: dict[str, Any] = {"query": query.text, "max_results": query.max_results}
            if query.allowed_domains:
                body["include_domains"] = list(query.allowed_domains)
            if query.blocked_domains:
                body["exclude_domains"] = list(query.blocked_domains)
            headers = {"Authorization": f"Bearer {settings.key}"}
            return HttpCall("POST", f"{base}/search", headers=headers, json=body)
        case "exa":
            body = {
                "query": query.text,
                "numResults": query.max_results,
                "contents": {"text": {"maxCharacters": SNIPPET_CHARS}},
            }
            if query.allowed_domains:
                body["includeDomains"] = list(query.allowed_domains)
            if query.blocked_domains:
                body["excludeDomains"] = list(query.blocked_domains)
            if query.country:
                body["userLocation"] = query.country.upper()
            return HttpCall(
                "POST", f"{base}/search", headers={"x-api-key": settings.key}, json=body
            )


def read_results(backend: str, answer: Any) -> list[SearchResult]:
    """The results in a backend's JSON answer, in its order; `BadAnswer` for another shape."""
    try:
        match backend:
            case "brave":
                items = (answer.get("web") or {}).get("results") or []
                return [_result(i, "description", i.get("page_age") or i.get("age")) for i in items]
            case "exa":
                return [
                    _result(i, "text", i.get("publishedDate"), fallback=_highlights(i))
                    for i in answer.get("results") or []
                ]
            case "tavily":
                return [
                    _result(i, "content", i.get("published_date"))
                    for i in answer.get("results") or []
                ]
            case _:
                return [
                    _result(i, "content", i.get("publishedDate"))
                    for i in answer.get("results") or []
                ]
    except (AttributeError, TypeError, KeyError) as exc:
        raise BadAnswer(f"{backend} answered JSON of an unknown shape ({exc})") from None


def keep_domains(
    results: Sequence[SearchResult], allowed: Sequence[str], blocked: Sequence[str]
) -> list[SearchResult]:
    """The results on an allowed domain (or a subdomain of one) and on no blocked one."""
    kept = []
    for result in results:
        host = (urlsplit(result.url).hostname or "").lower()
        if allowed and not any(_on(host, d) for d in allowed):
            continue
        if any(_on(host, d) for d in blocked):
            continue
        kept.append(result)
    return kept


def _on(host: str, domain: str) -> bool:
    domain = _host_of(domain)
    return host == domain or host.endswith("." + domain)


def _host_of(domain: str) -> str:
    """`example.com`, `https://example.com/docs` and `www.example.com` all name a host."""
    domain = domain.strip().lower()
    if "//" in domain:
        domain = urlsplit(domain).hostname or ""
    return domain.split("/", 1)[0]


def _with_sites(query: Query) -> str:
    terms = [query.text]
    if len(query.allowed_domains) == 1:
        terms.append(f"site:{_host_of(query.allowed_domains[0])}")
    elif query.allowed_domains:
        terms.append("(" + " OR ".join(f"site:{_host_of(d)}" for d in query.allowed_domains) + ")")
    terms += [f"-site:{_host_of(d)}" for d in query.blocked_domains]
    return " ".join(terms)


def _highlights(item: dict[str, Any]) -> str:
    highlights = item.get("highlights")
    return " … ".join(str(h) for h in highlights) if isinstance(highlights, list) else ""


def _result(item: dict[str, Any], text_field: str, age: Any, *, fallback: str = "") -> SearchResult:
    url = item["url"]
    if not isinstance(url, str):
        raise TypeError("a result's url is not a string")
    text = item.get(text_field) or fallback
    return SearchResult(
        url=url,
        title=str(item.get("title") or url),
        snippet=str(text)[:SNIPPET_CHARS],
        page_age=str(age) if age else None,
    )
