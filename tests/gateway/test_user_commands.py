"""`kimi-proxy users` where the gateway is: a revoked user re-keyed or removed, limits changed
one at a time, and no silent write of this machine's users file when Redis was meant."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.redis_server import RedisServer, redis_server

from kimi_proxy.gateway.users import UserFile


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "users", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture(params=["file", "redis"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment that points `users` at one store: a users file, or Redis."""
    if request.param == "file":
        return {"KIMI_USERS_FILE": str(tmp_path / "users.json")}
    server: RedisServer = request.getfixturevalue("redis")
    return {"KIMI_REDIS_URL": server.url}


def listed(env: dict[str, str]) -> dict[str, str]:
    done = cli("list", **env)
    assert done.returncode == 0, done.stderr
    return dict(line.split("\t", 1) for line in done.stdout.splitlines())


def test_a_revoked_user_gets_a_new_key_and_can_be_removed(where: dict[str, str]) -> None:
    first = cli("add", "alice", "--rpm", "30", **where)
    assert first.returncode == 0, first.stderr
    assert cli("revoke", "alice", **where).returncode == 0
    assert cli("add", "alice", **where).returncode == 2  # still exists: rotate or remove
    rotated = cli("rotate", "alice", **where)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key.startswith("kpu_") and new_key != first.stdout.strip().splitlines()[-1]
    assert listed(where)["alice"] == "active\trpm 30"
    assert cli("remove", "alice", **where).returncode == 0
    assert "alice" not in listed(where)
    for gone in (["rotate", "alice"], ["remove", "alice"], ["revoke", "alice"]):
        refused = cli(*gone, **where)
        assert refused.returncode == 2 and "No user named 'alice'" in refused.stderr


def test_limits_change_only_the_ones_named(where: dict[str, str]) -> None:
    added = cli("add", "bob", "--rpm", "30", "--tpm", "200000", "--daily-tokens", "5000", **where)
    assert added.returncode == 0, added.stderr
    assert cli("limits", "bob", "--rpm", "10", **where).returncode == 0
    assert listed(where)["bob"] == "active\trpm 10, tpm 200,000, daily tokens 5,000"
    assert (
        cli("limits", "bob", "--clear", "tpm", "--clear", "daily-tokens", **where).returncode == 0
    )
    assert listed(where)["bob"] == "active\trpm 10"
    both = cli("limits", "bob", "--rpm", "5", "--clear", "rpm", **where)
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert listed(where)["bob"] == "active\trpm 10"  # nothing half-written


def test_without_redis_a_change_to_this_machines_file_must_be_meant(tmp_path: Path) -> None:
    home_file = Path(os.environ["HOME"]) / ".config" / "kimi-proxy" / "users.json"
    refused = cli("add", "carol")
    assert refused.returncode == 2
    assert str(home_file) in refused.stderr and "KIMI_REDIS_URL" in refused.stderr
    assert "--file" in refused.stderr
    assert not home_file.exists(), "the admin's own users file was written"
    meant = cli("--file", "add", "carol")
    assert meant.returncode == 0, meant.stderr
    assert "carol" in UserFile(home_file).load()
    home_file.unlink()


def command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_teams_and_dollar_budgets_refuse_bad_input_and_write_nothing(
    where: dict[str, str],
) -> None:
    assert command("teams", "add", "eng", "--rpm", "5", **where).returncode == 0
    assert (
        command("users", "add", "ann", "--team", "eng", "--daily-usd", "20", **where).returncode
        == 0
    )
    users_before = command("users", "list", **where).stdout
    teams_before = command("teams", "list", **where).stdout
    audit_before = command("audit", **where).stdout
    for bad in (
        ["teams", "add", "eng"],  # exists
        ["teams", "add", "ops", "--rpm", "-1"],
        ["teams", "add", "ops", "--monthly-usd", "lots"],
        ["teams", "limits", "nobody", "--rpm", "3"],
        ["teams", "remove", "eng"],  # still has a member
        ["teams", "remove", "nobody"],
        ["users", "add", "bo", "--daily-usd", "-5"],
        ["users", "add", "bo", "--team", "nope"],
        ["users", "limits", "ann", "--team", "nope"],
        ["users", "limits", "ann", "--team", "eng", "--clear", "team"],
    ):
        refused = command(*bad, **where)
        assert refused.returncode == 2, (bad, refused.stdout, refused.stderr)
        assert "Traceback" not in refused.stderr and refused.stderr.strip(), bad
    assert command("users", "list", **where).stdout == users_before
    assert command("teams", "list", **where).stdout == teams_before
    assert command("audit", **where).stdout == audit_before
    assert "ann\tactive\t$20.00 a day\tteam eng" in users_before
