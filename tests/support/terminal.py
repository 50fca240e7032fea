"""The real Claude Code in a terminal: a pty (pexpect) read into a screen (pyte), so a test sees
what the person sees — the interactive UI, not the `-p` JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pexpect
import pyte

ROWS, COLUMNS = 40, 200


def skip_first_run(home: Path, project: Path, api_keys: tuple[str, ...] = ()) -> None:
    """What a returning user's ~/.claude.json says: onboarding done, the folder trusted, and
    `api_keys` (ANTHROPIC_API_KEY values) approved once already."""
    (home / ".claude.json").write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "theme": "dark",
                "numStartups": 5,
                "projects": {
                    str(project): {
                        "hasTrustDialogAccepted": True,
                        "hasCompletedProjectOnboarding": True,
                    }
                },
                "customApiKeyResponses": {
                    "approved": [key[-20:] for key in api_keys],
                    "rejected": [],
                },
            }
        )
    )


class Terminal:
    """Claude Code running interactively; `screen()` is the text on its screen now."""

    def __init__(self, claude: Path, project: Path, env: dict[str, str]) -> None:
        self._screen = pyte.Screen(COLUMNS, ROWS)
        self._stream = pyte.ByteStream(self._screen)
        env = {**env, "TERM": "xterm-256color"}
        self.child = pexpect.spawn(
            str(claude), [], cwd=str(project), env=env, dimensions=(ROWS, COLUMNS)
        )

    def screen(self) -> str:
        return "\n".join(line.rstrip() for line in self._screen.display if line.strip())

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._stream.feed(self.child.read_nonblocking(65536, timeout=0.1))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return

    def wait_for(self, text: str, seconds: float) -> float:
        """Seconds until `text` is on the screen; fails with the screen after `seconds`."""
        started = time.monotonic()
        while text not in self.screen():
            assert time.monotonic() - started < seconds, self.screen()
            self.pump(0.2)
        return time.monotonic() - started

    def ready(self, seconds: float = 20) -> None:
        """Until the prompt box is drawn and settled (keys typed earlier are lost)."""
        self.wait_for("❯", seconds)
        self.pump(2.0)

    def type(self, text: str) -> None:
        """Type `text` and Enter; fails unless it shows in the prompt box."""
        self.child.send(text)
        self.wait_for(text, 5)
        self.child.send("\r")

    def close(self) -> None:
        self.child.terminate(force=True)
