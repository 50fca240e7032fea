#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv + dependencies, lint, types, tests.
# The end-to-end tests install the pinned Claude Code CLI from npm themselves (cached).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${KIMI_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.kimi-proxy-test-deps"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp" "$VENV/.kimi-proxy-installed"  # kimi.sh's stamp: the package is in too
fi
"$VENV/bin/ruff" check kimi_proxy tests bench
"$VENV/bin/ruff" format --check kimi_proxy tests bench
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest -q "$@"
