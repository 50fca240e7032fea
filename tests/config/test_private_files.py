"""Files only their owner reads: 0600 whatever the file was before, replaced at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kimi_proxy.config.private_files import open_private, replace_private


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_file_written_or_appended_is_its_owners_alone_even_one_made_before(
    tmp_path: Path,
) -> None:
    log = tmp_path / "proxy.log"
    log.write_text("old line\n")
    log.chmod(0o644)  # as an older version, or another tool, left it
    with os.fdopen(open_private(log, append=True), "a") as out:
        out.write("new line\n")
    assert log.read_text() == "old line\nnew line\n" and mode(log) == 0o600
    with os.fdopen(open_private(log), "w") as out:
        out.write("only this\n")
    assert log.read_text() == "only this\n" and mode(log) == 0o600


def test_a_file_replaced_whole_is_replaced_at_once_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "users.json"
    users.write_text("{}")
    users.chmod(0o644)
    replace_private(users, b'{"users": {}}')
    assert users.read_bytes() == b'{"users": {}}' and mode(users) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json"]

    def refused(source: str, target: str) -> None:
        raise OSError("the disk refused")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError, match="refused"):
        replace_private(users, b"half")
    assert users.read_bytes() == b'{"users": {}}'  # the old file whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json"]  # no temporary left
