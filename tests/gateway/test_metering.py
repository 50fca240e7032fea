"""Usage metering's pure parts, and `kimi-proxy usage` without Redis (the access log)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kimi_proxy.gateway.metering import (
    UsageRow,
    fold,
    increments,
    render,
    rows_from_access_log,
    rows_from_fields,
)
from kimi_proxy.protocol.record import RequestRecord

BY_USER = ("user",)


def record(user: str | None, status: int = 200, **usage: int) -> RequestRecord:
    r = RequestRecord("req", "POST", "/v1/messages")
    r.user, r.session, r.agent, r.provider, r.model_used = user, "s1", None, "moonshot", "k2"
    r.status = status
    r.input_tokens = usage.get("input", 0)
    r.cached_tokens = usage.get("cached", 0)
    r.output_tokens = usage.get("output", 0)
    r.cost_usd = usage.get("cost_nusd", 0) / 1e9
    return r


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ann", "bob", None]),
            st.integers(0, 10**6),
            st.integers(0, 10**5),
            st.integers(0, 10**5),
            st.sampled_from([200, 429, 500]),
        ),
        max_size=30,
    )
)
def test_rollups_sum_back_to_exactly_what_each_request_used(requests) -> None:  # type: ignore[no-untyped-def]
    tally: dict[str, int] = {}
    for user, inp, cached, out, status in requests:
        for name, n in increments(
            record(user, status, input=inp, cached=cached, output=out)
        ).items():
            tally[name] = tally.get(name, 0) + n
    rows = fold(rows_from_fields("2026-12-04", tally.items()), BY_USER, None, None)
    assert sum(r.requests for r in rows) == len(requests)
    assert sum(r.input_tokens for r in rows) == sum(q[1] for q in requests)
    assert sum(r.cached_tokens for r in rows) == sum(q[2] for q in requests)
    assert sum(r.output_tokens for r in rows) == sum(q[3] for q in requests)
    assert sum(r.errors for r in rows) == sum(q[4] >= 400 for q in requests)


def test_cost_is_kept_in_nano_dollars_and_reported_in_dollars() -> None:
    fields = increments(record("ann", cost_nusd=1_234_567))
    (row,) = fold(rows_from_fields("2026-12-04", fields.items()), BY_USER, None, None)
    assert row.cost_usd == 0.001235  # rounded to 6 places when reported


def test_fold_filters_by_user_and_first_day() -> None:
    rows = [
        UsageRow("2026-12-01", "ann", requests=1),
        UsageRow("2026-12-03", "ann", requests=2),
        UsageRow("2026-12-03", "bob", requests=4),
    ]
    (only,) = fold(rows, ("user",), "ann", __import__("datetime").date(2026, 12, 2))
    assert (only.user, only.requests) == ("ann", 2)


def test_each_format_carries_the_dimensions_and_every_metric() -> None:
    rows = [UsageRow("2026-12-03", "ann", provider="moonshot", requests=2, cost_usd=0.5)]
    by = ("day", "user", "provider")
    (entry,) = json.loads(render(rows, by, "json"))
    assert entry == {
        "day": "2026-12-03",
        "user": "ann",
        "provider": "moonshot",
        "requests": 2,
        "input_tokens": 0,
        "cached_tokens": 0,
        "output_tokens": 0,
        "errors": 0,
        "cancelled": 0,
        "web_searches": 0,
        "cost_usd": 0.5,
    }
    (line,) = csv.DictReader(io.StringIO(render(rows, by, "csv")))
    assert line["user"] == "ann" and line["cost_usd"] == "0.5"
    table = render(rows, by, "table").splitlines()
    assert table[0].split()[:4] == ["day", "user", "provider", "requests"]


def test_fields_that_are_not_ours_are_skipped() -> None:
    assert list(rows_from_fields("2026-12-04", [("junk", 3), ("a\x1fb", 1)])) == []


def test_usage_without_redis_reads_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    lines = [
        '2026-12-04 10:00:00,000 INFO kimi_proxy.access {"path":"/v1/messages","status":200,'
        '"user":"ann","input_tokens":90,"cached_tokens":10,"output_tokens":5,"cost_usd":0.001}',
        '2026-12-04 10:00:01,000 INFO kimi_proxy.access {"path":"/v1/messages","status":429,'
        '"user":"ann","error_type":"rate_limit_error"}',
        '2026-12-04 10:00:02,000 INFO kimi_proxy.access {"path":"/health","status":200}',
        "2026-12-04 10:00:03,000 WARNING kimi_proxy.pool not json at all",
    ]
    log.write_text("\n".join(lines) + "\n")
    assert len(list(rows_from_access_log(lines))) == 5 + 2  # a row per metric counted
    done = subprocess.run(
        [
            sys.executable, "-m", "kimi_proxy", "usage", "--access-log", str(log),
            "--since", "2026-12-01", "--format", "json", "--by", "user",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["user"], row["requests"], row["errors"]) == ("ann", 2, 1)
    assert (row["input_tokens"], row["cached_tokens"], row["output_tokens"]) == (90, 10, 5)


def test_usage_refuses_bad_arguments_with_exit_code_2(tmp_path: Path) -> None:
    for args in (
        ["--since", "yesterday"],
        ["--format", "xml"],
        ["--by", "planet"],
        ["--since", "2999-01-01", "--access-log", str(tmp_path / "x")],
        [],  # neither Redis nor an access log
        ["--access-log", str(tmp_path / "missing.log")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "kimi_proxy", "usage", *args],
            capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.strip()
