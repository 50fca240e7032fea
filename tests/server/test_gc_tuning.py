"""The serving process's collector tuning keeps memory bounded: garbage cycles are still freed."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, weakref
from kimi_proxy.server.app import tune_garbage_collector

tune_garbage_collector()
assert gc.isenabled() and gc.get_freeze_count() > 10_000  # libraries and schemas frozen

class Node:
    pass

probes = []
for _ in range(50_000):  # what requests leave behind: objects that only reference each other
    a, b = Node(), Node()
    a.other, b.other = b, a
    probes.append(weakref.ref(a))
    del a, b
alive = sum(ref() is not None for ref in probes)
assert alive < 5_000, alive  # young collections ran on their own, without gc.collect()
gc.collect()
assert all(ref() is None for ref in probes)
print("ok")
"""


def test_tuned_collector_still_frees_garbage_cycles() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
