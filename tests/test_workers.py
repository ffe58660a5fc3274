"""``--workers N``: several sender processes, against the real sandbox over loopback.

Per-customer order across processes (issue 11 #3).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from csvfiles import write_csv

from importer.pipeline import RunSummary, run
from importer.sandbox import Faults, Sandbox

COLUMNS = ["phone", "email", "name"]

USERS = """
job: {{name: users, kind: user, primary_keys: [phone, email]}}
columns:
  phone: {{from: phone}}
  email: {{from: email}}
  username: {{from: name}}
send:
  concurrency: {concurrency}
  retry: {{max_attempts: 4, initial_backoff_s: 0.01, max_backoff_s: 0.02}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""


def make_config(tmp_path: Path, concurrency: int = 8) -> Path:
    path = tmp_path / "job.yaml"
    text = USERS.format(
        concurrency=concurrency, reports=tmp_path / "reports", state=tmp_path / "state.db"
    )
    path.write_text(text, encoding="utf-8")
    return path


def send(
    sb: Sandbox, cfg: Path, data: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> RunSummary:
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    return run(cfg, [data], overrides={"target.base_url": sb.url, **overrides})


def read_results(summary: RunSummary) -> list[dict[str, str]]:
    assert summary.results_path is not None
    with open(summary.results_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_customers_known_by_several_keys_keep_file_order_across_processes(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    # 400 customers as the issue has them: row A names one by phone and e-mail (old values),
    # the next row B by e-mail alone (new values). Routed by the first key, A and B went to
    # different processes and B could land first. 100 more customers link two keys that
    # were seen apart: X by phone, Y by e-mail, Z by both (the platform merges them), then V
    # by phone and W by e-mail: the last row of each must win.
    sb = fresh_sandbox(faults=Faults(seed=workers, latency_ms="0-15"))
    rows: list[list[str]] = []
    expected: dict[str, tuple[str, str]] = {}
    for c in range(400):
        phone, email = f"0160{c:07d}", f"c{c}@x.cn"
        rows += [[phone, email, f"old-{c}"], ["", email, f"new-{c}"]]
        expected[phone] = (email, f"new-{c}")
    for c in range(100):
        phone, email = f"0161{c:07d}", f"m{c}@x.cn"
        rows += [[phone, "", f"x-{c}"], ["", email, f"y-{c}"], [phone, email, f"z-{c}"]]
        rows += [[phone, "", f"v-{c}"], ["", email, f"w-{c}"]]
        expected[phone] = (email, f"w-{c}")
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    summary = send(sb, make_config(tmp_path), data, monkeypatch, **{"send.workers": workers})
    assert (summary.exit_code, summary.counts["ok"], summary.requests) == (0, 1300, 1300)
    stored = {
        c["properties"]["phone"]: (c["properties"]["email"], c["properties"]["username"])
        for c in sb.customers()
    }
    assert len(sb.customers()) == 500  # each merged customer is one customer
    wrong = {p: (stored.get(p), want) for p, want in expected.items() if stored.get(p) != want}
    assert wrong == {}


# -- a platform that turns every request away (issue 11 #20) ----------------------------------


def failing_platform_run(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    **overrides: Any,
) -> tuple[Sandbox, RunSummary]:
    # 429 on every request with a Retry-After of an hour: retry_after_cap_s caps each wait at
    # 10 ms (by default 120 s, which made the run last about 50 minutes)
    sb = fresh_sandbox(faults=Faults(http_429=1.0, retry_after="3600"))
    rows = [[f"0162{i:07d}", f"f{i}@x.cn", f"f{i}"] for i in range(n)]
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    ov = {
        "send.retry.max_attempts": 5,
        "send.retry.retry_after_cap_s": 0.01,
        "send.retry.max_backoff_s": 0,
        **overrides,
    }
    summary = send(sb, make_config(tmp_path), data, monkeypatch, **ov)
    return sb, summary


def test_a_platform_answering_429_forever_stops_the_run_after_a_bounded_number_of_requests(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, summary = failing_platform_run(
        fresh_sandbox, tmp_path, monkeypatch, 1000,
        **{"send.concurrency": 1, "send.abort_after_failed_requests": 30},
    )  # fmt: skip
    assert summary.exit_code == 3
    assert summary.aborted == (
        "the platform failed the last 30 requests in a row (last: HTTP 429); stopped so that "
        "the rest can be sent when it is back: run the same command again"
    )
    # one request at a time: exactly the bound, six rows of five attempts
    assert summary.requests == sb.stats()["by_path"]["/v1/user"] == 30
    results = read_results(summary)
    assert [r["attempts"] for r in results if r["status"] == "failed"] == ["5"] * 6
    assert (summary.counts["failed"], summary.counts["not_sent"]) == (6, 994)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_request_bound_holds_for_the_run_whatever_the_concurrency_and_workers(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    concurrency, limit = 4, 40
    sb, summary = failing_platform_run(
        fresh_sandbox, tmp_path, monkeypatch, 3000,
        **{"send.concurrency": concurrency, "send.workers": workers,
           "send.abort_after_failed_requests": limit},
    )  # fmt: skip
    assert summary.exit_code == 3
    assert summary.aborted is not None
    assert summary.aborted.startswith("the platform failed the last 40 requests in a row")
    # the requests in flight when the bound was reached end; none is started after it
    in_flight = workers * concurrency
    assert limit <= summary.requests == sb.stats()["by_path"]["/v1/user"] <= limit + in_flight
    assert summary.counts["failed"] + summary.counts["not_sent"] == 3000


def test_failed_rows_are_counted_for_the_run_not_per_sender_process(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each process used to count its own rows: with 2 workers about twice the bound failed
    concurrency, limit = 4, 40
    sb, summary = failing_platform_run(
        fresh_sandbox, tmp_path, monkeypatch, 3000,
        **{"send.concurrency": concurrency, "send.workers": 2,
           "send.retry.max_attempts": 2, "send.abort_after_failed_rows": limit,
           "send.abort_after_failed_requests": 0},
    )  # fmt: skip
    assert summary.exit_code == 3
    assert summary.aborted == (
        f"the platform failed {limit} rows in a row after 2 attempts each (last: HTTP 429); "
        "stopped so that the rest can be sent when it is back: run the same command again"
    )
    assert limit <= summary.counts["failed"] <= limit + 2 * concurrency
    assert summary.counts["failed"] + summary.counts["not_sent"] == 3000
    assert summary.requests == sb.stats()["by_path"]["/v1/user"]
