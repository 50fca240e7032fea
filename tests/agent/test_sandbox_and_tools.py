"""Local tools: confinement to the working directory, and each tool's behaviour."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kimi_proxy.agent import tools as agent_tools
from kimi_proxy.agent.sandbox import Sandbox, ToolError
from kimi_proxy.agent.tools import LocalTools, tool_definitions
from kimi_proxy.config.settings import ALL_TOOLS, DEFAULT_SET, parse_tool_names


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "app.py").write_text("import os\nprint('hello')\n# TODO: more\n")
    (work / "notes.txt").write_text("\n".join(f"line {i}" for i in range(1, 11)) + "\n")
    (tmp_path / "secret.txt").write_text("top secret")
    (work / "escape").symlink_to(tmp_path)
    (work / "secret-link").symlink_to(tmp_path / "secret.txt")
    return work


def run(tools: LocalTools, name: str, **args: Any) -> str:
    return asyncio.run(tools.run(name, args))


@pytest.fixture
def tools(root: Path) -> LocalTools:
    return LocalTools(Sandbox(root), ALL_TOOLS)


ESCAPES = [
    "../secret.txt",
    "/etc/passwd",
    "escape/secret.txt",
    "secret-link",
    "~",
    "~/x",
    "src/../../secret.txt",
]


@pytest.mark.parametrize("path", ESCAPES)
@pytest.mark.parametrize(
    ("tool", "key"),
    [("Read", "file_path"), ("Write", "file_path"), ("LS", "path"), ("Grep", "path")],
)
def test_escape_attempts_are_refused(
    tools: LocalTools, tmp_path: Path, path: str, tool: str, key: str
) -> None:
    args = {key: path, "content": "pwned", "pattern": "secret"}
    with pytest.raises(ToolError, match="outside the working directory"):
        run(tools, tool, **args)
    assert (tmp_path / "secret.txt").read_text() == "top secret"
    assert not Path("/etc/x").exists()


def test_glob_does_not_follow_links_out(tools: LocalTools) -> None:
    assert "secret" not in run(tools, "Glob", pattern="**/*.txt")
    with pytest.raises(ToolError, match="Refused"):
        run(tools, "Glob", pattern="../*.txt")


def test_inside_paths_work_relative_and_absolute(tools: LocalTools, root: Path) -> None:
    assert "print('hello')" in run(tools, "Read", file_path="src/app.py")
    assert "print('hello')" in run(tools, "Read", file_path=str(root / "src" / "app.py"))


def test_every_tool_a_setting_can_name_has_a_schema() -> None:
    assert {d["name"] for d in tool_definitions(ALL_TOOLS)} == set(ALL_TOOLS)


def test_bash_only_when_named(root: Path) -> None:
    assert "Bash" not in parse_tool_names("all")
    assert parse_tool_names("all") == DEFAULT_SET
    assert parse_tool_names("Read, LS,Bash") == ("Read", "LS", "Bash")
    with pytest.raises(ValueError, match="unknown local tool"):
        parse_tool_names("Read,rm")
    default = LocalTools(Sandbox(root), parse_tool_names("all"))
    with pytest.raises(ToolError, match="not enabled"):
        run(default, "Bash", command="touch pwned")
    assert not (root / "pwned").exists()


def test_ls(tools: LocalTools) -> None:
    listing = run(tools, "LS").splitlines()
    assert "src/" in listing and "notes.txt" in listing


def test_read_with_offset_and_limit(tools: LocalTools) -> None:
    out = run(tools, "Read", file_path="notes.txt", offset=3, limit=2)
    assert out.splitlines() == ["     3\tline 3", "     4\tline 4"]
    with pytest.raises(ToolError, match="does not exist"):
        run(tools, "Read", file_path="missing.txt")


def test_glob_and_grep(tools: LocalTools) -> None:
    assert run(tools, "Glob", pattern="**/*.py") == "src/app.py"
    assert run(tools, "Grep", pattern="TODO") == "src/app.py"
    assert run(tools, "Grep", pattern="todo", **{"-i": True}, output_mode="content") == (
        "src/app.py:3:# TODO: more"
    )
    assert run(tools, "Grep", pattern="line", output_mode="count") == "notes.txt:10"
    assert run(tools, "Grep", pattern="zzz") == "No matches found"
    with pytest.raises(ToolError, match="Invalid regular expression"):
        run(tools, "Grep", pattern="(")


def test_write_and_edit(tools: LocalTools, root: Path) -> None:
    run(tools, "Write", file_path="new/dir/file.txt", content="alpha beta alpha")
    assert (root / "new/dir/file.txt").read_text() == "alpha beta alpha"
    with pytest.raises(ToolError, match="occurs 2 times"):
        run(tools, "Edit", file_path="new/dir/file.txt", old_string="alpha", new_string="x")
    run(tools, "Edit", file_path="new/dir/file.txt", old_string="beta", new_string="gamma")
    run(
        tools,
        "Edit",
        file_path="new/dir/file.txt",
        old_string="alpha",
        new_string="z",
        replace_all=True,
    )
    assert (root / "new/dir/file.txt").read_text() == "z gamma z"
    with pytest.raises(ToolError, match="not found"):
        run(tools, "Edit", file_path="new/dir/file.txt", old_string="nope", new_string="x")
    assert not [p for p in (root / "new/dir").iterdir() if p.name.endswith(".tmp")]


def test_failed_write_leaves_the_old_file_whole(
    tools: LocalTools, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = root / "notes.txt"
    before = target.read_text()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run(tools, "Write", file_path="notes.txt", content="half")
    assert target.read_text() == before
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_bash_runs_in_the_working_dir_with_timeout_and_cap(tools: LocalTools, root: Path) -> None:
    assert run(tools, "Bash", command="pwd").strip() == str(root.resolve())
    with pytest.raises(ToolError, match="Exit code 3"):
        run(tools, "Bash", command="echo oops; exit 3")
    with pytest.raises(ToolError, match="timed out"):
        run(tools, "Bash", command="sleep 5", timeout=200)
    long = run(tools, "Bash", command="yes x | head -c 100000")
    assert len(long) < 31_000 and "truncated" in long


def test_bash_sees_no_proxy_token_or_provider_key(
    tools: LocalTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M9: `env` used to hand the model the proxy's token and the provider's key."""
    monkeypatch.setenv("KIMI_PROXY_AUTH_TOKEN", "proxy-token-secret")
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-provider-secret")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    shown = run(tools, "Bash", command="env")
    assert "secret" not in shown and "KIMI_" not in shown
    assert "PATH=" in shown and "LC_ALL=C.UTF-8" in shown


def test_a_backtracking_grep_is_stopped_in_seconds(
    tools: LocalTools, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M10: a model-chosen pattern froze the proxy for 33 s."""
    monkeypatch.setattr(agent_tools, "GREP_SECONDS", 0.5)
    (root / "slow.txt").write_text("a" * 40 + "!\n")
    started = time.monotonic()
    with pytest.raises(ToolError, match="simpler pattern"):
        run(tools, "Grep", pattern="(a|aa)*$", path="slow.txt", output_mode="content")
    assert time.monotonic() - started < 5


def test_read_looks_only_so_far_into_a_huge_file(
    tools: LocalTools, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_tools, "MAX_READ_CHARS", 1000)
    (root / "huge.txt").write_text("x\n" * 100_000)
    shown = run(tools, "Read", file_path="huge.txt", limit=10000)
    assert shown.splitlines()[-1].split("\t")[0].strip() == "500"  # 1,000 characters: 500 lines
