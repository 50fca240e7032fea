"""The suite's own environment: nothing of the caller's home, config files, keys or proxies.

`scrub(environ, home, cache)` removes every variable through which the caller's setup could
reach a test (provider keys, `KIMI_*`, Anthropic and Claude Code settings, HTTP proxies,
certificate bundles, OpenTelemetry, web search backends) and points HOME and the XDG folders
at the suite's own. The pinned Claude Code CLI is kept in `cache` (the repository's
`.test-cache/`), so it is installed once per checkout, not once per run.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path

#: Variables kept even though a pattern below matches them: the suite's own switches.
KEPT = frozenset({"KIMI_E2E_CLAUDE_CODE", "KIMI_CHROMIUM", "KIMI_UPDATE_SCREENSHOT"})

CLEARED = re.compile(
    r"""(
        KIMI_.* | .*_API_KEY | .*_API_TOKEN | MAX_TOOL_ITERATIONS
      | ANTHROPIC_.* | CLAUDE_.* | DISABLE_.*
      | (?i:https?_proxy | all_proxy | no_proxy)
      | SSL_CERT_FILE | SSL_CERT_DIR | REQUESTS_CA_BUNDLE | CURL_CA_BUNDLE
      | OTEL_.* | REDIS_.* | SEARXNG_URL
      | XDG_.*
    )""",
    re.VERBOSE,
)


def scrub(environ: MutableMapping[str, str], home: Path, cache: Path) -> list[str]:
    """Clear the caller's settings from `environ`; return the names removed."""
    removed = [name for name in environ if CLEARED.fullmatch(name) and name not in KEPT]
    for name in removed:
        del environ[name]
    for folder in ("config", "state", "runtime"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    (home / "runtime").chmod(0o700)
    environ["HOME"] = str(home)
    environ["XDG_CONFIG_HOME"] = str(home / "config")
    environ["XDG_STATE_HOME"] = str(home / "state")
    environ["XDG_RUNTIME_DIR"] = str(home / "runtime")
    environ["XDG_CACHE_HOME"] = str(cache)
    return removed
