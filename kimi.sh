#!/usr/bin/env bash
# Claude Code on Kimi K2 in one command: ./kimi.sh [claude args...]
# Sets up what is missing (venv with kimi-proxy; the pinned Claude Code CLI if `claude` is not
# on PATH), starts the proxy unless one already answers, runs Claude Code through it, and stops
# the proxy it started when Claude Code exits.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${GROQ_API_KEY:-}" ] && [ -z "${KIMI_API_KEY:-}" ]; then
  cat >&2 <<'MSG'
kimi.sh: no provider API key.
  Get a Groq key at https://console.groq.com/keys, then:
    export GROQ_API_KEY=gsk_...
  (or set KIMI_API_KEY for another OpenAI-compatible provider with KIMI_UPSTREAM_URL)
MSG
  exit 2
fi
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
