"""The layers of docs/ARCHITECTURE.md hold: `lint-imports` (run by ./test.sh) fails the build on
an upward import, and on a pure module that imports the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # this copy, not the installed package
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_upward_import_or_io_in_a_pure_module_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "kimi_proxy", tmp_path / "kimi_proxy", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the tree as committed keeps its layers

    tokens = tmp_path / "kimi_proxy" / "translate" / "calibration.py"
    tokens.write_text(tokens.read_text() + "\nfrom kimi_proxy.server import state  # noqa\n")
    plan = tmp_path / "kimi_proxy" / "providers" / "plan.py"
    plan.write_text(plan.read_text() + "\nimport httpx  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "kimi_proxy.translate is not allowed to import kimi_proxy.server" in done.stdout
    assert "kimi_proxy.providers.plan -> httpx" in done.stdout
