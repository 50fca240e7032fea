#!/usr/bin/env bash
# Claude Code on Kimi in one command: ./kimi.sh [claude args...]
# Sets up what is missing (a venv with kimi-proxy; the pinned Claude Code CLI if `claude` is not
# on PATH), then `kimi-proxy code` decides the setup and says it in one line: the team gateway
# (KIMI_GATEWAY_URL + KIMI_USER_KEY), a proxy already running on KIMI_PROXY_PORT, or a proxy
# started here from your provider keys or config file (stopped when Claude Code exits).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${KIMI_VENV:-$HERE/.venv}"
stamp="$VENV/.kimi-proxy-installed"
if [ ! -x "$VENV/bin/kimi-proxy" ] || [ "$HERE/pyproject.toml" -nt "$stamp" ]; then
  echo "kimi.sh: setting up $VENV (first run only)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$HERE" >/dev/null
  touch "$stamp"
fi
exec "$VENV/bin/kimi-proxy" code "$@"
