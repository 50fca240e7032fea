"""Each model's token-count calibration (`translate/calibration.py`) kept across restarts: in
Redis on a gateway that has it (every instance reads and writes one hash,
`gateway/shared_calibrations.py`), else in a small JSON file (`KIMI_CALIBRATION_FILE`), written
atomically and readable by the user only. Read at start; written every half minute when
something was learned, and at shutdown. What cannot be read is left alone with one warning: the
calibrations start from the prior again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from kimi_proxy.config.private_files import replace_private
from kimi_proxy.gateway.link import RedisLink
from kimi_proxy.gateway.shared_calibrations import read_calibrations, write_calibrations
from kimi_proxy.providers.pool import Pool
from kimi_proxy.translate.calibration import Calibration

log = logging.getLogger("kimi_proxy")
SAVE_EVERY_S = 30.0


def learned(pool: Pool) -> dict[str, bytes]:
    """Each calibrated model's calibration, as JSON."""
    return {m: orjson.dumps(c.as_json()) for m, c in pool.calibrations.items() if c.reports}


def take(pool: Pool, saved: dict[str, Any]) -> None:
    for model, data in saved.items():
        try:
            value = orjson.loads(data) if isinstance(data, bytes | str) else data
        except orjson.JSONDecodeError:
            continue
        pool.calibrations[str(model)] = Calibration.from_json(value)


def load_calibrations(pool: Pool, path: Path) -> None:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("token calibrations not read from %s (%s): starting from the prior", path, exc)
        return
    if isinstance(data, dict):
        take(pool, data)


def save_calibrations(pool: Pool, path: Path) -> None:
    data = {model: orjson.loads(saved) for model, saved in learned(pool).items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_private(path, orjson.dumps(data))
    except OSError as exc:
        log.warning("token calibrations not saved to %s: %s", path, exc)


async def keeping(pool: Pool, link: RedisLink | None, path: Path | None) -> None:
    """Run for the app's life: read the calibrations, then save them when they change."""
    save: Callable[[], Awaitable[None]]
    if link is not None:
        take(pool, await read_calibrations(link))

        async def save() -> None:
            await write_calibrations(link, learned(pool))

    elif path is not None:
        load_calibrations(pool, path)

        async def save() -> None:
            await asyncio.to_thread(save_calibrations, pool, path)

    else:
        return
    reports = _reports(pool)
    try:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            if _reports(pool) != reports:
                reports = _reports(pool)
                await save()
    finally:
        if _reports(pool) != reports:
            await save()


def _reports(pool: Pool) -> int:
    return sum(c.reports for c in pool.calibrations.values())
