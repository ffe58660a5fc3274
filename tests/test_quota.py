"""The daily quota: the run's request budget, the ledger's requests per account and day, the
plan before sending, the refusal, ``--within-quota``, and ``dmimport runs``."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from helpers import dmimport, on_terminal, start_dmimport, write_csv

from importer.config import Config
from importer.job import parse_job
from importer.ledger import (
    SCHEMA_VERSION,
    Ledger,
    RequestMeter,
    account_of,
    next_reset,
    quota_day,
    short_account,
)
from importer.quota import MARGIN_SHARE, RowCount, make_plan, margin, per_request
from importer.sandbox import Sandbox
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


# -- the plan ----------------------------------------------------------------------------------
def _config(**send: Any) -> Config:
    return parse_job(
        {
            "job": {"name": "quotajob", "kind": "user", "primary_keys": ["phone"]},
            "columns": {"phone": "phone", "username": "name"},
            "send": send,
        }
    )


def test_the_plan_counts_requests_per_batch_and_keeps_a_margin() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai
    count = RowCount({"": 60_000})
    plan = make_plan(
        _config(), count, used_today=9_800, account=account_of(BASE, SECRET), tracked=True,
        now=now,
    )  # fmt: skip
    # 60,000 rows / 500 = 120 requests; 2% (3) + one bad row's bisection (2 x 9)
    assert (plan.requests, plan.margin, plan.needed) == (120, 21, 141)
    assert (plan.left, plan.fits, plan.day) == (200, True, "2026-12-05")
    assert plan.resets() == "00:00 Asia/Shanghai (2026-12-05 16:00 UTC)"
    assert plan.lines() == [
        "quota plan: 60,000 rows to send -> 120 request(s) (up to 500 rows each) + 21 margin "
        "for retries and bisection = 141 requests",
        f"quota today: 200 of 10,000 left on 2026-12-05 (Asia/Shanghai; 9,800 used; account "
        f"{account_of(BASE, SECRET)[:12]}); fits",
    ]
    # events go per event name; deletes and the signed profile one row per request
    events = make_plan(
        _config(batch_rows=100), RowCount({"order": 250, "refund": 1}), used_today=0,
        account=None, tracked=True, now=now,
    )  # fmt: skip
    assert (events.requests, events.margin) == (4, 1 + 2 * 7)
    signed = _config()
    signed = signed.model_copy(
        update={"target": signed.target.model_copy(update={"protocol": "signed"})}
    )
    assert per_request(signed) == 1
    one_by_one = make_plan(signed, count, used_today=0, account=None, tracked=True, now=now)
    assert (one_by_one.requests, one_by_one.margin) == (60_000, 1_200)
    assert margin(0, 500) == 0 and MARGIN_SHARE == 0.02


def test_the_refusal_gives_the_numbers_and_the_ways_out() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    cfg = _config(batch_rows=10, daily_quota=15)
    plan = make_plan(cfg, RowCount({"": 100}), used_today=0, account=None, tracked=True, now=now)
    assert (plan.requests, plan.margin, plan.fits) == (10, 9, False)
    assert str(plan.refusal(cfg, changed_only=False)) == (
        "the run needs 19 requests (10 for 100 rows at 10 rows per request, + 9 margin for "
        "retries and bisection) but 15 of send.daily_quota 15 are left today (2026-12-05, "
        "Asia/Shanghai: 0 used by this account); nothing was sent. Ways out: bigger batches "
        "(send.batch_rows: 25 fits); --changed-only (send only the rows that changed since the "
        "last run); --within-quota (send about 100 rows now, the rest on the next run); a later "
        "day: the quota resets at 00:00 Asia/Shanghai (2026-12-05 16:00 UTC)"
    )
    # already changed-only, and no batch size fits: those ways are not offered
    tight = make_plan(
        _config(batch_rows=10, daily_quota=8), RowCount({"": 100}), used_today=0, account=None,
        tracked=True, now=now,
    )  # fmt: skip
    text = str(tight.refusal(cfg, changed_only=True))
    assert "Ways out: --within-quota (send about 80 rows now, the rest on the next run); a " in text
    assert "bigger batches" not in text and "--changed-only" not in text


# -- runs against the sandbox --------------------------------------------------------------------
def _job(tmp_path: Path, url: str, n: int = 100, **send: Any) -> tuple[Path, Path]:
    """A customer job of ``n`` rows against ``url``, its ledger and reports in ``tmp_path``."""
    send = {"rate_limit": None, **send}
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "job": {"name": "quotajob", "kind": "user", "primary_keys": ["phone"]},
                "target": {"base_url": url},
                "columns": {"phone": "phone", "username": "name"},
                "send": send,
                "report": {"dir": str(tmp_path / "reports")},
            }
        ),
        encoding="utf-8",
    )
    data = tmp_path / "people.csv"
    if not data.exists():  # written once: a resume compares the files' fingerprints
        write_csv(data, ["phone", "name"], [[f"0162{i:07d}", f"name-{i}"] for i in range(n)])
    return config, data


def _requests_today(tmp_path: Path, secret: str, url: str, tz: str = "Asia/Shanghai") -> dict:
    with Ledger(tmp_path / "state" / "state.db") as led:
        return led.requests(quota_day(tz), account=account_of(url, secret))


def test_a_run_that_does_not_fit_stops_before_sending_with_exit_2(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=15)
    day = quota_day("Asia/Shanghai")
    at = next_reset("Asia/Shanghai")
    out = dmimport("run", config, data, secret=sb.secret)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "error: the run needs 19 requests (10 for 100 rows at 10 rows per request, + 9 margin "
        "for retries and bisection) but 15 of send.daily_quota 15 are left today "
        f"({day}, Asia/Shanghai: 0 used by this account); nothing was sent. Ways out: bigger "
        "batches (send.batch_rows: 25 fits); --changed-only (send only the rows that changed "
        "since the last run); --within-quota (send about 100 rows now, the rest on the next "
        "run); a later day: the quota resets at 00:00 Asia/Shanghai "
        f"({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
    ]
    assert sb.stats()["requests"] == 0
    # no report folder is left behind; the ledger says the run was refused
    assert [p for p in (tmp_path / "reports").iterdir() if p.is_dir()] == []
    with Ledger(tmp_path / "state" / "state.db") as led:
        [record] = led.runs("quotajob")
    assert (record.status, record.exit_code) == ("refused", 2)
    assert _requests_today(tmp_path, sb.secret, sb.url) == {}


def _on_a_terminal(*args: str | Path, secret: str) -> tuple[int, str, str]:
    """``dmimport ARGS`` with its stderr on a terminal nobody sized (a pseudo-terminal): exit
    code, stdout, stderr (line ends as ``\n``)."""
    code, out, chunks = on_terminal(*args, cwd=Path.cwd(), secret=secret, columns=0)
    return code, out, "".join(text for _, text in chunks).replace("\r\n", "\n")


def test_dry_run_shows_the_plan_on_a_terminal_and_in_the_summary(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=15)
    code, stdout, stderr = _on_a_terminal(
        "run", config, data, "--dry-run", "--json", "--quiet", secret=sb.secret
    )
    assert code == 0, stderr
    account = account_of(sb.url, sb.secret)[:12]
    assert stderr.splitlines()[:2] == [
        "INFO importer.quota: quota plan: 100 rows to send -> 10 request(s) (up to 10 rows "
        "each) + 9 margin for retries and bisection = 19 requests",
        f"INFO importer.quota: quota today: 15 of 15 left on {quota_day('Asia/Shanghai')} "
        f"(Asia/Shanghai; 0 used; account {account}); does NOT fit",
    ]
    assert "WARNING importer.quota: the run needs 19 requests" in stderr
    quota = json.loads(stdout)["quota"]
    assert {k: quota[k] for k in ("rows", "requests", "margin", "needed", "left", "fits")} == {
        "rows": 100, "requests": 10, "margin": 9, "needed": 19, "left": 15, "fits": False,
    }  # fmt: skip
    assert sb.stats()["requests"] == 0
    # not on a terminal (cron): no plan on stderr, the summary's line says it
    out = dmimport("run", config, data, "--dry-run", secret=sb.secret)
    assert "quota plan" not in out.stderr
    assert "  quota     19 requests planned; 15 of 15 were left (" in out.stdout


def test_runs_shows_todays_requests_of_the_job_and_the_account(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=15)
    assert dmimport("run", config, data, secret=sb.secret).returncode == 2  # makes the ledger
    account = account_of(sb.url, sb.secret)
    day = quota_day("Asia/Shanghai")
    with Ledger(tmp_path / "state" / "state.db") as led:
        led.add_requests(account, day, "quotajob", 4)
        led.add_requests(account, day, "orders", 3)  # another job of the account
        led.add_requests(account_of(sb.url, "another"), day, "quotajob", 50)  # another account
    at = next_reset("Asia/Shanghai").astimezone(UTC)
    out = dmimport("runs", config, secret=sb.secret)
    assert out.returncode == 0, out.stderr
    # the job's requests to another account (a run with --base-url to the sandbox) are said,
    # not silently left out of the job's count
    assert out.stdout.splitlines()[-3:] == [
        f"requests today ({day}, Asia/Shanghai): job quotajob 4",
        f"account {account[:12]} (every job in this ledger): 7 requests; 8 of "
        f"send.daily_quota 15 left; resets at 00:00 Asia/Shanghai ({at:%Y-%m-%d %H:%M} UTC)",
        "job quotajob also made 50 requests today to another account (another base URL or "
        "SECRET than the config's, e.g. a run with --base-url): not counted above",
    ]
    assert " refused " in out.stdout
    # without the SECRET, the job's requests on every account, and what is missing said
    out = dmimport("runs", config)
    assert out.stdout.splitlines()[-2:] == [
        f"requests today ({day}, Asia/Shanghai): job quotajob 54",
        "the account's total and the quota left need the SECRET ($DMART_SECRET is not set); "
        f"send.daily_quota 15; resets at 00:00 Asia/Shanghai ({at:%Y-%m-%d %H:%M} UTC)",
    ]
    assert sb.secret not in out.stdout


def _run(config: Path, data: Path, secret: str, *args: str) -> tuple[int, dict[str, Any], str]:
    """``dmimport run CONFIG DATA --json ARGS``: exit code, summary, stderr."""
    out = dmimport("run", config, data, "--json", *args, secret=secret)
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


# At any moment these two zones are on different dates (UTC+14 and UTC-11): two quota days.
EARLY, LATE = "Pacific/Kiritimati", "Pacific/Pago_Pago"


def test_within_quota_sends_exactly_what_is_left_and_the_next_days_run_resumes(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=8, quota_timezone=EARLY)
    code, first, err = _run(config, data, sb.secret, "--within-quota")
    assert code == 1, err
    assert sb.stats()["requests"] == 8  # exactly what was left
    assert (first["counts"]["ok"], first["counts"]["not_sent"]) == (80, 20)
    assert first["quota"]["exhausted"] and first["quota"]["within_quota"]
    assert first["aborted"] is None
    assert "WARNING importer.quota: the daily quota ran out after 8 requests of this run" in err
    # the rows left for the next run say why: the quota, not an abort
    quota_reason = "not sent: the daily quota ran out (send.daily_quota); the next run resumes it"
    assert [(r["reason"], r["rows"]) for r in first["top_reasons"]] == [(quota_reason, 20)]
    assert _requests_today(tmp_path, sb.secret, sb.url, EARLY) == {
        (account_of(sb.url, sb.secret), "quotajob"): 8
    }
    # the same day again: nothing is left; the run sends nothing and leaves every row to come
    code, second, err = _run(config, data, sb.secret, "--within-quota")
    assert code == 1, err
    assert second["quota"]["used_today"] == 8 and second["quota"]["left"] == 0
    assert sb.stats()["requests"] == 8
    assert (second["counts"]["skipped"], second["counts"]["not_sent"]) == (80, 20)
    # the next quota day (send.* is not part of what a resume compares): 2 requests + their
    # margin of 9 fit in 20
    config, _ = _job(tmp_path, sb.url, batch_rows=10, daily_quota=20, quota_timezone=LATE)
    code, third, err = _run(config, data, sb.secret)
    assert code == 0, err
    assert third["resumed_from"] == second["run_id"]
    assert third["quota"]["used_today"] == 0
    assert (third["counts"]["skipped"], third["counts"]["ok"]) == (80, 20)
    assert sb.stats()["requests"] == 10
    assert _requests_today(tmp_path, sb.secret, sb.url, LATE) == {
        (account_of(sb.url, sb.secret), "quotajob"): 2
    }
    assert _requests_today(tmp_path, sb.secret, sb.url, EARLY) == {
        (account_of(sb.url, sb.secret), "quotajob"): 8
    }
    with Ledger(tmp_path / "state" / "state.db") as led:
        assert [r.status for r in led.runs("quotajob")] == ["done", "quota", "quota"]


def test_the_quota_running_out_mid_run_leaves_the_rest_not_sent_with_exit_3(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    # every row names a property the account does not know: the platform refuses every batch,
    # and bisecting them costs far more than the plan's margin
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, n=20, batch_rows=10, daily_quota=12)
    text = config.read_text(encoding="utf-8").replace("username: name", "nickname: name")
    config.write_text(text, encoding="utf-8")
    code, summary, err = _run(config, data, sb.secret)
    assert code == 3, err
    assert summary["quota"]["needed"] == 11 and summary["quota"]["exhausted"]
    assert sb.stats()["requests"] == 12
    assert summary["counts"]["not_sent"] > 0
    at = next_reset("Asia/Shanghai")
    assert summary["aborted"] == (
        "the daily quota ran out after 12 requests of this run (send.daily_quota 12, "
        f"{quota_day('Asia/Shanghai')} Asia/Shanghai): the rows not sent are resumed by the "
        f"next run; the quota resets at 00:00 Asia/Shanghai ({at.astimezone(UTC):%Y-%m-%d %H:%M}"
        " UTC)"
    )
    assert sum(_requests_today(tmp_path, sb.secret, sb.url).values()) == 12


def test_the_platforms_own_daily_quota_429_stops_the_run_and_every_request_is_counted(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    # dmimport's own quota off (send.daily_quota: 0): no plan, no limit, requests still counted
    sb = fresh_sandbox(daily_quota=5)
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=0)
    code, summary, err = _run(config, data, sb.secret)
    assert code == 3, err
    assert "importer.quota" not in err and summary["quota"] is None
    stats = sb.stats()
    assert stats["by_http_status"].get("429", 0) >= 1
    # 5 requests of 10 rows stored; the rest never sent, or refused unread with the day's
    # Retry-After (requests in flight when the first such answer came): not_sent, every one,
    # resumed by the next run, not "failed" as if the platform had read them
    counts = summary["counts"]
    assert (counts["ok"], counts["failed"], counts["not_sent"]) == (50, 0, 50)
    assert stats["requests"] == summary["requests"]
    assert sum(_requests_today(tmp_path, sb.secret, sb.url).values()) == stats["requests"]
    with Ledger(tmp_path / "state" / "state.db") as led:
        [record] = led.runs("quotajob")
    assert record.status == "quota"  # resumable: the next run sends only the rest


def test_a_killed_runs_requests_are_counted(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, n=400, batch_rows=1, rate_limit=40, daily_quota=0)
    proc = start_dmimport("run", config, data, "--quiet", secret=sb.secret)
    try:
        deadline = time.monotonic() + 60
        while sb.stats()["requests"] < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # no chance to say anything
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    made = sb.stats()["requests"]
    assert 40 <= made < 400
    counted = sum(_requests_today(tmp_path, sb.secret, sb.url).values())
    # at most the last 100 ms of requests (4 at 40/s, and those in flight) go uncounted
    assert made - 6 <= counted <= made


def test_the_budget_holds_for_every_worker_process_together(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=8, workers=2)
    code, summary, err = _run(config, data, sb.secret, "--within-quota")
    assert code == 1, err
    assert sb.stats()["requests"] == 8 == summary["requests"]
    assert (summary["counts"]["ok"], summary["counts"]["not_sent"]) == (80, 20)
    assert sum(_requests_today(tmp_path, sb.secret, sb.url).values()) == 8


def test_debug_requests_count_against_the_quota(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10)
    code, summary, err = _run(config, data, sb.secret, "--debug")
    assert code == 0, err
    assert sb.stats()["items"]["stored"] == 0  # debug: checked, not stored
    assert summary["quota"]["used_today"] == 0 and summary["requests"] == 10
    assert _requests_today(tmp_path, sb.secret, sb.url) == {
        (account_of(sb.url, sb.secret), "quotajob"): 10
    }


def test_without_a_ledger_the_quota_is_not_tracked_but_a_run_still_stops_at_it(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=8)
    text = yaml.safe_load(config.read_text(encoding="utf-8"))
    config.write_text(yaml.safe_dump({**text, "state": {"enabled": False}}), encoding="utf-8")
    for _ in range(2):  # nothing is remembered: the second run plans on the whole quota too
        code, summary, err = _run(config, data, sb.secret, "--within-quota")
        assert code == 1, err
        assert (summary["quota"]["tracked"], summary["quota"]["left"]) == (False, 8)
        assert summary["counts"]["ok"] == 80
        assert err.startswith(
            "WARNING importer.quota: the daily quota is not tracked across runs (state.enabled: "
            "false): this run may use up to send.daily_quota (8) requests, whatever other runs "
            "used today\n"
        )
    assert sb.stats()["requests"] == 16
    assert not (tmp_path / "state" / "state.db").exists()


def test_preview_plans_changed_only_against_the_ledger_and_counts_todays_requests(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10)
    text = yaml.safe_load(config.read_text(encoding="utf-8"))
    config.write_text(yaml.safe_dump({**text, "state": {"mode": "incremental"}}), "utf-8")
    code, _, err = _run(config, data, sb.secret)
    assert code == 0, err
    rows = data.read_text(encoding="utf-8").splitlines()
    rows[1:4] = [f"{line}-changed" for line in rows[1:4]]  # 3 rows change
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = dmimport("preview", config, data, "-n", "0", secret=sb.secret)
    assert out.returncode == 0, out.stderr
    account = account_of(sb.url, sb.secret)[:12]
    assert out.stdout.splitlines()[-2:] == [
        "quota plan: 3 rows to send -> 1 request(s) (up to 10 rows each) + 5 margin for "
        "retries and bisection = 6 requests",
        f"quota today: 9,990 of 10,000 left on {quota_day('Asia/Shanghai')} (Asia/Shanghai; "
        f"10 used; account {account}); fits",
    ]
    assert sb.stats()["requests"] == 10  # the preview sent nothing


def test_a_changed_only_run_plans_on_the_files_rows_when_they_fit_else_counts_the_changed(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb.url, batch_rows=10, daily_quota=30)
    code, _, err = _run(config, data, sb.secret)
    assert code == 0 and sb.stats()["requests"] == 10, err
    rows = data.read_text(encoding="utf-8").splitlines()
    rows[1:4] = [f"{line}-changed" for line in rows[1:4]]  # 3 rows change
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    # 20 left: the file's 101 lines (an upper bound of its rows) -> 11 requests + 9 margin
    # fit, so the rows are not classified before the run
    code, second, err = _run(config, data, sb.secret, "--changed-only")
    assert code == 0, err
    plan = second["quota"]
    assert (plan["at_most"], plan["rows"], plan["requests"], plan["needed"]) == (True, 101, 11, 20)
    assert (second["counts"]["ok"], second["counts"]["unchanged"]) == (3, 97)
    assert sb.stats()["requests"] == 11
    shown = make_plan(
        _config(batch_rows=10), RowCount({"": 101}), used_today=10, account=None, tracked=True,
        at_most=True,
    )  # fmt: skip
    assert shown.lines()[0] == (
        "quota plan: at most 101 rows to send (the files' rows: that fits, so they were not "
        "classified first) -> at most 11 request(s) (up to 10 rows each) + 9 margin for retries "
        "and bisection = at most 20 requests"
    )
    # 19 left: the bound does not fit, the rows that changed are counted (3 -> 1 request + 5 margin)
    rows[1:4] = [f"{line}-again" for line in rows[1:4]]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, third, err = _run(config, data, sb.secret, "--changed-only")
    assert code == 0, err
    plan = third["quota"]
    assert (plan["at_most"], plan["rows"], plan["requests"], plan["needed"]) == (False, 3, 1, 6)
    assert third["counts"]["ok"] == 3 and sb.stats()["requests"] == 12
