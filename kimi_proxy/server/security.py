"""Security at the door, as pure ASGI middleware (it never hides the client's disconnect).

* `Host` must be an allowed host: loopback names by default, so a DNS-rebinding page cannot
  reach a local proxy; add names with `KIMI_ALLOWED_HOSTS` (`*` allows any).
* A browser request (it carries `Origin`) is refused unless the origin is listed in
  `KIMI_CORS_ORIGINS`: web pages cannot drive the proxy behind the user's back. CORS itself
  (preflight included) is Starlette's `CORSMiddleware`, added only for listed origins.
* With `KIMI_PROXY_AUTH_TOKEN` set, every request but the probes (`/health`, `/ready`) must
  carry it as `x-api-key` or `Authorization: Bearer`, compared in constant time. The
  dashboard's pages may carry it as `?token=` (the page then keeps it in an HttpOnly cookie
  scoped to `/dashboard`) or that cookie: a browser's page and `EventSource` cannot send
  headers.
* A page's request to its own origin (the dashboard's) is not a cross-site request.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from kimi_proxy.errors import (
    AuthenticationError,
    PermissionDeniedError,
    ProxyError,
    SharedStoreDownError,
    send_error,
)
from kimi_proxy.gateway.users import UserDirectory

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
OPEN_PATHS = frozenset({"/health", "/ready"})  # probes carry no token
DASHBOARD = "/dashboard"
DASHBOARD_COOKIE = "kimi_dashboard"
MIN_TOKEN_LENGTH = 32
PLACEHOLDER_TOKENS = frozenset(
    {"change-me", "changeme", "change_me", "secret", "token", "password", "replace-me", "xxx"}
)


def weak_token(token: str | None, beyond_loopback: bool) -> str | None:
    """Why the operator's token cannot guard this proxy, or None. A placeholder (the one an
    example file ships with) never does; beyond loopback it must be 32 characters or more."""
    if token is None:
        return None
    if token.strip().lower() in PLACEHOLDER_TOKENS:
        return f"KIMI_PROXY_AUTH_TOKEN is the placeholder {token.strip()!r} from an example file"
    if beyond_loopback and len(token) < MIN_TOKEN_LENGTH:
        return (
            f"KIMI_PROXY_AUTH_TOKEN has {len(token)} characters; beyond localhost it needs at "
            f"least {MIN_TOKEN_LENGTH}"
        )
    return None


def _host_name(host: str) -> str:
    if host.startswith("["):  # [::1]:8090
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: list[str],
        cors_origins: list[str],
        auth_token: str | None,
        users: UserDirectory | None = None,
        open_paths: frozenset[str] | set[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = {h.lower() for h in (*LOOPBACK_NAMES, *allowed_hosts)}
        self.cors_origins = set(cors_origins)
        self.token = auth_token.encode() if auth_token else None
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._check(scope)
        if error is None:
            await self.app(scope, receive, send)
            return
        await send_error(send, error)

    def _check(self, scope: Scope) -> ProxyError | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if not self.any_host and _host_name(host) not in self.allowed_hosts:
            return PermissionDeniedError(
                f"Host {host!r} is not allowed. Add it to KIMI_ALLOWED_HOSTS to serve it."
            )
        origin = headers.get(b"origin")
        if origin is not None and not self._allowed_origin(origin.decode("latin-1"), host):
            return PermissionDeniedError(
                "Requests from web pages are refused. List the page's origin in "
                "KIMI_CORS_ORIGINS to allow it."
            )
        if self.users is not None and scope["path"] not in self.open_paths:
            self.users.refresh()
            if not self.users.known:
                return SharedStoreDownError(
                    self.users.problem
                    or "This gateway has not read its users from Redis yet (Redis does not "
                    "answer); it serves no one until it has. Retry shortly."
                )
            if self.users.any:  # a gateway with users: a user key, or the proxy's own token
                if scope["method"] == "OPTIONS" and origin is not None:
                    return None
                return self._user(headers, scope)
        if self.token is not None and scope["path"] not in self.open_paths:
            if scope["method"] == "OPTIONS" and origin is not None:
                return None  # CORS preflight: answered by CORSMiddleware, carries no token
            if not self._authorized(headers, scope):
                # Not the words "x-api-key": Claude Code's terminal UI then shows its own
                # "Invalid API key" instead of this sentence (measured, 2.1.332).
                return AuthenticationError(
                    "Missing or wrong proxy token: set ANTHROPIC_AUTH_TOKEN (or "
                    "ANTHROPIC_API_KEY) to this proxy's KIMI_PROXY_AUTH_TOKEN; other clients "
                    "send it as their API key or a Bearer token."
                )
        return None

    def _user(self, headers: dict[bytes, bytes], scope: Scope) -> ProxyError | None:
        """Let a request in when it carries an active user's key (noted for the request) or
        the proxy's token; else a 401 that says what to do."""
        assert self.users is not None
        if self.token is not None and self._authorized(headers, scope):
            return None
        if scope["path"].startswith("/admin/") and not _presented(headers, scope):
            return AuthenticationError(
                "The admin API takes the proxy's token (KIMI_PROXY_AUTH_TOKEN) as the API key."
            )
        if _operator_only(scope):
            what = "The dashboard shows" if _dashboard(scope) else "/metrics counts"
            if scope["path"].startswith("/admin/"):
                what = "The admin API manages"
            return PermissionDeniedError(
                f"{what} every user's requests: it takes the proxy's token "
                "(KIMI_PROXY_AUTH_TOKEN), never a user key"
                + ("." if self.token is not None else "; this gateway has none, so it is closed.")
            )
        for presented in _presented(headers, scope):
            user = self.users.user(presented.decode("latin-1"))
            if user is not None:
                state = scope.setdefault("state", {})
                state["user"] = user
                record = state.get("record")
                if record is not None:
                    record.user, record.team = user.name, user.team
                return None
        return AuthenticationError(
            "This gateway does not know your user key: it was revoked or replaced, or it is "
            "mistyped. Ask your team lead for a new one (`kimi-proxy users rotate NAME` prints "
            "it), then set it as KIMI_USER_KEY for ./kimi.sh (or ANTHROPIC_AUTH_TOKEN for "
            "claude)."
        )

    def _allowed_origin(self, origin: str, host: str) -> bool:
        return origin in self.cors_origins or origin in (f"http://{host}", f"https://{host}")

    def _authorized(self, headers: dict[bytes, bytes], scope: Scope) -> bool:
        assert self.token is not None
        candidates = _presented(headers, scope)
        results = [hmac.compare_digest(c, self.token) for c in candidates]
        return any(results)


