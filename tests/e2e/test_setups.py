"""Every documented setup, the way a new user meets it: `./kimi.sh -p` from an empty home folder
with only the variables the README names, against a scripted provider; the team gateway's
refusals read by the person at once (the real Claude Code); and the launcher's proxy dying with
the launcher, however the launcher goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.claude import (
    ClaudeRun,
    RunClaude,
    as_from_a_terminal,
    headless_args,
    hermetic_env,
    run_claude,
)
from support.instances import Instance, start
from support.model import ScriptedModel
from support.proxy import TEST_KEY
from support.terminal import Terminal
from support.upstream import ScriptedUpstream, free_port, scripted_upstream

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KIMI_SH = REPO / "kimi.sh"
HELLO = "Hello from the scripted model."
KIMI_MODELS = ["kimi-k2.6", "kimi-k2.7-code", "kimi-k2.7-code-highspeed", "kimi-k3"]


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A KIMI_VENV that kimi.sh accepts as set up: it runs this test run's kimi-proxy."""
    path = tmp_path / "venv"
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "kimi-proxy").symlink_to(Path(sys.prefix) / "bin" / "kimi-proxy")
    (path / ".kimi-proxy-installed").touch()
    return path


@pytest.fixture
def path_with_claude(tmp_path: Path, claude_bin: Path) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "claude").symlink_to(claude_bin)
    return f"{folder}:{os.environ['PATH']}"


@pytest.fixture
def kimi() -> ScriptedUpstream:
    """A provider serving Moonshot's model list."""
    with scripted_upstream(ScriptedModel(), models=KIMI_MODELS) as server:
        yield server  # type: ignore[misc]


def kimi_sh(home: Path, project: Path, path: str, venv: Path, **env: str) -> ClaudeRun:
    """`./kimi.sh -p` with only `env` (and a fresh HOME) from the user."""
    environment = hermetic_env(home, KIMI_VENV=str(venv), KIMI_PROXY_PORT=str(free_port()), **env)
    environment["PATH"] = path
    command = [str(KIMI_SH), *headless_args("E2E-HELLO: hi")]
    return run_claude(command, cwd=project, env=environment, timeout=90)


def write_config(home: Path, text: str) -> None:
    folder = home / ".config" / "kimi-proxy"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(text)


def test_moonshot_key_and_a_config_file_naming_moonshots_base_url(
    home: Path, project: Path, path_with_claude: str, venv: Path, kimi: ScriptedUpstream
) -> None:
    write_config(
        home,
        f'[[provider]]\nname = "moonshot"\nbase_url = "{kimi.base_url}"\n'
        'keys = ["${MOONSHOT_API_KEY}"]\n',
    )
    run = kimi_sh(home, project, path_with_claude, venv, MOONSHOT_API_KEY="sk-moonshot-test-1")
    run.assert_success(HELLO)
    assert "starting kimi-proxy" in run.stderr and "config.toml" in run.stderr
    assert {r.body["model"] for r in kimi.requests} <= set(KIMI_MODELS)
    assert kimi.requests[-1].headers["authorization"] == "Bearer sk-moonshot-test-1"


@pytest.mark.parametrize("keyless", [False, True], ids=["own-key", "keyless"])
def test_a_config_file_with_only_a_custom_provider(
    keyless: bool,
    home: Path,
    project: Path,
    path_with_claude: str,
    venv: Path,
    kimi: ScriptedUpstream,
) -> None:
    auth = 'auth = "none"' if keyless else 'keys = ["${MYVLLM_KEY}"]'
    write_config(
        home,
        f'[[provider]]\nname = "myvllm"\nbase_url = "{kimi.base_url}"\n{auth}\n\n'
        '[family.kimi]\ncandidates = ["myvllm:kimi-k2.6"]\n',
    )
    env = {} if keyless else {"MYVLLM_KEY": "vllm-key-0001"}
    kimi_sh(home, project, path_with_claude, venv, **env).assert_success(HELLO)
    sent = kimi.requests[-1].headers.get("authorization")
    assert sent == (None if keyless else "Bearer vllm-key-0001")


