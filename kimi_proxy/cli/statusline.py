"""`kimi-proxy statusline [--url URL]`: the line Claude Code shows under its prompt.

Claude Code runs its `statusLine` command on every update with a JSON on stdin (`session_id`,
`model`, `context_window`, `cost`…). This asks the proxy what really served that session and
prints one short line:

    kimi-k2.6 @ moonshot · ctx 41k/262k · TPM 62% (resets 14s) · $0.18 today

Standard library only, and nothing imported that the line does not need: it must answer in a
few tens of milliseconds. `urllib.request` alone costs 18 ms to import (http.client, email),
so the one GET to the local proxy is written over a socket: HTTP/1.1 with `Connection: close`,
read to the end. Whatever goes wrong (no proxy, odd input) it prints a short line and exits 0:
a status line never shows a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any
from urllib.parse import quote, urlsplit

TIMEOUT = 0.3  # seconds: the proxy is local; a slow answer is no answer
REMOTE_TIMEOUT = 1.0  # a team gateway over https: a handshake and a network away


def _url(args: list[str]) -> str:
    if "--url" in args:
        index = args.index("--url")
        if index + 1 < len(args):
            return args[index + 1].rstrip("/")
    for arg in args:
        if arg.startswith("--url="):
            return arg.split("=", 1)[1].rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('KIMI_PROXY_PORT', '8090')}"


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
    if n >= 1000:
        return f"{round(n / 1000)}k"
    return str(n)


def _claude_model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if isinstance(model, dict):
        return str(model.get("display_name") or model.get("id") or "")
    return str(model or "")


def format_line(data: dict[str, Any], status: dict[str, Any]) -> str:
    """The line, from Claude Code's JSON and the proxy's view of the session."""
    if not status.get("known"):
        model = _claude_model(data)
        return f"kimi-proxy · {model + ' · ' if model else ''}no answer yet this session"
    parts = [f"{status.get('model')} @ {status.get('provider')}"]
    window = status.get("context_window") or 0
    if window:
        parts.append(f"ctx {_tokens(int(status.get('context_tokens') or 0))}/{_tokens(window)}")
    tpm = status.get("tpm")
    if isinstance(tpm, dict) and tpm.get("limit"):
        used = 1 - (tpm.get("left") or 0) / tpm["limit"]
        resets = f" (resets {tpm['resets_in']:.0f}s)" if tpm.get("resets_in") else ""
        parts.append(f"TPM {max(0, min(100, round(used * 100)))}%{resets}")
    parts.append(f"${float(status.get('cost_usd') or 0):.2f} today")
    return " · ".join(parts)


def get(url: str, path: str, token: str | None) -> tuple[int, bytes]:
    """One GET to the proxy or the team gateway (https: `ssl` is imported only then): the
    status and the body (raises OSError or ValueError)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url}")
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    secure = parts.scheme == "https"
    timeout = TIMEOUT if parts.hostname in ("127.0.0.1", "localhost", "::1") else REMOTE_TIMEOUT
    port = parts.port or (443 if secure else 80)
    with socket.create_connection((parts.hostname, port), timeout) as plain:
        connection = plain
        if secure:
            import ssl  # honours SSL_CERT_FILE, as the proxy's own connections do

            connection = ssl.create_default_context().wrap_socket(
                plain, server_hostname=parts.hostname
            )
        connection.settimeout(timeout)
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        received = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def run(args: list[str]) -> int:
    url = _url(args)
    try:
        data = json.loads(sys.stdin.read() or "{}")
    except (ValueError, OSError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    session = quote(str(data.get("session_id") or "-"), safe="")
    token = os.environ.get("KIMI_PROXY_AUTH_TOKEN") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
    try:
        code, body = get(url, f"/status/session/{session}", token)
        status = json.loads(body) if code == 200 else None
    except (OSError, ValueError, IndexError):
        print(f"kimi-proxy: not running ({urlsplit(url).netloc or url})")
        return 0
    if not isinstance(status, dict):
        print(f"kimi-proxy: HTTP {code} from {url}" + (" (check the token)" if code == 401 else ""))
        return 0
    print(format_line(data, status))
    return 0
