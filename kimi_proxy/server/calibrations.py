"""Each model's token-count calibration (`translate/calibration.py`) kept across restarts: read
from a small JSON file at start, written back (atomically, readable by the user only) every
half minute when it changed, and at shutdown. A file that cannot be read is left alone with one
warning: the calibrations start from the prior again."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import orjson

from kimi_proxy.providers.pool import Pool
from kimi_proxy.translate.calibration import Calibration

log = logging.getLogger("kimi_proxy")
SAVE_EVERY_S = 30.0


def load_calibrations(pool: Pool, path: Path) -> None:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("token calibrations not read from %s (%s): starting from the prior", path, exc)
        return
    if isinstance(data, dict):
        for model, saved in data.items():
            pool.calibrations[str(model)] = Calibration.from_json(saved)


def _reports(pool: Pool) -> int:
    return sum(c.reports for c in pool.calibrations.values())


def save_calibrations(pool: Pool, path: Path) -> None:
    data = {model: c.as_json() for model, c in pool.calibrations.items() if c.reports}
    temporary = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(data))
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("token calibrations not saved to %s: %s", path, exc)


async def keep_saving(pool: Pool, path: Path) -> None:
    """Save every `SAVE_EVERY_S` when something was learned; once more when cancelled."""
    saved = _reports(pool)
    try:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            if _reports(pool) != saved:
                saved = _reports(pool)
                await asyncio.to_thread(save_calibrations, pool, path)
    finally:
        if _reports(pool) != saved:
            save_calibrations(pool, path)