def users(file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_proxy", "users", "--users-file", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def gateway(tmp_path: Path, upstream: ScriptedUpstream, users_file: Path) -> Instance:
    return start(
        tmp_path / "gateway.log",
        KIMI_UPSTREAM_URL=upstream.base_url,
        KIMI_API_KEY=TEST_KEY,
        KIMI_MODEL="kimi-k2.6",
        KIMI_USERS_FILE=str(users_file),
    )


def test_a_team_member_needs_only_the_gateway_and_a_key_and_a_revoked_key_stops_at_once(
    tmp_path: Path,
    home: Path,
    project: Path,
    path_with_claude: str,
    venv: Path,
    kimi: ScriptedUpstream,
) -> None:
    users_file = tmp_path / "users.json"
    added = users(users_file, "add", "alice")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    instance = gateway(tmp_path, kimi, users_file)
    try:
        env = {"KIMI_GATEWAY_URL": instance.url, "KIMI_USER_KEY": key}
        run = kimi_sh(home, project, path_with_claude, venv, **env)
        run.assert_success(HELLO)
        assert f"using the team gateway {instance.url}" in run.stderr
        assert not (home / ".local" / "state" / "kimi-proxy" / "launcher.log").exists()

        assert users(users_file, "revoke", "alice").returncode == 0
        started = time.monotonic()
        refused = kimi_sh(home, project, path_with_claude, venv, **env)
        assert time.monotonic() - started < 20
        assert refused.returncode == 2
        assert "does not know your user key" in refused.stderr
        assert "team lead" in refused.stderr
    finally:
        instance.process.kill()
        instance.process.wait(timeout=10)


def test_claude_code_shows_a_gateways_refusals_at_once(
    tmp_path: Path, claude: RunClaude, kimi: ScriptedUpstream
) -> None:
    """The person reads who, which limit, when it resets and whom to ask, within seconds:
    no three minutes of retries ending in "Not logged in", no "retrying in 30s"."""
    users_file = tmp_path / "users.json"
    revoked = users(users_file, "add", "bob").stdout.strip().splitlines()[-1]
    assert users(users_file, "revoke", "bob").returncode == 0
    limited = users(users_file, "add", "carol", "--rpm", "1").stdout.strip().splitlines()[-1]
    instance = gateway(tmp_path, kimi, users_file)
    try:
        cases = [
            (revoked, "does not know your user key"),
            (limited, None),  # the one request a minute carol has
            (limited, "User 'carol''s limit is reached"),
        ]
        for key, expected in cases:
            started = time.monotonic()
            result = claude(
                instance.url,
                "E2E-HELLO: hi",
                ANTHROPIC_API_KEY=key,
                CLAUDE_CODE_MAX_RETRIES="10",
            )
            if expected is None:
                result.assert_success(HELLO)
                continue
            assert time.monotonic() - started < 10, result.describe()
            assert result.result["is_error"] is True
            assert expected in result.result["result"], result.describe()
            assert not result.of_type("system", "api_retry"), "Claude Code retried it"
    finally:
        instance.process.kill()
        instance.process.wait(timeout=10)


@pytest.mark.parametrize("how", ["SIGHUP", "SIGTERM", "SIGINT", "SIGKILL"])
def test_the_launchers_proxy_dies_with_it(
    how: str, tmp_path: Path, home: Path, project: Path, venv: Path, kimi: ScriptedUpstream
) -> None:
    """A closed terminal (SIGHUP), a kill (SIGTERM), Ctrl-C to the whole group (SIGINT), or a
    launcher killed outright: no proxy is left running with the session's keys."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    (folder / "claude").write_text("#!/bin/sh\nexec sleep 60\n")
    (folder / "claude").chmod(0o755)
    port = free_port()
    env = hermetic_env(
        home,
        KIMI_VENV=str(venv),
        KIMI_PROXY_PORT=str(port),
        KIMI_API_KEY="sk-moonshot-test-2",
        KIMI_UPSTREAM_URL=kimi.base_url,
        KIMI_MODEL="kimi-k2.6",
    )
    env["PATH"] = f"{folder}:{env['PATH']}"
    launcher = subprocess.Popen(
        [str(KIMI_SH), "-p", "hi"],
        cwd=project,
        env=env,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            assert time.monotonic() < deadline and launcher.poll() is None, "no proxy started"
            time.sleep(0.1)
        time.sleep(0.5)  # Claude Code (here: sleep) is running
        if how == "SIGINT":  # Ctrl-C: the terminal signals the whole foreground group
            os.killpg(launcher.pid, signal.SIGINT)
        else:
            launcher.send_signal(getattr(signal, how))
        launcher.wait(timeout=20)
        deadline = time.monotonic() + 15
        while listening(port):
            assert time.monotonic() < deadline, f"the proxy outlived its launcher ({how})"
            time.sleep(0.1)
    finally:
        with_pid = launcher.pid
        if launcher.poll() is None:
            os.killpg(with_pid, signal.SIGKILL)
            launcher.wait(timeout=10)


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_in_the_terminal_a_team_member_reads_the_gateways_refusals_at_once(
    tmp_path: Path,
    home: Path,
    project: Path,
    path_with_claude: str,
    venv: Path,
    kimi: ScriptedUpstream,
) -> None:
    """`./kimi.sh` against the team gateway, in the terminal UI a person uses (not `-p`): the
    user's own limit with a long reset, then the key revoked mid-session — each our sentence on
    the screen within 10 s, and no "Retrying"."""
    users_file = tmp_path / "users.json"
    key = users(users_file, "add", "carol", "--rpm", "1").stdout.strip().splitlines()[-1]
    instance = gateway(tmp_path, kimi, users_file)
    env = hermetic_env(
        home,
        KIMI_VENV=str(venv),
        KIMI_GATEWAY_URL=instance.url,
        KIMI_USER_KEY=key,
        TERM="xterm-256color",
    )
    env["PATH"] = path_with_claude
    try:
        with Terminal([str(KIMI_SH)], cwd=project, env=env) as terminal:
            terminal.through_first_run()
            terminal.type("E2E-HELLO: hi")  # carol's one request a minute
            terminal.wait_for(HELLO)
            for prompt, sentence in (
                ("E2E-HELLO: again", "User 'carol''s limit is reached"),
                ("E2E-HELLO: once more", "does not know your user key"),
            ):
                if "key" in sentence:
                    assert users(users_file, "revoke", "carol").returncode == 0
                    time.sleep(1)  # every instance sees a revocation within a second
                started = time.monotonic()
                terminal.type(prompt)
                terminal.wait_for(sentence, timeout=10, after=prompt)
                assert time.monotonic() - started < 10
                assert not terminal.shows("Retrying", after=prompt), terminal.screen
            terminal.type("/exit")
            assert terminal.wait_exit() == 0
    finally:
        instance.process.kill()
        instance.process.wait(timeout=10)
