"""Claude Code's interactive UI in a pseudo-terminal, read as the screen a user sees.

pexpect runs the program in a pty; pyte renders what it writes into rows of text, so tests
wait for and assert on what is on the screen, like the user does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import pexpect
import pyte

ENTER = "\r"
DOWN = "\x1b[B"
ESC = "\x1b"

# The first-run screens of a fresh HOME, what each one is answered with, and the input prompt.
FIRST_RUN_ANSWERS = {
    "Choose the text style": ENTER,  # theme: keep the default
    "Press Enter to continue": ENTER,  # security notes
    "Yes, I trust this folder": DOWN + ENTER,  # the default is "No, exit"
}
READY = "shift+tab to cycle"


class Terminal:
    """One program in a 120×40 terminal."""

    def __init__(self, argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        self._screen = pyte.Screen(120, 40)
        self._stream = pyte.ByteStream(self._screen)
        self.process = pexpect.spawn(
            argv[0], argv[1:], cwd=str(cwd), env=dict(env), dimensions=(40, 120)
        )

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.process.close(force=True)

    @property
    def screen(self) -> str:
        return "\n".join(line.rstrip() for line in self._screen.display).strip("\n")

    def _read(self, seconds: float) -> bool:
        """Render what arrives for `seconds`; False once the program has exited."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._stream.feed(self.process.read_nonblocking(65536, timeout=0.1))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return False
        return True

    def shows(self, text: str, after: str = "") -> bool:
        """Whether `text` is on the screen (below the last `after`, if given)."""
        screen = self.screen
        return text in (screen.rpartition(after)[2] if after else screen)

    def wait_for(self, text: str, timeout: float = 30.0, *, after: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not self.shows(text, after):
            running = self._read(0.2)
            if self.shows(text, after):
                return
            if not running or time.monotonic() > deadline:
                state = "running" if running else "exited"
                raise AssertionError(f"never showed {text!r} ({state}); screen:\n{self.screen}")

    def answer(self, question: str, keys: str) -> None:
        """Send `keys` to the screen showing `question` and wait until it is gone."""
        self.process.send(keys)
        deadline = time.monotonic() + 10
        while question in self.screen:
            if not self._read(0.2) or time.monotonic() > deadline:
                raise AssertionError(f"{question!r} stayed on screen:\n{self.screen}")

    def press(self, keys: str) -> None:
        self.process.send(keys)

    def type(self, line: str) -> None:
        self.process.send(line)
        self._read(0.3)  # the input box echoes the text before Enter submits it
        self.process.send(ENTER)

    def through_first_run(self, timeout: float = 60.0) -> None:
        """Answer the first-run screens until the input prompt shows."""
        deadline = time.monotonic() + timeout
        while READY not in self.screen:
            question = next((q for q in FIRST_RUN_ANSWERS if q in self.screen), None)
            if question is not None:
                self.answer(question, FIRST_RUN_ANSWERS[question])
            elif not self._read(0.3) or time.monotonic() > deadline:
                raise AssertionError(f"the first run did not reach the prompt:\n{self.screen}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The program's exit status, once it has exited."""
        deadline = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > deadline:
                raise AssertionError(f"still running:\n{self.screen}")
        self.process.close()
        status = self.process.exitstatus
        return status if status is not None else 128 + (self.process.signalstatus or 0)
