"""Confinement of local tools to the working directory.

Every path a tool touches goes through `Sandbox.resolve`: relative paths are taken from the
working directory, `~` is refused, and the path is resolved with symlinks followed before the
check, so `..`, absolute paths elsewhere and symlinks that lead out are all refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ToolError(Exception):
    """A tool failure the model should see as an `is_error` result."""


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, path: str | None) -> Path:
        if path is None or path == "":
            return self.root
        if path.startswith("~"):
            raise ToolError(f"Refused: {path!r} is outside the working directory {self.root}.")
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve(strict=False)
        if resolved != self.root and self.root not in resolved.parents:
            raise ToolError(f"Refused: {path!r} is outside the working directory {self.root}.")
        return resolved

    def display(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path != self.root else "."

    def write_atomic(self, path: Path, content: str) -> None:
        """Write via a temporary file and rename: a file is never left half-written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            if path.exists():
                os.chmod(temp, path.stat().st_mode & 0o7777)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
