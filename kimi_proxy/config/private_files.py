"""Files only their owner reads: logs, the users file and its audit, calibrations, the
launcher's settings for Claude Code. Each is 0600 even when an older version made it with
looser modes, and a file replaced whole is replaced at once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def open_private(path: Path | str, *, append: bool = False) -> int:
    """A descriptor to write `path` from its start (or at its end, `append`), the file 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)  # one made before, by an older version, too
    return descriptor


def replace_private(path: Path, data: bytes) -> None:
    """`path` replaced by `data` at once, 0600: a reader sees the old file or the new one, and
    two processes replacing it at the same time each write their own temporary file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # 0600
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
