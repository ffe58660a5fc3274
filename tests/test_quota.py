"""The daily quota: the run's request budget, the ledger's requests per account and day, the
plan before sending, the refusal, ``--within-quota``, and ``dmimport runs``."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from importer.ledger import (
    SCHEMA_VERSION,
    Ledger,
    RequestMeter,
    account_of,
    next_reset,
    quota_day,
    short_account,
)
from importer.send.budget import RequestBudget

SECRET = "s3cr3t-Quota+/="
BASE = "http://127.0.0.1:8080"
FILES = [{"path": "/data/c.csv", "size": 1, "mtime": 1.0, "sha256": "ab"}]


def _take_all(shared: object, n: int, out: object) -> None:
    budget = RequestBudget(shared=shared)
    took = sum(budget.take() for _ in range(n))
    out.value = took  # type: ignore[attr-defined]


def test_a_budget_says_no_once_spent_and_counts_only_what_it_allowed() -> None:
    budget = RequestBudget(3)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert (budget.used, budget.left, budget.exhausted) == (3, 0, True)
    budget.limit = 4  # a new quota day, or the ledger says less was used
    assert budget.take() and not budget.take()
    assert (budget.used, budget.left) == (4, 0)


def test_an_unlimited_budget_only_counts() -> None:
    budget = RequestBudget(None)
    assert all(budget.take() for _ in range(1000))
    assert (budget.used, budget.left, budget.limit, budget.exhausted) == (1000, None, None, False)


def test_a_budget_is_shared_by_spawned_children() -> None:
    ctx = mp.get_context("spawn")
    budget = RequestBudget(50)
    assert budget.take()  # counted before sharing: kept
    shared = budget.share(ctx)
    outs = [ctx.Value("q", 0) for _ in range(3)]
    procs = [ctx.Process(target=_take_all, args=(shared, 30, out)) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sum(o.value for o in outs) == 49  # 90 asked, 49 left after the parent's one
    assert (budget.used, budget.left, budget.exhausted) == (50, 0, True)


# -- the ledger's requests per account and day ---------------------------------------------------
def test_the_account_is_a_hash_of_base_url_and_secret_never_the_secret() -> None:
    account = account_of(BASE, SECRET)
    assert len(account) == 64 and SECRET not in account
    assert account == account_of(BASE + "/", SECRET)  # a trailing slash is the same host
    assert account != account_of(BASE, SECRET + "x")
    assert account != account_of("http://data-api.dmartech.cn", SECRET)
    assert short_account(account) == account[:12]


def test_the_quota_day_is_the_date_in_the_quota_time_zone() -> None:
    # 16:00 UTC is midnight in Shanghai: the platform's day turns there
    before = datetime(2026, 12, 5, 15, 59, 59, tzinfo=UTC)
    after = datetime(2026, 12, 5, 16, 0, 0, tzinfo=UTC)
    assert quota_day("Asia/Shanghai", before) == "2026-12-05"
    assert quota_day("Asia/Shanghai", after) == "2026-12-06"
    assert quota_day("UTC", after) == "2026-12-05"
    assert next_reset("Asia/Shanghai", before).isoformat() == "2026-12-06T00:00:00+08:00"
    assert next_reset("Asia/Shanghai", after).isoformat() == "2026-12-07T00:00:00+08:00"


def test_requests_are_counted_per_account_day_and_job(tmp_path: Path) -> None:
    account = account_of(BASE, SECRET)
    with Ledger(tmp_path / "state.db") as led:
        led.add_requests(account, "2026-12-05", "customers", 3)
        led.add_requests(account, "2026-12-05", "customers", 4)
        led.add_requests(account, "2026-12-05", "orders", 5)
        led.add_requests(account, "2026-12-06", "customers", 1)
        led.add_requests(account_of(BASE, "other"), "2026-12-05", "customers", 100)
        led.add_requests(account, "2026-12-05", "customers", 0)  # nothing to count
        assert led.requests("2026-12-05", account=account) == {
            (account, "customers"): 7,
            (account, "orders"): 5,
        }
        assert led.requests("2026-12-06", account=account) == {(account, "customers"): 1}
        assert led.requests("2026-12-05", job="customers") == {
            (account, "customers"): 7,
            (account_of(BASE, "other"), "customers"): 100,
        }
    text = (tmp_path / "state.db").read_bytes()
    assert SECRET.encode() not in text


def test_a_meter_carries_the_runs_requests_across_midnight_and_follows_other_jobs(
    tmp_path: Path,
) -> None:
    account = account_of(BASE, SECRET)
    clock = [datetime(2026, 12, 5, 15, 59, tzinfo=UTC)]  # 23:59 in Shanghai
    budget = RequestBudget(10)
    with Ledger(tmp_path / "state.db") as led:
        led.add_requests(account, "2026-12-05", "orders", 2)  # another job, earlier today
        meter = RequestMeter(
            led, account=account, job="customers", timezone="Asia/Shanghai", quota=10,
            budget=budget, clock=lambda: clock[0],
        )  # fmt: skip
        meter.flush()
        assert budget.limit == 8  # 10 - the other job's 2
        for _ in range(5):
            assert budget.take()
        assert meter.pending == 5
        meter.flush()
        assert (meter.pending, budget.limit, budget.left) == (0, 8, 3)
        led.add_requests(account, "2026-12-05", "orders", 2)  # the other job again
        meter.flush()
        assert (budget.limit, budget.left) == (6, 1)
        clock[0] = datetime(2026, 12, 5, 16, 0, 1, tzinfo=UTC)  # a new quota day
        assert budget.take()
        meter.flush()
        assert led.requests("2026-12-05") == {(account, "customers"): 5, (account, "orders"): 4}
        assert led.requests("2026-12-06") == {(account, "customers"): 1}
        assert (budget.used, budget.limit, budget.left) == (6, 15, 9)


def test_a_version_3_ledger_gains_the_requests_table(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Ledger(path) as led:
        led.begin_run("customers", "r1", "cfg", FILES)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE requests")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Ledger(path) as led:
        led.add_requests("acct", "2026-12-05", "customers", 2)
        assert led.requests("2026-12-05") == {("acct", "customers"): 2}
        assert [r.run_id for r in led.runs("customers")] == ["r1"]
    conn = sqlite3.connect(path)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == (str(SCHEMA_VERSION),) == ("4",)


def test_a_refused_run_is_looked_past_by_the_next_runs_resume(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state.db") as led:
        first = led.begin_run("customers", "r1", "cfg", FILES)
        led.end_run(first.run_id, status="interrupted", counts={}, exit_code=130)
        assert led.peek_run("customers", "cfg", FILES).resume_chain == ("r1",)
        refused = led.begin_run("customers", "r2", "cfg", FILES)
        assert refused.resumed_from == "r1"
        led.end_run(refused.run_id, status="refused", counts={}, exit_code=2)
        third = led.begin_run("customers", "r3", "cfg", FILES)
        assert (third.resumed_from, third.resume_chain) == ("r1", ("r1",))
        assert [r.status for r in led.runs("customers")] == ["running", "refused", "interrupted"]
