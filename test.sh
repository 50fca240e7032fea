#!/usr/bin/env bash
# The whole test suite on a fresh machine: the system packages the tests drive for real
# (Debian's chromium for the dashboard's browser test, redis-server for the gateway's), the
# venv and its dependencies, then lint, types and tests.
# The end-to-end tests install the pinned Claude Code CLI from npm themselves (cached).
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: install ${missing[*]} (the tests drive the real ones), then run it again." >&2
    exit 2
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
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
"$VENV/bin/lint-imports" --no-cache  # the layers of docs/ARCHITECTURE.md (pyproject.toml)
exec "$VENV/bin/python" -m pytest -q "$@"
