"""The console script `kimi-proxy` (`serve | code | doctor | users | usage | statusline`) and
the launcher behind `./kimi.sh`: `commands.py` (the commands), `launcher.py` and
`launch_plan.py` (which of the three setups, decided purely), `claude_code.py` (the pinned CLI and
its environment), `doctor.py`, `statusline.py`.

The top layer: may import every package. Claude Code runs the status line on every update, so
`statusline` is dispatched here before anything heavy (pydantic, the server) is imported: the
two imports inside `main` are that, not a way round the layers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["statusline"] and not {"-h", "--help"} & set(args):
        from .statusline import run

        return run(args[1:])
    from .commands import main as run_command

    try:
        return run_command(args)
    except BrokenPipeError:  # `kimi-proxy usage | head`: the reader has gone, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail too
        return 141  # 128 + SIGPIPE, as the shell reports it
