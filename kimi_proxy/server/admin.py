"""The admin API, for the operator's token (`KIMI_PROXY_AUTH_TOKEN`) only: the users and the
usage, as `kimi-proxy users` and `kimi-proxy usage --format json` give them, through the same
implementation (`gateway/admin.py`, every change audited as made by `api`).

    GET    /admin/users                 {"data": [user, …]}       (never a key, nor its hash)
    POST   /admin/users                 {"name", "team", "rpm", "tpm", "concurrency",
                                        "daily_tokens"}
                                        → 201 {…user, "key"}: the key, shown once
    GET    /admin/users/{name}          the user
    PATCH  /admin/users/{name}          limits (null drops one), "revoked": true, or
                                        "rotate_key": true (→ {…user, "key"})
    DELETE /admin/users/{name}          204
    GET/POST /admin/teams, GET/PATCH/DELETE /admin/teams/{name}: the same for teams
    GET    /admin/usage?user=&since=&by= {"data": rows}
    GET    /admin/audit?since=          {"data": entries}
    GET    /admin/openapi.json

A user key gets 403 `permission_error`, no key 401, a duplicate name 409, bad fields 400 naming
the field, an unknown name 404. Without the proxy's token the admin API is closed (403).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kimi_proxy.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from kimi_proxy.gateway.admin import (
    Admin,
    FileAudit,
    FileUsers,
    RedisAudit,
    team_view,
    user_view,
)
from kimi_proxy.gateway.metering import DIMENSIONS, day_start, fold, stored_rows, week_before
from kimi_proxy.gateway.redis_users import RedisUsers
from kimi_proxy.gateway.users import (
    DEFAULT_USERS_FILE,
    NameTaken,
    UnknownName,
    UserError,
    UserFile,
)

from .bodies import json_response, parse_body
from .state import ProxyState

Limit = Annotated[int, Field(gt=0)] | None
Dollars = Annotated[float, Field(gt=0, allow_inf_nan=False)] | None
LIMITS = ("rpm", "tpm", "concurrency", "daily_tokens", "daily_usd", "monthly_usd")


class Limits(BaseModel):
    """The limits a user or a team may have; a patch's `null` drops one."""

    model_config = ConfigDict(extra="forbid")

    rpm: Limit = None
    tpm: Limit = None
    concurrency: Limit = None
    daily_tokens: Limit = None
    daily_usd: Dollars = None
    monthly_usd: Dollars = None

    def given(self) -> dict[str, Any]:
        """The limits sent with a value."""
        sent = self.model_fields_set
        return {n: getattr(self, n) for n in LIMITS if n in sent and getattr(self, n) is not None}

    def dropped(self) -> list[str]:
        """The limits sent as null."""
        return [n for n in LIMITS if n in self.model_fields_set and getattr(self, n) is None]


class NewTeam(Limits):
    name: str


class NewUser(NewTeam):
    team: str | None = None


class TeamPatch(Limits):
    pass


class UserPatch(Limits):
    team: str | None = None
    revoked: bool | None = None
    rotate_key: bool = False


def _admin(request: Request) -> Admin:
    """The operator's admin, or the refusal: a user key is never an operator's."""
    state: ProxyState = request.app.state.proxy
    if state.settings.auth_token_value is None:
        raise PermissionDeniedError(
            "The admin API needs the proxy's token: start kimi-proxy with "
            "KIMI_PROXY_AUTH_TOKEN set, and send it as the API key."
        )
    if request.scope.get("state", {}).get("user") is not None:
        raise PermissionDeniedError("The admin API takes the proxy's token, never a user key.")
    link = state.gateway.link
    if link is not None:
        prefix = link.gateway.prefix
        return Admin(RedisUsers(link.client, prefix), RedisAudit(link.client, prefix), "api")
    users_file = (state.settings.users_file or DEFAULT_USERS_FILE).expanduser()
    return Admin(FileUsers(UserFile(users_file)), FileAudit.beside(users_file), "api")


def _changed(request: Request) -> None:
    """This instance knows a change at once (the others within a second)."""
    state: ProxyState = request.app.state.proxy
    if state.gateway.users is not None:
        state.gateway.users.refresh(force=True)


def _user_error(exc: UserError) -> Exception:
    if isinstance(exc, UnknownName):
        return NotFoundError(str(exc))
    if isinstance(exc, NameTaken):
        return ConflictError(str(exc))
    return InvalidRequestError(str(exc))


async def list_users(request: Request) -> Response:
    admin = _admin(request)
    return json_response({"data": [user_view(u) for u in await admin.users()]})


async def add_user(request: Request) -> Response:
    admin = _admin(request)
    fields = await parse_body(request, NewUser)
    try:
        _, key = await admin.add(fields.name, fields.given(), fields.team)
    except UserError as exc:
        raise _user_error(exc) from None
    user = await admin.user(fields.name)
    assert user is not None
    _changed(request)
    return json_response({**user_view(user), "key": key}, 201)


async def get_user(request: Request) -> Response:
    admin = _admin(request)
    user = await admin.user(request.path_params["name"])
    if user is None:
        raise _user_error(UnknownName("user", request.path_params["name"]))
    return json_response(user_view(user))


async def patch_user(request: Request) -> Response:
    admin = _admin(request)
    name = request.path_params["name"]
    patch = await parse_body(request, UserPatch)
    given, clear = patch.given(), patch.dropped()
    key = None
    team = patch.team if "team" in patch.model_fields_set else None
    if "team" in patch.model_fields_set and patch.team is None:
        clear.append("team")
    try:
        if given or clear or team is not None:
            await admin.limit(name, dict.fromkeys(LIMITS) | given, clear, team)
        if patch.revoked:
            await admin.revoke(name)
        if patch.rotate_key:
            key = await admin.rotate(name)
        user = await admin.user(name)
    except UserError as exc:
        raise _user_error(exc) from None
    if user is None:
        raise _user_error(UnknownName("user", name))
    _changed(request)
    return json_response({**user_view(user), **({"key": key} if key else {})})