def _presented(headers: dict[bytes, bytes], scope: Scope) -> list[bytes]:
    """The credentials a request carries: `x-api-key`, a Bearer token, and on the dashboard's
    pages its `?token=` or cookie."""
    candidates = [headers.get(b"x-api-key", b"")]
    authorization = headers.get(b"authorization", b"")
    if authorization[:7].lower() == b"bearer ":
        candidates.append(authorization[7:].strip())
    if _dashboard(scope):
        candidates += _dashboard_tokens(headers, scope)
    return [c for c in candidates if c]


def _operator_only(scope: Scope) -> bool:
    """What a gateway's users never see: the dashboard (every user's requests), metrics and
    the admin API."""
    path: str = scope["path"]
    return _dashboard(scope) or path == "/metrics" or path.startswith("/admin/")


def _dashboard(scope: Scope) -> bool:
    path: str = scope["path"]
    return path == DASHBOARD or path.startswith(DASHBOARD + "/")


def _dashboard_tokens(headers: dict[bytes, bytes], scope: Scope) -> list[bytes]:
    """The token as a dashboard page sends it: `?token=` on the page, or its cookie."""
    found = [t.encode() for t in parse_qs(scope.get("query_string", b"").decode()).get("token", [])]
    cookie = SimpleCookie()
    cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
    if DASHBOARD_COOKIE in cookie:
        found.append(cookie[DASHBOARD_COOKIE].value.encode())
    return found
