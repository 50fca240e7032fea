"""The one-command launchers (`./kimi.sh`, `kimi-proxy code`) with the real Claude Code CLI.

The launcher finds `claude` on PATH (a symlink to the pinned CLI), starts the proxy against the
scripted upstream unless one answers already, runs Claude Code and stops what it started.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from support.claude import ClaudeRun, as_from_a_terminal, headless_args, hermetic_env, run_claude
from support.model import (
    RISKY,
    SLOW_COMMAND,
    STORY,
    Conversation,
    ScriptedModel,
    content_text,
)
from support.proxy import proxy_for
from support.terminal import ESC, Terminal
from support.upstream import ScriptedUpstream, free_port, scripted_upstream, serve_in_thread

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KIMI_SH = REPO / "kimi.sh"
HELLO = "Hello from the scripted model."


def fake_claude(tmp_path: Path, then: str = "") -> tuple[Path, Path]:
    """A PATH entry whose `claude` only touches a marker file (then runs `then`)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    marker = tmp_path / "claude-ran"
    fake = bin_dir / "claude"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n{then}\n")
    fake.chmod(0o755)
    return bin_dir, marker


def stop_listener(port: int) -> None:
    """Kill whatever process still listens on `port` (cleanup after a failed test)."""
    import psutil

    for conn in psutil.net_connections("tcp"):
        listens = conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN
        if listens and conn.pid:
            psutil.Process(conn.pid).kill()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A KIMI_VENV that kimi.sh accepts as set up: it runs this test run's kimi-proxy.

    Its stamp is newer than pyproject.toml, so kimi.sh does not reinstall anything, and the
    developer's own venv is left untouched.
    """
    path = tmp_path / "venv"
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "kimi-proxy").symlink_to(Path(sys.prefix) / "bin" / "kimi-proxy")
    (path / ".kimi-proxy-installed").touch()
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, claude_bin: Path) -> Path:
    """A PATH entry where `claude` is the pinned CLI."""
    path = tmp_path / "bin"
    path.mkdir()
    (path / "claude").symlink_to(claude_bin)
    return path


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream(ScriptedModel()) as server:
        yield server


def launcher_env(
    home: Path, bin_dir: Path, venv: Path, upstream_url: str, port: int, **extra: str
) -> dict[str, str]:
    env = hermetic_env(
        home,
        GROQ_API_KEY="test",
        KIMI_UPSTREAM_URL=upstream_url,
        KIMI_PROXY_PORT=str(port),
        KIMI_MODEL="kimi-big",
        KIMI_SMALL_MODEL="kimi-small",
        KIMI_VENV=str(venv),
        KIMI_LAUNCHER_LOG=str(home / "launcher.log"),
        **extra,
    )
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def wait_for_file(path: Path, process: subprocess.Popen[bytes], why: str) -> None:
    """Wait (30 s at most) for a fake `claude` to write `path` while its launcher runs."""
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline and process.poll() is None, why
        time.sleep(0.05)


def launcher_command(which: str, venv: Path) -> list[str]:
    return [str(KIMI_SH)] if which == "kimi.sh" else [str(venv / "bin" / "kimi-proxy"), "code"]


def launch(
    which: str, venv: Path, project: Path, env: dict[str, str], prompt: str, *args: str
) -> ClaudeRun:
    """One headless Claude Code run through a launcher, which must stop the proxy it started."""
    port = int(env["KIMI_PROXY_PORT"])
    try:
        command = [*launcher_command(which, venv), *headless_args(prompt, *args)]
        run = run_claude(command, cwd=project, env=env, timeout=90)
    finally:
        left_running = listening(port)
        stop_listener(port)  # a failed run must not leave a proxy behind for later tests
    assert not left_running, "the proxy the launcher started is still running"
    return run


@pytest.mark.parametrize("which", ["kimi.sh", "kimi-proxy code"])
def test_launcher_runs_claude_code_and_stops_its_proxy(
    which: str,
    upstream: ScriptedUpstream,
    home: Path,
    project: Path,
    bin_dir: Path,
    venv: Path,
) -> None:
    env = launcher_env(home, bin_dir, venv, upstream.base_url, free_port())
    run = launch(which, venv, project, env, "E2E-HELLO: hi")
    run.assert_success(HELLO)
    assert "setting up" not in run.stderr, "kimi.sh reinstalled a venv that was set up"
    assert run.init["cwd"] == str(project)
    [request] = upstream.requests
    assert request.headers["authorization"] == "Bearer test"
    assert request.body["model"] == "kimi-big"


def test_launcher_reaches_its_proxy_directly_behind_a_corporate_proxy(
    upstream: ScriptedUpstream, home: Path, project: Path, bin_dir: Path, venv: Path
) -> None:
    """With HTTP(S)_PROXY set (here to a port nothing listens on), the launcher's health check
    and Claude Code still reach the local proxy directly instead of through the proxy."""
    dead = f"http://127.0.0.1:{free_port()}"
    proxies = {name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env = launcher_env(home, bin_dir, venv, upstream.base_url, free_port(), **proxies)
    run = launch("kimi-proxy code", venv, project, env, "E2E-HELLO: hi")
    run.assert_success(HELLO)
    assert len(upstream.requests) == 1


ELSEWHERE = {
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "AWS_REGION": "us-east-1",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "ANTHROPIC_API_KEY": "sk-ant-the-users-own-key",
}


@pytest.mark.parametrize("where", ["shell", "settings.json"])
def test_claude_code_set_up_for_another_provider_still_reaches_the_proxy(
    where: str, upstream: ScriptedUpstream, home: Path, project: Path, bin_dir: Path, venv: Path
) -> None:
    """Claude Code already set up for Bedrock or another base URL (from a company's shell
    profile, or the `env` of ~/.claude/settings.json, where guides for Kimi put it) goes to
    the proxy when the launcher starts it."""
    shell = ELSEWHERE if where == "shell" else {}
    env = launcher_env(home, bin_dir, venv, upstream.base_url, free_port(), **shell)
    if where == "settings.json":
        (home / ".claude").mkdir()
        (home / ".claude" / "settings.json").write_text(json.dumps({"env": ELSEWHERE}))
    launch("kimi-proxy code", venv, project, env, "E2E-HELLO: hi").assert_success(HELLO)


@pytest.mark.parametrize("which", ["kimi.sh", "kimi-proxy code"])
def test_without_any_setup_one_message_names_what_was_looked_for(
    which: str, tmp_path: Path, home: Path, project: Path, venv: Path
) -> None:
    bin_dir, marker = fake_claude(tmp_path)
    port = free_port()
    env = hermetic_env(home, KIMI_PROXY_PORT=str(port), KIMI_VENV=str(venv))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    run = run_claude([*launcher_command(which, venv), "-p", "hi"], cwd=project, env=env, timeout=30)
    assert run.returncode == 2
    for looked_for in ("KIMI_GATEWAY_URL", f"127.0.0.1:{port}", "MOONSHOT_API_KEY", "config"):
        assert looked_for in run.stderr
    assert run.stdout == ""
    assert not marker.exists(), "the launcher ran Claude Code with nothing to serve it"
    assert not (home / ".local" / "state" / "kimi-proxy" / "launcher.log").exists()
    assert not listening(port)


def test_kimi_sh_reuses_a_running_proxy_and_leaves_it_running(
    home: Path, project: Path, bin_dir: Path, venv: Path
) -> None:
    with proxy_for(ScriptedModel()) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        # No provider key here: the running proxy is the only way (and is said to be used).
        env = hermetic_env(home, KIMI_PROXY_PORT=str(port), KIMI_VENV=str(venv))
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        run = run_claude(
            [str(KIMI_SH), *headless_args("E2E-HELLO: hi")], cwd=project, env=env, timeout=90
        )
        run.assert_success(HELLO)
        assert len(proxy.upstream.requests) == 1, "the running proxy served the session"
        health = httpx.get(f"{proxy.url}/health", timeout=5)
        assert health.status_code == 200, "the launcher stopped a proxy it did not start"
        assert f"using the kimi-proxy already running on 127.0.0.1:{port}" in run.stderr


def test_a_running_proxy_with_other_keys_is_not_reused(
    home: Path, project: Path, bin_dir: Path, venv: Path, upstream: ScriptedUpstream
) -> None:
    """A proxy left running with yesterday's keys (or someone else's) would serve the session
    with them: the launcher starts its own on a free port instead, and says so."""
    with proxy_for(ScriptedModel()) as other:
        port = int(other.url.rsplit(":", 1)[1])
        env = launcher_env(home, bin_dir, venv, upstream.base_url, port)
        run = run_claude(
            [str(KIMI_SH), *headless_args("E2E-HELLO: hi")], cwd=project, env=env, timeout=90
        )
        run.assert_success(HELLO)
        assert "runs with other providers or keys than yours" in run.stderr
        assert other.upstream.requests == [], "the other proxy served the session"
        assert len(upstream.requests) == 1


def test_ctrl_c_reaches_claude_code_and_the_proxy_is_stopped(
    tmp_path: Path, home: Path, venv: Path, upstream: ScriptedUpstream
) -> None:
    """Ctrl-C in the terminal goes to the whole foreground group: Claude Code gets it (it uses
    it to interrupt a turn), the proxy in its own session does not, and when Claude Code exits
    the launcher stops the proxy it started."""
    import os
    import signal

    fake_bin, marker = fake_claude(tmp_path, then="exec sleep 30")
    port = free_port()
    env = launcher_env(home, fake_bin, venv, upstream.base_url, port)
    launcher = subprocess.Popen(
        [str(KIMI_SH)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=as_from_a_terminal,
    )
    try:
        wait_for_file(marker, launcher, "claude never ran")
        assert listening(port), "the proxy is up while Claude Code runs"
        os.killpg(launcher.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert launcher.wait(timeout=20) == 130  # 128 + SIGINT, as a shell reports it
        assert not listening(port), "the proxy was left running"
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        stop_listener(port)  # a failed run must not leave a proxy behind for later tests


@pytest.mark.parametrize("risky", [False, True], ids=["judged-fine", "judged-risky"])
def test_first_interactive_run_and_auto_mode_checks_through_the_model(
    home: Path,
    project: Path,
    bin_dir: Path,
    venv: Path,
    upstream: ScriptedUpstream,
    risky: bool,
) -> None:
    """`./kimi.sh` in a terminal, with a HOME Claude Code has never run in, on a machine that
    cannot reach api.anthropic.com (this one): the first-run screens lead to the prompt, and auto
    mode (Claude Code's default permission mode) has the model judge a download piped into sh,
    through the proxy. Judged fine it runs; judged risky it is blocked and the model is told."""
    port = free_port()
    env = launcher_env(home, bin_dir, venv, upstream.base_url, port, TERM="xterm-256color")
    task = f"E2E-AUTO: run the installer{f' ({RISKY})' if risky else ''}"
    try:
        with Terminal([str(KIMI_SH)], cwd=project, env=env) as terminal:
            terminal.through_first_run()
            terminal.type(task)
            terminal.wait_for("Installer step finished", timeout=60)
            checks = [b for b in upstream.bodies if Conversation(b).is_safety_check]
            assert checks, f"auto mode never asked the model:\n{terminal.screen}"
            assert "can't check actions" not in terminal.screen
            assert (project / "ran.txt").exists() is not risky
            if risky:
                assert "Blocked by auto mode" in terminal.screen
                assert "auto mode" in (Conversation(upstream.bodies[-1]).calls[-1].result or "")
            terminal.type("/exit")
            assert terminal.wait_exit() == 0
    finally:
        stop_listener(port)
    assert not listening(port), "the proxy was left running"


def test_esc_stops_the_providers_stream_and_the_session_goes_on(
    home: Path, project: Path, bin_dir: Path, venv: Path, upstream: ScriptedUpstream
) -> None:
    """Esc, as a user presses it in `./kimi.sh`, mid-answer and while a tool runs: the
    provider's stream stops at once (no tokens paid for an answer nobody reads), and the next
    prompt goes on from what the user saw: the partial answer, then the stopped tool call
    answered as rejected (a call left without a result is a 400 at OpenAI-compatible providers)."""
    port = free_port()
    env = launcher_env(home, bin_dir, venv, upstream.base_url, port, TERM="xterm-256color")
    try:
        with Terminal([str(KIMI_SH)], cwd=project, env=env) as terminal:
            terminal.through_first_run()
            terminal.type("E2E-INTERRUPT: tell me a story")
            terminal.wait_for("part 3.")
            terminal.press(ESC)
            terminal.wait_for("Interrupted")
            story = next(r for r in upstream.requests if r.body.get("tools"))  # not a side request
            assert story.wait_cancelled() and not story.finished, "the provider's stream went on"

            terminal.type("E2E-INTERRUPT: run the build")
            terminal.wait_for(SLOW_COMMAND)
            terminal.press(ESC)
            terminal.wait_for("Interrupted", after="run the build")
            terminal.type("E2E-INTERRUPT: report")
            terminal.wait_for("Report: both were stopped.")
            terminal.type("/exit")
            assert terminal.wait_exit() == 0
    finally:
        stop_listener(port)
    last = Conversation(upstream.bodies[-1])
    kept = [content_text(m.get("content")) for m in last.messages if m.get("role") == "assistant"]
    assert kept[0].startswith(STORY) and "part 99" not in kept[0], kept[0][:200]
    (build,) = last.calls
    assert build.name == "Bash" and "doesn't want to proceed" in (build.result or "")
    assert not (project / "built.txt").exists()


def test_claude_code_compacts_before_the_providers_context_window_is_full(
    home: Path, project: Path, bin_dir: Path, venv: Path, upstream: ScriptedUpstream
) -> None:
    """Claude Code sizes a conversation for its own 1M-token models. Started by the launcher,
    it knows the provider's window: when a step reports 240,000 of Kimi K2's 262,144 tokens
    used, it compacts before the next request, instead of sending one the provider refuses
    (and then one to summarize it that is too long as well)."""
    env = launcher_env(home, bin_dir, venv, upstream.base_url, free_port())
    run = launch("kimi-proxy code", venv, project, env, "E2E-FULL: two steps")
    run.assert_success("Done after compaction.")
    conversations = [Conversation(body) for body in upstream.bodies]
    assert [c.asks_for_summary for c in conversations] == [False, False, True, False]


def test_webfetch_works_where_anthropic_cannot_be_reached(
    tmp_path: Path,
    home: Path,
    project: Path,
    bin_dir: Path,
    venv: Path,
    upstream: ScriptedUpstream,
) -> None:
    """WebFetch asks api.anthropic.com whether a site may be fetched before fetching it, and
    fails where that host cannot be reached (here). Started by the launcher, it fetches the page
    and the model reads it."""
    authority = trustme.CA()
    site_pem = tmp_path / "site.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(site_pem))
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    page = "<html><body><h1>Notes</h1><p>The secret word is PAPAYA.</p></body></html>"
    site = Starlette(routes=[Route("/notes", lambda request: HTMLResponse(page))])
    env = launcher_env(home, bin_dir, venv, upstream.base_url, free_port())
    env["NODE_EXTRA_CA_CERTS"] = str(tmp_path / "ca.pem")  # Claude Code trusts the test site
    with serve_in_thread(site, ssl_certfile=str(site_pem)) as site_url:
        task = f"E2E-FETCH: {site_url}/notes"
        run = launch("kimi-proxy code", venv, project, env, task, "--allowedTools", "WebFetch")
    run.assert_success("Fetched: The page's secret word is PAPAYA.")


def test_two_sessions_at_once_each_keep_their_proxy(
    tmp_path: Path, home: Path, venv: Path, upstream: ScriptedUpstream
) -> None:
    """`./kimi.sh` in two terminals at once: the second does not borrow the proxy the first
    started (it stops when the first session ends) but starts its own on a free port, which
    lives as long as the second session."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    fake = fake_bin / "claude"  # says which proxy it was given, then runs until told to stop
    fake.write_text(
        '#!/bin/sh\necho "$ANTHROPIC_BASE_URL" > "$SESSION.url"\n'
        'while [ ! -e "$SESSION.done" ]; do sleep 0.05; done\n'
    )
    fake.chmod(0o755)
    port = free_port()
    sessions: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> str:
        env = launcher_env(
            home, fake_bin, venv, upstream.base_url, port, SESSION=str(tmp_path / name)
        )
        sessions[name] = subprocess.Popen([str(KIMI_SH)], env=env, stderr=subprocess.PIPE)
        url_file = tmp_path / f"{name}.url"
        wait_for_file(url_file, sessions[name], "no session")
        return url_file.read_text().strip()

    def end(name: str) -> None:
        (tmp_path / f"{name}.done").touch()
        assert sessions[name].wait(timeout=20) == 0

    second_url = ""
    try:
        assert start("first") == f"http://127.0.0.1:{port}"
        second_url = start("second")
        assert second_url != f"http://127.0.0.1:{port}", "the second session borrowed the proxy"
        end("first")
        assert not listening(port), "the first session left its proxy running"
        health = httpx.get(f"{second_url}/health", timeout=5, trust_env=False)
        assert health.status_code == 200, "the second session lost its proxy"
        end("second")
        assert not listening(httpx.URL(second_url).port or 0)
    finally:
        for name, process in sessions.items():
            (tmp_path / f"{name}.done").touch()
            if process.poll() is None:
                process.kill()
            process.communicate()
        stop_listener(port)
        if second_url:
            stop_listener(httpx.URL(second_url).port or 0)


def test_the_status_line_shows_what_really_serves_the_session(
    home: Path, project: Path, bin_dir: Path, venv: Path, upstream: ScriptedUpstream
) -> None:
    """`./kimi.sh` gives Claude Code a status line that names the provider and model that
    answered, the context used against their window, and the cost — not the Claude model and
    1M window Claude Code believes in."""
    port = free_port()
    env = launcher_env(home, bin_dir, venv, upstream.base_url, port, TERM="xterm-256color")
    try:
        with Terminal([str(KIMI_SH)], cwd=project, env=env) as terminal:
            terminal.through_first_run()
            terminal.wait_for("no answer yet this session")
            terminal.type("E2E-HELLO: hi")
            terminal.wait_for(HELLO)
            terminal.wait_for("kimi-big @ openai-compatible · ctx ")
            line = next(r for r in terminal.screen.splitlines() if "kimi-big @" in r).strip()
            terminal.type("/exit")
            assert terminal.wait_exit() == 0
    finally:
        stop_listener(port)
    assert re.fullmatch(r"kimi-big @ openai-compatible · ctx \d+k?/131k · \$0\.00 today", line), (
        line
    )