async def delete_user(request: Request) -> Response:
    admin = _admin(request)
    try:
        await admin.remove(request.path_params["name"])
    except UserError as exc:
        raise _user_error(exc) from None
    _changed(request)
    return Response(status_code=204)


async def list_teams(request: Request) -> Response:
    admin = _admin(request)
    return json_response({"data": [team_view(t) for t in await admin.teams()]})


async def add_team(request: Request) -> Response:
    admin = _admin(request)
    fields = await parse_body(request, NewTeam)
    try:
        team = await admin.add_team(fields.name, fields.given())
    except UserError as exc:
        raise _user_error(exc) from None
    _changed(request)
    return json_response(team_view(team), 201)


async def get_team(request: Request) -> Response:
    admin = _admin(request)
    name = request.path_params["name"]
    team = next((t for t in await admin.teams() if t.name == name), None)
    if team is None:
        raise _user_error(UnknownName("team", name))
    return json_response(team_view(team))


async def patch_team(request: Request) -> Response:
    admin = _admin(request)
    name = request.path_params["name"]
    patch = await parse_body(request, TeamPatch)
    try:
        team = await admin.limit_team(name, dict.fromkeys(LIMITS) | patch.given(), patch.dropped())
    except UserError as exc:
        raise _user_error(exc) from None
    _changed(request)
    return json_response(team_view(team))


async def delete_team(request: Request) -> Response:
    admin = _admin(request)
    try:
        await admin.remove_team(request.path_params["name"])
    except UserError as exc:
        raise _user_error(exc) from None
    _changed(request)
    return Response(status_code=204)


async def usage(request: Request) -> Response:
    _admin(request)
    state: ProxyState = request.app.state.proxy
    link = state.gateway.link
    if link is None:
        raise InvalidRequestError(
            "Usage is kept in Redis (KIMI_REDIS_URL); this proxy has none. Without it, read the "
            "access log with `kimi-proxy usage --access-log FILE`."
        )
    query = request.query_params
    since = _since(query.get("since"))
    by = tuple(p for p in (query.get("by") or "day,user,provider,model").split(",") if p)
    if not by or any(p not in DIMENSIONS for p in by):
        raise InvalidRequestError(f"by: group by any of {', '.join(DIMENSIONS)}, comma-separated.")
    today = datetime.now(UTC).date()
    rows = await stored_rows(link.client, link.gateway.prefix, since, today)
    folded = fold(rows, by, query.get("user"), since, query.get("team"))
    return json_response({"data": [row.as_dict(by) for row in folded]})


async def audit(request: Request) -> Response:
    admin = _admin(request)
    since = _since(request.query_params.get("since"))
    return json_response({"data": await admin.audit.read(day_start(since))})


def _since(value: str | None) -> date:
    if value is None:
        return week_before(datetime.now(UTC).date())
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"since: {value!r} is not a date like 2026-12-01.") from None


async def openapi(request: Request) -> Response:
    return json_response(OPENAPI)


def admin_routes() -> list[Route]:
    return [
        Route("/admin/users", list_users, methods=["GET"]),
        Route("/admin/users", add_user, methods=["POST"]),
        Route("/admin/users/{name}", get_user, methods=["GET"]),
        Route("/admin/users/{name}", patch_user, methods=["PATCH"]),
        Route("/admin/users/{name}", delete_user, methods=["DELETE"]),
        Route("/admin/teams", list_teams, methods=["GET"]),
        Route("/admin/teams", add_team, methods=["POST"]),
        Route("/admin/teams/{name}", get_team, methods=["GET"]),
        Route("/admin/teams/{name}", patch_team, methods=["PATCH"]),
        Route("/admin/teams/{name}", delete_team, methods=["DELETE"]),
        Route("/admin/usage", usage, methods=["GET"]),
        Route("/admin/audit", audit, methods=["GET"]),
        Route("/admin/openapi.json", openapi, methods=["GET"]),
    ]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "kimi-proxy admin API", "version": "1"},
    "components": {
        "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        "schemas": {
            "NewUser": _schema(NewUser),
            "UserPatch": _schema(UserPatch),
            "NewTeam": _schema(NewTeam),
            "TeamPatch": _schema(TeamPatch),
        },
    },
    "security": [{"token": []}],
    "paths": {
        "/admin/users": {
            "get": {"summary": "The users (never their keys)"},
            "post": {
                "summary": "Add a user; the answer holds its key, shown once",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/NewUser"}}
                    }
                },
                "responses": {"201": {"description": "added"}, "409": {"description": "taken"}},
            },
        },
        "/admin/users/{name}": {
            "get": {"summary": "One user"},
            "patch": {
                "summary": "Change limits (null drops one), revoke, or rotate the key",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/UserPatch"}}
                    }
                },
            },
            "delete": {"summary": "Remove a user", "responses": {"204": {"description": "gone"}}},
        },
        "/admin/teams": {"get": {"summary": "The teams"}, "post": {"summary": "Add a team"}},
        "/admin/teams/{name}": {
            "get": {"summary": "One team"},
            "patch": {"summary": "Change its limits (null drops one)"},
            "delete": {"summary": "Remove a team without members"},
        },
        "/admin/usage": {"get": {"summary": "Usage rows, as `kimi-proxy usage --format json`"}},
        "/admin/audit": {"get": {"summary": "Every change to users, by CLI or API"}},
    },
}
