"""The tools agent mode runs inside the proxy, with Claude Code's input schemas.

File work runs in a worker thread (never blocking the event loop); Bash runs as a subprocess
with a timeout and an output cap. Every failure is a `ToolError`, which the loop turns into an
`is_error` result for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from .sandbox import Sandbox, ToolError

MAX_OUTPUT_CHARS = 30_000
MAX_READ_LINES = 2000
MAX_LINE_CHARS = 2000
MAX_LISTED = 1000
MAX_GREP_FILE_BYTES = 2_000_000
MAX_READ_CHARS = 5_000_000  # a Read looks at most this far into a file
GREP_SECONDS = 5.0  # a model-chosen pattern that backtracks forever is stopped here
#: What a Bash command sees of the proxy's environment: never its token or a provider's key.
TOOL_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ")
BASH_DEFAULT_TIMEOUT_MS = 120_000
BASH_MAX_TIMEOUT_MS = 600_000

READ_ONLY = frozenset({"LS", "Read", "Glob", "Grep"})


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_S = {"type": "string"}
_I = {"type": "integer"}

SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "LS": (
        "List the files and directories in a directory of the working directory.",
        _schema({"path": {**_S, "description": "Directory (default: working directory)"}}, []),
    ),
    "Read": (
        "Read a text file; lines are numbered. Use offset/limit for long files.",
        _schema({"file_path": _S, "offset": _I, "limit": _I}, ["file_path"]),
    ),
    "Glob": (
        "Find files by glob pattern (e.g. **/*.py), newest first.",
        _schema({"pattern": _S, "path": _S}, ["pattern"]),
    ),
    "Grep": (
        "Search file contents with a regular expression.",
        _schema(
            {
                "pattern": _S,
                "path": _S,
                "glob": _S,
                "output_mode": {
                    "type": "string",
                    "enum": ["content", "files_with_matches", "count"],
                },
                "-i": {"type": "boolean"},
            },
            ["pattern"],
        ),
    ),
    "Write": (
        "Write a file (replacing it if it exists).",
        _schema({"file_path": _S, "content": _S}, ["file_path", "content"]),
    ),
    "Edit": (
        "Replace old_string with new_string in a file (exactly one match unless replace_all).",
        _schema(
            {
                "file_path": _S,
                "old_string": _S,
                "new_string": _S,
                "replace_all": {"type": "boolean"},
            },
            ["file_path", "old_string", "new_string"],
        ),
    ),
    "Bash": (
        "Run a shell command in the working directory.",
        _schema({"command": _S, "timeout": {"type": "number"}, "description": _S}, ["command"]),
    ),
}


def tool_definitions(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Anthropic-style definitions of the local tools (offered when the client sends none)."""
    return [{"name": n, "description": SCHEMAS[n][0], "input_schema": SCHEMAS[n][1]} for n in names]


