"""The machine and the package versions a benchmark ran on, for the report's header lines."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = (
    "kimi-proxy",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "httpx",
    "anyio",
    "orjson",
    "pydantic",
    "pydantic-core",
    "psutil",
    "py-spy",
)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(results: dict[str, Any]) -> str:
    """The machine and versions, under each table."""
    m = results["machine"]
    packages = m["packages"]
    source = results.get("proxy_source") or {}
    return (
        f"_{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, uvicorn "
        f"{packages.get('uvicorn', '-')}, uvloop {packages.get('uvloop', '-')}, httptools "
        f"{packages.get('httptools', '-')}; kimi_proxy {source.get('commit', '?')}; "
        f"{m['date']}._\n"
    )
