"""`${VAR}` in the config file's values: replaced by the variable's value, and how a secret
given so is named in logs (its variable, else its last four characters)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(raw: str, env: Mapping[str, str]) -> str:
    """`${VAR}` replaced by the variable's value (empty when unset)."""
    return _VAR.sub(lambda m: env.get(m.group(1), ""), raw).strip()


def key_name(raw: str, value: str) -> str:
    match = _VAR.fullmatch(raw.strip())
    return match.group(1) if match else f"…{value[-4:]}"
