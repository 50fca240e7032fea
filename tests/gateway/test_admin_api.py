"""The admin API on a single machine (the users file), for the operator's token only: users
added, changed and removed through the same implementation as `kimi-proxy users`, every change
audited, bad input refused with the right status and nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.proxy import proxy_for
from support.sse_client import BASIC
from support.upstream import text_stream

OPERATOR = "operator-token-0123456789abcdef-0123"


def test_the_operator_manages_users_and_everyone_else_is_refused(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"
    audit_file = tmp_path / "users.audit.jsonl"
    env = {**os.environ, "KIMI_USERS_FILE": str(users_file)}
    added = subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "users", "add", "ann", "--rpm", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    ann_key = added.stdout.strip().splitlines()[-1]
    operator = {"x-api-key": OPERATOR}
    with (
        proxy_for(
            lambda b, n: text_stream("hi"), auth_token=OPERATOR, users_file=users_file
        ) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as http,
    ):
        assert http.get("/admin/users").status_code == 401
        as_user = http.get("/admin/users", headers={"x-api-key": ann_key})
        assert as_user.status_code == 403
        assert as_user.json()["error"]["type"] == "permission_error"

        made = http.post("/admin/users", json={"name": "bo", "tpm": 50_000}, headers=operator)
        assert made.status_code == 201, made.text
        bo = made.json()
        assert bo["name"] == "bo" and bo["tpm"] == 50_000 and bo["key"].startswith("kpu_")
        works = http.post("/v1/messages", json=BASIC, headers={"x-api-key": bo["key"]})
        assert works.status_code == 200

        before = (users_file.read_bytes(), audit_file.read_bytes())
        for method, path, body, status, words in [
            ("post", "/admin/users", {"name": "bo"}, 409, "exists already"),
            ("post", "/admin/users", {"name": "cy", "rpm": -1}, 400, "rpm"),
            ("post", "/admin/users", {"name": "cy", "team": "eng"}, 400, "team"),
            ("post", "/admin/users", {"name": "bad name!"}, 400, "not a usable name"),
            ("post", "/admin/users", {"rpm": 3}, 400, "name"),
            ("patch", "/admin/users/nobody", {"rpm": 3}, 404, "No user named"),
            ("patch", "/admin/users/bo", {"rpm": "lots"}, 400, "rpm"),
            ("delete", "/admin/users/nobody", None, 404, "No user named"),
            ("get", "/admin/users/nobody", None, 404, "No user named"),
            ("get", "/admin/audit?since=yesterday", None, 400, "since"),
        ]:
            answer = http.request(method, path, json=body, headers=operator)
            assert answer.status_code == status, (method, path, answer.text)
            assert words in answer.json()["error"]["message"], answer.text
        assert (users_file.read_bytes(), audit_file.read_bytes()) == before  # nothing written

        changed = http.patch("/admin/users/bo", json={"rpm": 3, "tpm": None}, headers=operator)
        assert (changed.json()["rpm"], changed.json()["tpm"]) == (3, None)
        rotated = http.patch("/admin/users/bo", json={"rotate_key": True}, headers=operator)
        assert rotated.json()["key"] != bo["key"]
        listed = http.get("/admin/users", headers=operator).json()["data"]
        assert [u["name"] for u in listed] == ["ann", "bo"]
        assert "key" not in listed[1] and "kpu_" not in json.dumps(listed)
        team = http.post("/admin/teams", json={"name": "eng", "rpm": 5}, headers=operator)
        assert team.status_code == 201 and team.json()["rpm"] == 5
        moved = http.patch("/admin/users/bo", json={"team": "eng"}, headers=operator)
        assert moved.json()["team"] == "eng"
        assert http.delete("/admin/teams/eng", headers=operator).status_code == 400  # members
        assert (
            http.patch("/admin/teams/eng", json={"rpm": None}, headers=operator).json()["rpm"]
            is None
        )
        assert [t["name"] for t in http.get("/admin/teams", headers=operator).json()["data"]] == [
            "eng"
        ]
        assert http.delete("/admin/users/bo", headers=operator).status_code == 204
        assert http.delete("/admin/teams/eng", headers=operator).status_code == 204
        spec = http.get("/admin/openapi.json", headers=operator).json()
        assert "/admin/users/{name}" in spec["paths"]
        trail = http.get("/admin/audit", headers=operator).json()["data"]
    assert [(e["who"], e["action"], e["target"]) for e in trail] == [
        ("cli", "add", "ann"),
        ("api", "add", "bo"),
        ("api", "limits", "bo"),
        ("api", "rotate", "bo"),
        ("api", "team add", "eng"),
        ("api", "limits", "bo"),
        ("api", "team limits", "eng"),
        ("api", "remove", "bo"),
        ("api", "team remove", "eng"),
    ]
    assert trail[2]["fields"] == {"rpm": 3, "tpm": None}
    assert "kpu_" not in audit_file.read_text()
    assert audit_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("token", [None])
def test_without_the_proxys_token_the_admin_api_is_closed(token: str | None) -> None:
    with proxy_for(lambda b, n: text_stream("hi"), auth_token=token) as proxy:
        answer = httpx.get(f"{proxy.url}/admin/users")
    assert answer.status_code == 403
    assert "KIMI_PROXY_AUTH_TOKEN" in answer.json()["error"]["message"]
