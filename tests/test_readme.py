"""The README's promises: its commands are the ones that exist, and its curl lines work as
printed (against a proxy on a test port, in front of the scripted upstream)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.proxy import proxy_for
from support.upstream import text_stream

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def curl_commands() -> list[str]:
    commands = []
    for block in bash_blocks():
        for command in re.split(r"\n(?=\S)", block.strip()):
            if command.startswith("curl "):
                commands.append(command)
    return commands


def test_the_two_commands_are_the_ones_that_exist() -> None:
    blocks = "\n".join(bash_blocks())
    assert "./kimi.sh" in blocks and "./test.sh" in blocks
    assert (ROOT / "kimi.sh").stat().st_mode & 0o111
    assert "./test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_commands_work_as_printed() -> None:
    commands = curl_commands()
    assert len(commands) == 2, commands
    with proxy_for(lambda body, n: text_stream("Hello from five words here.")) as proxy:
        outputs = [
            subprocess.run(
                ["bash", "-c", c.replace("http://127.0.0.1:8090", proxy.url)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            for c in commands
        ]
        assert proxy.upstream.bodies[0]["messages"] == [
            {"role": "user", "content": "Say hello in five words."}
        ]
    health, stream = outputs
    assert '"status":"ok"' in health
    assert "event: message_start" in stream and "event: message_stop" in stream
    assert "Hello from five words here." in "".join(re.findall(r'"text":"([^"]*)"', stream))


def test_every_setting_is_in_the_configuration_table() -> None:
    from pydantic import AliasChoices

    from kimi_proxy.config.settings import Settings

    for name, field in Settings.model_fields.items():
        assert isinstance(field.validation_alias, AliasChoices)
        env, flag = field.validation_alias.choices[1], "--" + name.replace("_", "-")
        assert f"`{env}`" in README and f"`{flag}`" in README, name
