"""Which setup `./kimi.sh`, `kimi-proxy code` and `kimi-proxy doctor` are in: pure.

Decided in this order, from what was found (plain values in, a `Plan` or a `NoSetup` out):

1. `KIMI_GATEWAY_URL` (http:// or https://) and `KIMI_USER_KEY`: the team's gateway. No local
   proxy and no provider key of one's own.
2. A healthy kimi-proxy already on `KIMI_PROXY_PORT`, started with the same providers and keys
   as this launcher would start one (its `/health` `config_id`), or when this launcher has none
   of its own. One started with other keys, or by another launcher still running (it stops when
   that session ends), is never reused silently: this launcher starts its own on a free port
   and says why.
3. Start one locally when any provider is usable: a catalog key variable, or a config file with
   at least one usable candidate (keyless providers included).

Otherwise: one message listing what was looked for, and exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["gateway", "running", "local"]


@dataclass(frozen=True, slots=True)
class Running:
    """A kimi-proxy answering `/health` on the port."""

    config_id: str | None
    owned_by_live_launcher: bool
    context_window: int | None = None  # of the models behind it, as its /health says


@dataclass(frozen=True, slots=True)
class Found:
    """What the launcher looked at before deciding."""

    gateway_url: str | None
    user_key: bool  # KIMI_USER_KEY (or the gateway's operator token) is set
    port: int
    on_port: Running | Literal["nothing", "other"]
    usable: bool  # this launcher could start a proxy that serves something
    config_id: str  # the pool this launcher would start, to compare with a running one's
    key_variables: tuple[str, ...]  # the catalog's key variables, for the message
    config_file: str | None  # the config file in use, if any
    config_notes: tuple[str, ...] = ()  # why its candidates are not usable


@dataclass(frozen=True, slots=True)
class Plan:
    mode: Mode
    line: str  # said once at start: what Claude Code is about to talk to
    new_port: bool = False  # start a proxy on a free port, not on `port`


@dataclass(frozen=True, slots=True)
class NoSetup:
    message: str  # what was looked for, and what to do


def decide(found: Found) -> Plan | NoSetup:
    """The setup, in the order the module docstring gives."""
    if found.gateway_url:
        return _gateway(found)
    here = f"127.0.0.1:{found.port}"
    if isinstance(found.on_port, Running):
        running = found.on_port
        if not found.usable:
            return Plan("running", f"using the kimi-proxy already running on {here}")
        if running.owned_by_live_launcher:
            return Plan(
                "local",
                f"the kimi-proxy on {here} belongs to another ./kimi.sh session (it stops when "
                "that one ends): starting this session's own",
                new_port=True,
            )
        if running.config_id == found.config_id:
            return Plan("running", f"using the kimi-proxy already running on {here}")
        return Plan(
            "local",
            f"the kimi-proxy on {here} runs with other providers or keys than yours: starting "
            "this session's own",
            new_port=True,
        )
    if not found.usable:
        return NoSetup(_nothing_usable(found))
    if found.on_port == "other":
        return Plan(
            "local",
            f"port {found.port} is taken by another program: starting the proxy on a free port "
            "(set KIMI_PROXY_PORT to choose one)",
            new_port=True,
        )
    where = f"config {found.config_file}" if found.config_file else "provider key variables"
    return Plan("local", f"starting kimi-proxy on {here} ({where})")


def _gateway(found: Found) -> Plan | NoSetup:
    url = found.gateway_url or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return NoSetup(
            f"KIMI_GATEWAY_URL={url!r} is not an http:// or https:// URL. Set it to your "
            "team's gateway, as your team lead gave it (https://kimi.example.com)."
        )
    if not found.user_key:
        return NoSetup(
            f"KIMI_GATEWAY_URL is set ({url}) but KIMI_USER_KEY is not. Ask your team lead for "
            "your key (they create it with `kimi-proxy users add NAME`), then:\n"
            "  export KIMI_USER_KEY=kpu_..."
        )
    return Plan("gateway", f"using the team gateway {url.rstrip('/')}")


def _nothing_usable(found: Found) -> str:
    lines = [
        "no provider to run Claude Code on. Looked for, in this order:",
        "  - a team gateway: KIMI_GATEWAY_URL and KIMI_USER_KEY are not set;",
        f"  - a kimi-proxy already running on 127.0.0.1:{found.port}: "
        + ("another program holds that port;" if found.on_port == "other" else "none;"),
    ]
    if found.config_file:
        notes = " ".join(found.config_notes) or "no candidate in it can be served."
        lines.append(
            f"  - the config file {found.config_file}: {notes} (A keyless local server such "
            'as Ollama or vLLM: write auth = "none" in its [[provider]].)'
        )
    else:
        lines.append(
            "  - a provider key variable: none of "
            + ", ".join(found.key_variables)
            + " is set, and there is no config file (~/.config/kimi-proxy/config.toml or "
            "KIMI_PROXY_CONFIG)."
        )
    lines.append(
        "Set one, for Kimi K2.6 from Moonshot:\n"
        "  export MOONSHOT_API_KEY=sk-...   # https://platform.moonshot.ai/console/api-keys\n"
        "or, on a team gateway: export KIMI_GATEWAY_URL=https://... KIMI_USER_KEY=kpu_...\n"
        "Other providers and keyless local servers: docs/CONFIG.md."
    )
    return "\n".join(lines)
