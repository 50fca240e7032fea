"""Users of a shared proxy (single machine: a users file): keys shown once and stored hashed,
every request needing one once a user exists, revocation seen within a second by every
instance, and each user's own limits refused as the user's — not the provider's."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.proxy import proxy_settings, serve_app
from support.sse_client import BASIC, parse_sse
from support.upstream import Pause, Stream, chunk, scripted_upstream, text_stream, usage

from kimi_proxy.config.gateway import DEFAULT_COUNT_TOKENS_PER_MINUTE, DEFAULT_USER_CONCURRENCY
from kimi_proxy.server.app import create_app


def users(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "users", "--users-file", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def add(path: Path, name: str, *limits: str) -> str:
    done = users(path, "add", name, *limits)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def instances(
    path: Path, count: int = 1, script: Any = None, **overrides: Any
) -> Iterator[list[str]]:
    with ExitStack() as stack:
        upstream = stack.enter_context(
            scripted_upstream(script or (lambda b, n: text_stream("hello")))
        )
        settings = proxy_settings(upstream.base_url, users_file=path, **overrides)
        yield [stack.enter_context(serve_app(create_app(settings))) for _ in range(count)]


def post(url: str, key: str | None, **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/messages", json={**BASIC, **body}, headers=headers, timeout=20)


def test_a_key_is_shown_once_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    key = add(path, "alice", "--rpm", "30", "--daily-tokens", "1000000")
    assert key.startswith("kpu_") and len(key) > 40
    stored = path.read_text()
    assert key not in stored and "alice" in stored
    assert path.stat().st_mode & 0o777 == 0o600
    listed = users(path, "list")
    assert (
        listed.stdout == "alice\tactive\trpm 30, daily tokens 1,000,000\n"
        and key not in listed.stdout
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["add", "alice"], "exists already"),
        (["add", "bob", "--rpm", "-5"], "a limit must be above 0"),
        (["add", "bob", "--tpm", "lots"], "is not a whole number"),
        (["add", "no spaces please"], "is not a usable name"),
        (["revoke", "carol"], "No user named 'carol'"),
        (["limits", "carol", "--rpm", "3"], "No user named 'carol'"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_half_written(
    tmp_path: Path, args: list[str], words: str
) -> None:
    path = tmp_path / "users.json"
    add(path, "alice")
    before = path.read_text()
    done = users(path, *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_text() == before


def test_once_a_user_exists_every_request_needs_a_key_and_revocation_reaches_every_instance(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.json"
    with instances(path, count=2) as (first, second):
        assert post(first, None).status_code == 200  # no users yet: open as before
        key = add(path, "alice")
        time.sleep(0.6)
        refused = post(first, None)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert "ANTHROPIC_AUTH_TOKEN" in refused.json()["error"]["message"]
        assert post(first, "kpu_not-a-key").status_code == 401
        assert post(first, key).status_code == 200 and post(second, key).status_code == 200
        assert users(path, "revoke", "alice").returncode == 0
        revoked = time.monotonic()
        for url in (first, second):
            while post(url, key).status_code != 401:
                assert time.monotonic() - revoked < 1.0
                time.sleep(0.05)
        assert httpx.get(f"{first}/health").status_code == 200  # probes need no key


def test_a_users_own_limits_are_refused_as_the_users(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    key = add(path, "alice", "--rpm", "2")
    with instances(path) as (url,):
        assert [post(url, key).status_code for _ in range(2)] == [200, 200]  # 2 at once
        third = post(url, key)
        assert third.status_code == 429 and int(third.headers["retry-after"]) > 0
        message = third.json()["error"]["message"]
        assert "User 'alice'" in message and "requests a minute" in message
        assert "not the provider's" in message


def test_a_users_concurrent_streams_are_limited_and_released(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    key = add(path, "alice", "--concurrency", "1")
    slow = Stream(
        [chunk({"role": "assistant", "content": "a"}), Pause(1.0), *text_stream("b").items]
    )
    with instances(path, script=lambda b, n: slow) as (url,):
        headers = {"authorization": f"Bearer {key}"}
        with (
            httpx.Client(timeout=20) as client,
            client.stream(
                "POST", f"{url}/v1/messages", json={**BASIC, "stream": True}, headers=headers
            ) as first,
        ):
            lines = first.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)
            second = post(url, key, stream=True)
            assert (
                second.status_code == 429
                and "concurrent streams" in second.json()["error"]["message"]
            )
            for _ in lines:
                pass
        assert post(url, key, stream=True).status_code == 200  # released when it ended


def test_the_dashboard_shows_usage_per_user(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    key = add(path, "alice")
    operator = "operator-token-0123456789abcdef-0123"
    with instances(path, auth_token=operator) as (url,):
        post(url, key, stream=True)
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "GET", f"{url}/dashboard/events", headers={"authorization": f"Bearer {operator}"}
            ) as feed,
        ):
            for line in feed.iter_lines():
                if line.startswith("data:"):
                    snapshot = json.loads(line[5:])
                    break
    assert snapshot["today"]["users"]["alice"]["requests"] == 1
    assert snapshot["recent"][-1]["user"] == "alice"


def test_a_damaged_users_file_keeps_the_users_last_read(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    key = add(path, "alice")
    with instances(path) as (url,):
        assert post(url, key).status_code == 200
        path.write_text("{ not json")
        time.sleep(0.6)
        assert post(url, key).status_code == 200  # not a 500 for everyone
        assert post(url, None).status_code == 401
        path.unlink()  # M2: a removed file opens nothing either
        time.sleep(0.6)
        assert post(url, key).status_code == 200 and post(url, None).status_code == 401


def test_a_users_file_never_read_serves_no_one_until_it_can_be(tmp_path: Path) -> None:
    """M2: a corrupt users file at start used to turn the gateway into an open proxy."""
    path = tmp_path / "users.json"
    key = add(path, "alice")
    good = path.read_text()
    path.write_text("{ not json")
    with instances(path) as (url,):
        refused = post(url, None)
        assert refused.status_code == 503 and "users file" in refused.json()["error"]["message"]
        assert post(url, key).status_code == 503
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "users_unreadable"
        path.write_text(good)
        time.sleep(0.6)
        assert post(url, key).status_code == 200 and post(url, None).status_code == 401
        assert httpx.get(f"{url}/ready").status_code == 200


def test_users_never_open_the_dashboard_metrics_or_another_users_session(tmp_path: Path) -> None:
    """M1: with users and no proxy token, any user key used to open the dashboard and its feed
    (every user's requests). Now those are the operator's; a user's status line reads only the
    user's own sessions."""
    path = tmp_path / "users.json"
    alice, bob = add(path, "alice"), add(path, "bob")
    with instances(path, dashboard="on") as (url,):
        for user_key in (alice, bob):
            for where in ("/dashboard", "/dashboard/events", "/metrics"):
                closed = httpx.get(f"{url}{where}", headers={"x-api-key": user_key})
                assert closed.status_code == 403, where
                assert "KIMI_PROXY_AUTH_TOKEN" in closed.json()["error"]["message"]
        session = {"x-claude-code-session-id": "sess-alice-1"}
        answer = httpx.post(
            f"{url}/v1/messages", json=BASIC, headers={"x-api-key": alice, **session}
        )
        assert answer.status_code == 200
        status = f"{url}/status/session/sess-alice-1"
        assert httpx.get(status, headers={"x-api-key": alice}).json()["known"] is True
        assert httpx.get(status, headers={"x-api-key": bob}).json()["known"] is False


def test_a_user_without_a_concurrency_limit_gets_the_gateways_default(tmp_path: Path) -> None:
    """M7: with no limit of their own, one user could take every stream slot of the instance."""
    path = tmp_path / "users.json"
    key = add(path, "alice", "--rpm", "1000")
    slow = Stream(
        [chunk({"role": "assistant", "content": "a"}), Pause(2.0), *text_stream("b").items]
    )
    headers = {"authorization": f"Bearer {key}"}
    with (
        instances(path, script=lambda b, n: slow) as (url,),
        httpx.Client(timeout=20) as client,
        ExitStack() as streams,
    ):
        lines = []  # kept: a dropped iterator closes its stream
        for _ in range(DEFAULT_USER_CONCURRENCY):
            opened = streams.enter_context(
                client.stream(
                    "POST", f"{url}/v1/messages", json={**BASIC, "stream": True}, headers=headers
                )
            )
            assert opened.status_code == 200
            lines.append(opened.iter_lines())
            next(lines[-1])
        refused = post(url, key, stream=True)
        assert refused.status_code == 429
        message = refused.json()["error"]["message"]
        assert f"already has {DEFAULT_USER_CONCURRENCY} requests running" in message


def test_bodies_in_flight_are_bounded_per_user_and_per_process(tmp_path: Path) -> None:
    """H3: forty parallel 31 MB uploads from a user with concurrency 1 took a process to
    1.3 GB. A user sends as many bodies at once as the user's concurrency; all bodies together
    stay within KIMI_MAX_BODIES_BYTES (one body alone is always read)."""
    path = tmp_path / "users.json"
    alice, bob = add(path, "alice", "--concurrency", "1"), add(path, "bob")
    with instances(path, max_bodies_bytes=1_500_000) as (url,):
        host, port = url.removeprefix("http://").split(":")

        def start_upload(key: str, size: int) -> socket.socket:
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(
                b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\nx-api-key: %s\r\n"
                b"content-length: %d\r\n\r\n{" % (key.encode(), size)
            )  # and the rest of the body never comes (yet)
            return sock

        with contextlib.closing(start_upload(alice, 1_000_000)):
            time.sleep(0.3)
            second = post(url, alice)
            assert second.status_code == 429
            assert "sending 1 requests at once" in second.json()["error"]["message"]
            with contextlib.closing(start_upload(bob, 1_000_000)):
                time.sleep(0.3)
                third = httpx.post(
                    f"{url}/v1/messages",
                    content=b"x" * 600_000,
                    headers={"x-api-key": bob, "content-type": "application/json"},
                )
                assert third.status_code == 529
                assert "KIMI_MAX_BODIES_BYTES" in third.json()["error"]["message"]
        time.sleep(0.3)  # the stalled uploads' connections closed: their bytes are let go
        assert post(url, alice).status_code == 200 and post(url, bob).status_code == 200


def test_a_users_token_limit_counts_the_answer_budget_that_is_sent(tmp_path: Path) -> None:
    """Low: Claude Code asks max_tokens 128,000; the provider gets at most its cap (16,384
    here). A user's limit of 50,000 tokens a minute used to refuse every such request (400)."""
    path = tmp_path / "users.json"
    key = add(path, "alice", "--tpm", "50000")
    with instances(path) as (url,):
        answer = post(url, key, max_tokens=128_000)
        assert answer.status_code == 200, answer.text


def test_small_holes_in_the_users_file_are_closed(tmp_path: Path) -> None:
    """Lows: a name ending in a line break was accepted; a users file named `….lock` was
    wiped by its own lock."""
    path = tmp_path / "users.json"
    done = users(path, "add", "alice\n")
    assert done.returncode == 2 and "is not a usable name" in done.stderr
    locked = tmp_path / "team.lock"
    add(locked, "alice")
    add(locked, "bob")
    assert users(locked, "list").stdout.count("active") == 2


def test_ready_says_so_while_the_users_are_not_known(tmp_path: Path) -> None:
    """Low: started with Redis down, /ready said 200 while every request was refused."""
    with instances(tmp_path / "users.json", redis_url="redis://127.0.0.1:9/0") as (url,):
        assert post(url, None).status_code == 503
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "users_unknown"


def test_token_counts_have_a_limit_of_their_own(tmp_path: Path) -> None:
    """H3: `count_tokens` reaches no provider, so no limit counted it: one user could have the
    instance parse and count bodies without end. Now DEFAULT_COUNT_TOKENS_PER_MINUTE a minute
    a user, refused before the body is read; the user's messages and other users go on."""
    path = tmp_path / "users.json"
    alice, bob = add(path, "alice"), add(path, "bob")
    with instances(path) as (url,), httpx.Client(base_url=url, timeout=20) as client:

        def count(key: str) -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"}
            return client.post("/v1/messages/count_tokens", json=BASIC, headers=headers)

        for _ in range(DEFAULT_COUNT_TOKENS_PER_MINUTE):
            assert count(alice).status_code == 200
        refused = count(alice)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        message = refused.json()["error"]["message"]
        assert f"{DEFAULT_COUNT_TOKENS_PER_MINUTE} token counts in the last minute" in message
        assert "count_tokens_per_minute" in message
        assert count(bob).status_code == 200
        assert post(url, alice).status_code == 200


def test_a_burst_of_text_crafted_to_be_counted_low_overshoots_by_one_request_at_most(
    tmp_path: Path,
) -> None:
    """M4: limits are admitted on the calibrated estimate; text crafted so that the provider
    counts far more (here a token a byte, the estimate ~4.5 bytes a token) used to pass eight
    at once. While one of the user's requests runs, the others reserve the prompt's bound (the
    most tokens its bytes can be): the window goes over by one request's under-count at most."""
    path = tmp_path / "users.json"
    limit = 60_000
    key = add(path, "alice", "--tpm", str(limit))
    crafted = "".join(chr(97 + (i * 7919) % 26) for i in range(20_000))  # no words, no spaces

    def provider(body: dict[str, Any], n: int) -> Stream:
        counted = sum(len(str(m.get("content"))) for m in body["messages"])  # a token a byte
        items = [chunk({"role": "assistant", "content": "ok"}), Pause(1.0), chunk({}, "stop")]
        return Stream([*items, chunk(choices=False, usage=usage(prompt=counted, completion=1))])

    def billed(answer: httpx.Response) -> int:
        """The tokens a served stream was billed (its final usage)."""
        events = parse_sse(answer.content)
        final = [data["usage"] for name, data in events if name == "message_delta"][-1]
        return int(final["input_tokens"] + final["output_tokens"])

    ask = {"max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": crafted}]}
    with instances(path, script=provider) as (url,), ThreadPoolExecutor(8) as burst:
        answers = list(burst.map(lambda _: post(url, key, **ask), range(8)))
    served = [a for a in answers if a.status_code == 200]
    assert all(a.status_code in (200, 429) for a in answers)
    used = sum(billed(a) for a in served)
    assert 1 <= len(served) < 8
    assert used <= limit + 20_001, (len(served), used)  # over by one request's tokens at most