def _cap(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n… [truncated {len(text) - MAX_OUTPUT_CHARS} characters]"


def _str(args: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ToolError(f"Parameter {key!r} must be a string.")
    return value


@dataclass(slots=True)
class LocalTools:
    sandbox: Sandbox
    enabled: tuple[str, ...]

    async def run(self, name: str, args: dict[str, Any]) -> str:
        if name not in self.enabled:
            raise ToolError(f"Tool {name} is not enabled in this proxy.")
        if name == "Bash":
            return await self._bash(args)
        handler: Callable[[dict[str, Any]], str] = getattr(self, f"_{name.lower()}")
        return await asyncio.to_thread(handler, args)

    def _ls(self, args: dict[str, Any]) -> str:
        directory = self.sandbox.resolve(_str(args, "path", required=False))
        if not directory.is_dir():
            raise ToolError(f"Not a directory: {self.sandbox.display(directory)}")
        entries = sorted(directory.iterdir(), key=lambda p: p.name)[:MAX_LISTED]
        lines = [p.name + ("/" if p.is_dir() else "") for p in entries]
        return "\n".join(lines) or "(empty directory)"

    def _read(self, args: dict[str, Any]) -> str:
        path = self.sandbox.resolve(_str(args, "file_path"))
        if not path.is_file():
            raise ToolError(f"File does not exist: {self.sandbox.display(path)}")
        offset = max(int(args.get("offset") or 1), 1)
        limit = max(int(args.get("limit") or MAX_READ_LINES), 1)
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines = handle.read(MAX_READ_CHARS).splitlines()
        chosen = lines[offset - 1 : offset - 1 + limit]
        numbered = [f"{offset + i:6}\t{line[:MAX_LINE_CHARS]}" for i, line in enumerate(chosen)]
        return _cap("\n".join(numbered)) if numbered else "(empty file or offset past the end)"

    def _glob(self, args: dict[str, Any]) -> str:
        pattern = _str(args, "pattern") or ""
        if ".." in Path(pattern).parts or pattern.startswith(("/", "~")):
            raise ToolError("Refused: glob patterns must stay inside the working directory.")
        base = self.sandbox.resolve(_str(args, "path", required=False))
        found = []
        for path in base.glob(pattern):
            try:
                found.append(self.sandbox.resolve(str(path)))
            except ToolError:
                continue  # a symlink that leads out
        found.sort(key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True)
        return "\n".join(self.sandbox.display(p) for p in found[:MAX_LISTED]) or "No files found"

    def _grep(self, args: dict[str, Any]) -> str:
        flags = regex.IGNORECASE if args.get("-i") else 0
        try:
            pattern = regex.compile(_str(args, "pattern") or "", flags)
        except regex.error as exc:
            raise ToolError(f"Invalid regular expression: {exc}") from None
        deadline = time.monotonic() + GREP_SECONDS
        base = self.sandbox.resolve(_str(args, "path", required=False))
        file_glob = _str(args, "glob", required=False)
        mode = args.get("output_mode") or "files_with_matches"
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        out: list[str] = []
        for path in files:
            if file_glob and not fnmatch.fnmatch(path.name, file_glob):
                continue
            try:
                path = self.sandbox.resolve(str(path))
                if path.stat().st_size > MAX_GREP_FILE_BYTES:
                    continue
                text = path.read_text(encoding="utf-8")
            except (ToolError, UnicodeDecodeError, OSError):
                continue
            try:
                hits = [
                    (n, line)
                    for n, line in enumerate(text.splitlines(), 1)
                    if pattern.search(line, timeout=max(0.0, deadline - time.monotonic()))
                ]
            except TimeoutError:
                raise ToolError(
                    f"The search took over {GREP_SECONDS:g} s and was stopped; use a simpler "
                    "pattern or a narrower path."
                ) from None
            if not hits:
                continue
            shown = self.sandbox.display(path)
            if mode == "content":
                out += [f"{shown}:{n}:{line[:MAX_LINE_CHARS]}" for n, line in hits]
            elif mode == "count":
                out.append(f"{shown}:{len(hits)}")
            else:
                out.append(shown)
            if len(out) >= MAX_LISTED:
                break
        return _cap("\n".join(out)) if out else "No matches found"

    def _write(self, args: dict[str, Any]) -> str:
        path = self.sandbox.resolve(_str(args, "file_path"))
        content = _str(args, "content") or ""
        if path.is_dir():
            raise ToolError(f"Is a directory: {self.sandbox.display(path)}")
        self.sandbox.write_atomic(path, content)
        return f"File written: {self.sandbox.display(path)} ({len(content)} characters)"

    def _edit(self, args: dict[str, Any]) -> str:
        path = self.sandbox.resolve(_str(args, "file_path"))
        old, new = _str(args, "old_string") or "", _str(args, "new_string") or ""
        if not path.is_file():
            raise ToolError(f"File does not exist: {self.sandbox.display(path)}")
        if old == new:
            raise ToolError("old_string and new_string are the same.")
        text = path.read_text(encoding="utf-8")
        count = text.count(old) if old else 0
        if count == 0:
            raise ToolError("old_string was not found in the file.")
        if count > 1 and not args.get("replace_all"):
            raise ToolError(f"old_string occurs {count} times; make it unique or set replace_all.")
        self.sandbox.write_atomic(path, text.replace(old, new))
        return f"File edited: {self.sandbox.display(path)} ({count} replacement(s))"

    async def _bash(self, args: dict[str, Any]) -> str:
        command = _str(args, "command") or ""
        timeout_ms = min(float(args.get("timeout") or BASH_DEFAULT_TIMEOUT_MS), BASH_MAX_TIMEOUT_MS)
        process = await asyncio.create_subprocess_shell(
            command,
            cwd=self.sandbox.root,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=_tool_environment(),
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout_ms / 1000)
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            raise ToolError(f"Command timed out after {timeout_ms / 1000:.0f} s.") from None
        except asyncio.CancelledError:  # the client went away: do not leave the command running
            _kill_group(process.pid)
            raise
        text = _cap(output.decode("utf-8", "replace"))
        if process.returncode:
            raise ToolError(f"Exit code {process.returncode}\n{text}")
        return text or "(no output)"


def _tool_environment() -> dict[str, str]:
    """The proxy's environment for a command: locale, paths and user only (`TOOL_ENVIRONMENT`)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in TOOL_ENVIRONMENT or name.startswith("LC_")
    }


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
