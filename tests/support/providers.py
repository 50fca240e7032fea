"""Several scripted providers behind one proxy, configured by a real config file.

`RateLimited` is a provider that keeps per-key limits the way Groq does — the prompt plus the
whole `max_tokens` counted when a request arrives, in a window that starts over — reports them
in its dialect's headers on every answer, answers 429 with `retry-after` when a request does
not fit, and records every such request as a violation: a test fails on any.
"""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.tokenizer import quarter_chars
from kimi_proxy.server.app import create_app
from support.proxy import Harness, proxy_settings, serve_app
from support.upstream import (
    Json,
    Reply,
    Script,
    ScriptedUpstream,
    Stream,
    error,
    scripted_upstream,
    text_stream,
)


def groq_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-tokens": str(limit),
        "x-ratelimit-remaining-tokens": str(remaining),
        "x-ratelimit-reset-tokens": f"{reset:.2f}s",
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "999",
        "x-ratelimit-reset-requests": "1m26.4s",
    }


def counted(body: dict[str, Any]) -> int:
    """What the provider counts for a request: its prompt and its whole answer budget."""
    return quarter_chars(body) + int(body.get("max_tokens") or 0)


@dataclass
class RateLimited:
    tpm: int
    window: float = 2.0
    reply: Script = lambda body, n: text_stream("ok")
    violations: list[str] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # per key
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, upstream: ScriptedUpstream) -> Script:
        def limited(body: dict[str, Any], n: int) -> Reply:
            key = upstream.requests[n].headers.get("authorization", "")[-6:]
            need = counted(body)
            with self._lock:
                now = time.monotonic()
                start, used = self._windows.get(key, (now, 0))
                if now - start >= self.window:
                    start, used = now, 0
                reset = start + self.window - now
                if used + need > self.tpm:
                    self.violations.append(
                        f"key {key}: {need} tokens asked with {self.tpm - used} left"
                    )
                    headers = groq_headers(self.tpm, self.tpm - used, reset)
                    headers["retry-after"] = str(max(1, round(reset)))
                    return Json({"error": {"message": "Rate limit reached (TPM)"}}, 429, headers)
                used += need
                self._windows[key] = (start, used)
                self.served[key] = self.served.get(key, 0) + 1
            reply = self.reply(body, n)
            headers = groq_headers(self.tpm, self.tpm - used, reset)
            if isinstance(reply, Stream | Json):
                return replace(reply, headers={**reply.headers, **headers})
            return reply

        return limited


@dataclass
class Pooled:
    """The proxy and its providers, by name."""

    harness: Harness
    providers: dict[str, ScriptedUpstream]

    @property
    def url(self) -> str:
        return self.harness.url


@contextmanager
def pooled_proxy(
    tmp_path: Path,
    config: str,
    providers: dict[str, Script | RateLimited],
    models: dict[str, list[str]] | None = None,
    **overrides: Any,
) -> Iterator[Pooled]:
    """Start one scripted upstream per provider, write `config` (with `{NAME_URL}` replaced by
    each provider's base URL), and serve the proxy with it. Each provider's model list names
    the models the config asks of it, unless `models` says otherwise."""
    if models is None:
        models = {}
        for family in tomllib.loads(config).get("family", {}).values():
            for candidate in family["candidates"]:
                provider, _, model = candidate.partition(":")
                models.setdefault(provider, []).append(model)
    with ExitStack() as stack:
        upstreams: dict[str, ScriptedUpstream] = {}
        for name, script in providers.items():
            plain = (
                script if not isinstance(script, RateLimited) else (lambda b, n: text_stream(""))
            )
            upstream = stack.enter_context(scripted_upstream(plain, models.get(name)))
            if isinstance(script, RateLimited):
                upstream.script = script.script(upstream)
            upstreams[name] = upstream
        text = config
        for name, upstream in upstreams.items():
            text = text.replace("{" + name.upper() + "_URL}", upstream.base_url)
        path = tmp_path / "config.toml"
        path.write_text(text)
        settings = proxy_settings("http://127.0.0.1:9/v1", config=path, **overrides)
        app = create_app(settings)
        url = stack.enter_context(serve_app(app))
        harness = Harness(
            url=url, upstream=next(iter(upstreams.values())), settings=settings, app=app
        )
        try:
            yield Pooled(harness, upstreams)
        finally:
            for client in harness.clients:
                client.close()


MOONSHOT_OVERFLOW = (
    "Invalid request: Your request exceeded model token limit: {limit} (requested: {requested})"
)


def kimi_k26_rules(script: Script, context: int = 262_144) -> Script:
    """Moonshot's Kimi K2.6 as it enforces its rules (thinking is on unless the request turns
    it off): reasoning_content on every assistant tool-call message, `tool_choice` only auto
    or none, and its own wording of a context overflow. Each refusal is a 400 as Moonshot's."""

    def enforced(body: dict[str, Any], call: int) -> Reply:
        if body.get("thinking") != {"type": "disabled"}:
            for index, message in enumerate(body["messages"]):
                calls = message["role"] == "assistant" and message.get("tool_calls")
                if calls and not message.get("reasoning_content"):
                    return error(
                        400,
                        "thinking is enabled but reasoning_content is missing in assistant "
                        f"tool call message at index {index}",
                    )
            if body.get("tool_choice") not in (None, "auto", "none"):
                return error(400, "tool_choice 'specified' is incompatible with thinking enabled")
        requested = quarter_chars({"messages": body["messages"]}) + body.get("max_tokens", 0)
        if requested > context:
            return error(400, MOONSHOT_OVERFLOW.format(limit=context, requested=requested))
        return script(body, call)

    return enforced


# Kimi K2.6 on Moonshot as the default family, and a second family `fast` on another provider.
TWO_FAMILIES = """
[[provider]]
name = "moonshot"
base_url = "{MOONSHOT_URL}"
keys = ["moonshot-test-key"]
[[provider]]
name = "fastco"
base_url = "{FASTCO_URL}"
keys = ["fastco-test-key"]
[family.kimi]
candidates = ["moonshot:kimi-k2.6"]
[family.fast]
candidates = ["fastco:fast-model"]
[route]
default = "kimi"
"""
