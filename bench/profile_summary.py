"""A py-spy profile (collapsed stacks) summarized: by file, inclusive time and self time."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from .processes import ROOT

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return path


def _frame(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({_short(match['file'])})"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's `raw` (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        file = frames[-1].rpartition("(")[2].rstrip(")")
        packages[file.split("/", 1)[0] if "/" in file else f"stdlib:{file}"] += count
    # Frames on (nearly) every stack say nothing: the event loop, uvicorn's server, runpy.
    common = [(name, n) for name, n in inclusive.most_common() if n < 0.95 * total]
    return {
        "samples": total,
        "self": own.most_common(top),
        "inclusive": common[: top * 2],
        "by_file": packages.most_common(top),
    }
