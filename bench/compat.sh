#!/usr/bin/env bash
# The end-to-end suite against any Claude Code version, without moving the pin:
#   bench/compat.sh            # the newest on the npm registry
#   bench/compat.sh 2.1.330    # that one
# Each version is installed once into ~/.cache/kimi-proxy/claude-code-VERSION. Record what
# passed in docs/COMPATIBILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export KIMI_E2E_CLAUDE_CODE="${1:-latest}"
export CI=true  # a version that cannot be installed fails the run instead of skipping it
exec ./test.sh -m e2e -p no:cacheprovider "${@:2}"
