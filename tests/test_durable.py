"""Durable nightly runs: resume after SIGKILL, changed-only, retry, the job lock, thresholds."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import dmimport, read_results, start_dmimport, write_csv
from oldledger import downgrade

from importer.api import list_runs, retry, run
from importer.errors import LedgerError, LoadError, LockedError, NothingToRetry
from importer.ledger import Ledger
from importer.report import RunSummary
from importer.sandbox import Faults, Sandbox

pytestmark = pytest.mark.slow  # subprocesses, SIGKILL and resume, 20,000-row runs

ROOT = Path(__file__).resolve().parent.parent
USER_COLUMNS = ["phone", "email", "name", "age"]

# duplicates: keep_all: these tests put repeated customers through the sender and the ledger;
# the default (keep_last, tests/test_duplicates.py) would send each customer's last row only
USERS = """
job: {{name: users, kind: user, primary_keys: [phone, email], duplicates: keep_all}}
columns:
  phone: phone
  email: email
  username: name
  age: {{from: age, type: integer}}
send:
  concurrency: {concurrency}
  batch_rows: {batch_rows}
  rate_limit: null
  retry: {{max_attempts: {attempts}, initial_backoff_s: 0.01, max_backoff_s: 0.02}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""

EVENTS = """
job: {{name: orders, kind: event, event_name: order_detail, primary_keys: [phone]}}
columns:
  phone: phone
  orderId: order_id
  event_id: order_id
  create_time: created
send: {{concurrency: 16, batch_rows: {batch_rows}, rate_limit: null}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""


def make_config(
    tmp_path: Path, template: str, concurrency: int = 8, attempts: int = 4, batch_rows: int = 10
) -> Path:
    """The job's config. 10 rows a request (not the default 500), so that these runs make
    enough requests to be stopped mid-way and to meet faults; no rate limit (these runs make
    hundreds of requests)."""
    path = tmp_path / "job.yaml"
    path.write_text(
        template.format(
            concurrency=concurrency,
            attempts=attempts,
            batch_rows=batch_rows,
            reports=tmp_path / "reports",
            state=tmp_path / "state.db",
        ),
        encoding="utf-8",
    )
    return path


def users_file(path: Path, n: int, *, version: str = "v1", dup_every: int = 0) -> list[list[str]]:
    rows = [[f"0150{i:07d}", f"u{i}@x.cn", f"{version}-{i}", str(i % 90)] for i in range(n)]
    if dup_every:
        # the same customer again later in the file, with newer values: the last one must win
        rows += [
            [r[0], r[1], f"{version}-again-{j}", r[3]] for j, r in enumerate(rows[::dup_every])
        ]
    write_csv(path, USER_COLUMNS, rows)
    return rows


def test_changed_only_sends_zero_then_exactly_the_changed_rows(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS)
    data = tmp_path / "u.csv"
    rows = users_file(data, 2000)
    ov = {"target.base_url": sb.url}
    first = run(cfg, [data], overrides=ov)
    assert first.counts["ok"] == 2000 and first.requests == 200  # 10 rows a request

    second = run(cfg, [data], overrides=ov, changed_only=True)
    assert second.requests == 0
    assert second.counts["unchanged"] == 2000
    assert second.exit_code == 0

    changed = {7, 300, 1999}
    for i in changed:
        rows[i][2] = f"changed-{i}"
    write_csv(data, USER_COLUMNS, rows)
    third = run(cfg, [data], overrides=ov, changed_only=True)
    assert third.requests == 1  # the 3 changed rows, far apart in the file, in one batch
    assert (third.counts["ok"], third.counts["unchanged"]) == (3, 1997)
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert all(stored[rows[i][0]] == f"changed-{i}" for i in changed)

    full = run(cfg, [data], overrides=ov, changed_only=True, full=True)
    assert full.requests == 200  # --full wins: everything again


def test_a_ledger_upgraded_from_hex_hashes_still_skips_every_unchanged_row(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS)
    data = tmp_path / "u.csv"
    rows = users_file(data, 1500, dup_every=100)
    ov = {"target.base_url": sb.url}
    first = run(cfg, [data], overrides=ov)
    assert first.counts["ok"] == 1515
    state = tmp_path / "state.db"
    downgrade(state)  # as dmimport before INTEGER hashes left it: schema 2, hex TEXT hashes
    second = run(cfg, [data], overrides=ov, changed_only=True)  # upgrades it, then classifies
    assert second.requests == 0
    assert (second.counts["unchanged"], second.counts["skipped"]) == (1500, 15)
    conn = sqlite3.connect(state)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "4",
        )
        kinds = conn.execute("SELECT DISTINCT typeof(last_ok_hash) FROM rows").fetchall()
        assert kinds == [("integer",)]
    finally:
        conn.close()
    rows[42][2] = "changed-42"
    write_csv(data, USER_COLUMNS, rows)
    third = run(cfg, [data], overrides=ov, changed_only=True)
    assert third.requests == 1 and third.counts["ok"] == 1


def _first_run_with_failures(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    faults: Faults,
    n: int,
    dup_every: int = 0,
) -> tuple[Sandbox, Path, Path, list[list[str]], dict[str, str], RunSummary]:
    """A users job with one attempt per row run once against a sandbox failing some requests:
    (sandbox, config, data, rows, overrides, summary)."""
    sb = fresh_sandbox(faults=faults)
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS, attempts=1)
    data = tmp_path / "u.csv"
    rows = users_file(data, n, dup_every=dup_every)
    ov = {"target.base_url": sb.url}
    return sb, cfg, data, rows, ov, run(cfg, [data], overrides=ov)


def test_retry_resends_only_failed_rows_by_run_id_and_by_results_file(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, cfg, _, _, ov, first = _first_run_with_failures(
        fresh_sandbox, tmp_path, monkeypatch, Faults(seed=11, http_503=0.5), 300
    )
    failed = first.counts["failed"]
    assert 0 < failed < 300 and first.exit_code == 1

    sb.set_faults(Faults())
    again = retry(cfg, first.run_id, overrides=ov)
    assert again.rows == failed and again.requests == -(-failed // 10)  # 10 a request
    assert again.counts["ok"] == failed and again.exit_code == 0
    assert len(sb.customers()) == 300

    # the same through a results file: nothing failed in `again`, so nothing to retry
    with pytest.raises(NothingToRetry, match="nothing to retry") as nothing:
        retry(cfg, again.results_path, overrides=ov)  # type: ignore[arg-type]
    assert nothing.value.exit_code == 0  # not a failure: cron must not read it as one
    runs = list_runs(cfg)
    assert [r.run_id for r in runs[:2]] == [again.run_id, first.run_id]
    assert runs[1].counts["failed"] == failed


@pytest.mark.parametrize("by", ["run_id", "results"])
def test_retry_sends_a_row_a_later_delivered_row_of_its_customer_follows_with_that_row_after(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    by: str,
) -> None:
    # 400 customers, every second one again further down with newer values; 40% 503s and
    # one attempt: some customers' first row failed while their later row got through.
    # Re-sending the failed first row alone would put the older values back on the platform;
    # leaving it out would lose a value only it holds: it goes again with the later row after.
    sb, cfg, data, rows, ov, first = _first_run_with_failures(
        fresh_sandbox, tmp_path, monkeypatch, Faults(seed=5, http_503=0.4), 400, dup_every=2
    )
    by_line = {int(r["line"]): r for r in read_results(first)}
    overridden = [
        f"{data}:{2 + i}"
        for i in range(0, 400, 2)
        if by_line[2 + i]["status"] == "failed" and by_line[402 + i // 2]["status"] == "ok"
    ]
    assert overridden and first.exit_code == 1

    sb.set_faults(Faults())
    target = first.run_id if by == "run_id" else first.results_path
    with caplog.at_level("WARNING", logger="importer"):
        again = retry(cfg, target, overrides=ov)  # type: ignore[arg-type]
    assert again.rows == first.counts["failed"] + len(overridden)
    assert again.counts["ok"] == again.rows and again.exit_code == 0
    warned = [r.getMessage() for r in caplog.records if "later delivered" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith(
        "sent again with their customer's later delivered row after them (alone they would put "
        "the older values back; left out, the values only they hold would be lost): "
        f"{len(overridden)} row(s) of {target}: {overridden[0]} "
        f"(by {data}:{402 + (int(overridden[0].rsplit(':', 1)[1]) - 2) // 2})"
    )
    last: dict[str, str] = {}
    for r in rows:
        last[r[0]] = r[2]
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert stored == last


def test_retry_of_a_run_the_ledger_does_not_hold_or_of_another_job_is_refused(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, cfg, _, _, ov, first = _first_run_with_failures(
        fresh_sandbox, tmp_path, monkeypatch, Faults(seed=11, http_503=0.5), 50
    )
    assert first.counts["failed"] > 0
    state = tmp_path / "state.db"
    # a typo in the run id (was: "nothing to retry: ... has no failed or not_sent rows", exit 1)
    with pytest.raises(LedgerError) as typo:
        retry(cfg, "20261201T020000-abcdef", overrides=ov)
    assert str(typo.value) == (
        f"run 20261201T020000-abcdef is not in the ledger {state}; "
        "`dmimport runs CONFIG` lists the job's runs"
    )
    assert typo.value.exit_code == 2
    with pytest.raises(LoadError) as missing:
        retry(cfg, "reports/x/results.csv", overrides=ov)
    assert str(missing.value) == "reports/x/results.csv: no such file or directory"
    # another job sharing the ledger (was: its rows re-read with this config and sent)
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace("name: users", "name: others"), encoding="utf-8")
    with pytest.raises(LedgerError) as wrong:
        retry(other, first.run_id, overrides=ov)
    assert str(wrong.value) == (
        f"run {first.run_id} is a run of job 'users', not of this config's job 'others': "
        "retry it with that job's config"
    )
    assert sb.stats()["requests"] == first.requests  # nothing sent by the refused retries


def test_a_second_run_of_the_same_job_is_refused_while_one_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DMART_SECRET", "x")
    cfg = make_config(tmp_path, USERS)
    data = tmp_path / "u.csv"
    users_file(data, 5)
    holder = Ledger(tmp_path / "state.db")
    with holder.lock("users"):
        with pytest.raises(LockedError, match="job 'users' is already running"):
            run(cfg, [data])
        out = dmimport("run", cfg, data, secret="x")
        assert out.returncode == 4
        assert "already running" in out.stderr
    holder.close()


def test_max_reject_rate_and_metrics_file(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS)
    data = tmp_path / "u.csv"
    rows = users_file(data, 100)
    rows[3][3] = "bad"
    write_csv(data, USER_COLUMNS, rows)
    metrics = tmp_path / "m.prom"
    ov = {"target.base_url": sb.url}
    tolerated = run(cfg, [data], overrides=ov, max_reject_rate=0.05, metrics_file=metrics)
    assert tolerated.exit_code == 0 and not tolerated.reject_rate_exceeded
    text = metrics.read_text()
    assert 'dmimport_rows{job="users",status="ok"} 99' in text
    assert 'dmimport_rows{job="users",status="rejected"} 1' in text
    assert 'dmimport_exit_code{job="users"} 0' in text
    success_line = next(x for x in text.splitlines() if x.startswith("dmimport_last_success"))

    strict = run(cfg, [data], overrides=ov, max_reject_rate=0.001, metrics_file=metrics)
    assert strict.exit_code == 1 and strict.reject_rate_exceeded
    text = metrics.read_text()
    assert 'dmimport_exit_code{job="users"} 1' in text
    assert success_line in text.splitlines()  # the last success time survives a failed run


def _kill_and_resume(
    cfg: Path, data: Path, sb: Sandbox, kills: int, seed: int, spread: int
) -> list[str]:
    """Start `dmimport run` and SIGKILL it at a random point of its send, ``kills`` times, then
    let one run finish. The point is an event, not a moment: the sandbox has answered a random
    number (1 to ``spread``) of that run's requests, however fast or slow the machine is."""
    cmd = _cli_run(cfg, data, sb)
    rng = random.Random(seed)
    outputs = []
    for _ in range(kills):
        before = sb.stats()["requests"]
        _stop_mid_way(cmd, sb, signal.SIGKILL, after=before + rng.randint(1, spread))
    final = dmimport(*cmd, secret=sb.secret)
    outputs.append(final.stdout)
    assert final.returncode == 0, final.stderr
    return outputs


def test_sigkill_at_random_points_then_resume_loses_nothing_and_duplicates_nothing(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    import json

    sb = fresh_sandbox(process=True, faults=Faults(latency_ms="1-4"))
    cfg = make_config(tmp_path, USERS, concurrency=16)
    data = tmp_path / "u.csv"
    rows = users_file(data, 10_000, dup_every=50)  # 10,000 customers + 200 later updates
    out = _kill_and_resume(cfg, data, sb, kills=3, seed=1, spread=250)  # of ~1,000 requests
    summary = json.loads(out[-1])
    assert summary["resumed_from"] is not None
    assert summary["requests"] < len(rows)  # the killed runs' outcomes were not sent again
    assert summary["counts"]["ok"] + summary["counts"]["skipped"] == len(rows)

    expected: dict[str, dict[str, object]] = {}
    for phone, email, name, age in rows:  # file order: the last row of a customer wins
        expected[phone] = {"phone": phone, "email": email, "username": name, "age": int(age)}
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert stored == expected

    runs = list_runs(cfg)
    assert [r.status for r in runs[:4]] == ["done", "killed", "killed", "killed"]


def test_sigkill_during_an_event_import_stores_each_event_exactly_once(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox(process=True, faults=Faults(latency_ms="1-4"))
    cfg = make_config(tmp_path, EVENTS)
    data = tmp_path / "e.csv"
    orders = [[f"0151{i % 3000:07d}", f"O{i:08d}", "2026-11-28 23:59:59"] for i in range(10_000)]
    write_csv(data, ["phone", "order_id", "created"], orders)
    _kill_and_resume(cfg, data, sb, kills=3, seed=2, spread=250)  # of 1,000 requests
    ids = [e["event_id"] for e in sb.events()]
    assert len(ids) == len(set(ids)) == 10_000
    assert set(ids) == {f"O{i:08d}" for i in range(10_000)}


def test_changed_only_runs_killed_at_random_points_send_only_the_changed_rows(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Last night delivered everything. Tonight 10% changed; the changed-only job is killed
    # twice while sending, then completes. Only changed rows may go out, each at most once per
    # attempt, and the next night sends nothing.
    last_night = fresh_sandbox(process=True)
    tonight = fresh_sandbox(process=True, faults=Faults(latency_ms="1-4"))
    monkeypatch.setenv("DMART_SECRET", last_night.secret)
    cfg = make_config(tmp_path, USERS, concurrency=16)
    data = tmp_path / "u.csv"
    rows = users_file(data, 10_000)
    first = run(cfg, [data], overrides={"target.base_url": last_night.url})
    assert first.counts["ok"] == 10_000
    changed = set(random.Random(5).sample(range(10_000), 1_000))
    for i in changed:
        rows[i][2] = f"tonight-{i}"
    write_csv(data, USER_COLUMNS, rows)
    nightly = cfg.with_name("nightly.yaml")  # the same job, in changed-only mode
    text = cfg.read_text(encoding="utf-8")
    nightly.write_text(text.replace("state: {path:", "state: {mode: incremental, path:"))

    _kill_and_resume(nightly, data, tonight, kills=2, seed=3, spread=40)  # of 100 requests
    assert [r.status for r in list_runs(nightly)[:3]] == ["done", "killed", "killed"]
    sent = int(tonight.stats()["requests"])
    # 10 rows a request: the changed rows fill requests although 9 rows in 10 are unchanged
    assert len(changed) // 10 <= sent <= 3 * len(changed) // 10
    assert len(changed) <= tonight.stats()["items"]["received"] <= 3 * len(changed)
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in tonight.customers()}
    assert stored == {rows[i][0]: f"tonight-{i}" for i in changed}

    again = run(nightly, [data], overrides={"target.base_url": tonight.url})
    assert again.requests == 0 and again.counts["unchanged"] == 10_000


def test_a_kill_while_summary_json_is_written_leaves_the_previous_file_whole(
    tmp_path: Path,
) -> None:
    # A process rewriting summary.json (1 MB each time) is SIGKILLed at random points: the
    # file is always one complete version, never a torn mix, and never missing. A point is an
    # event seen in the folder: the process has replaced the file a random number of times,
    # and then (mostly) the next version's temporary file (any other file in the folder)
    # holds a random number of bytes.
    target = tmp_path / "summary.json"
    code = (
        "import sys; from pathlib import Path; from importer.report import write_json_atomic\n"
        "p = Path(sys.argv[1]); n = 0\n"
        "while True:\n"
        "    n += 1; write_json_atomic(p, {'version': n, 'rows': ['x' * 100] * 10000})\n"
    )

    def version_on_disk() -> tuple[int, int] | None:
        with contextlib.suppress(FileNotFoundError):
            st = target.stat()
            return st.st_ino, st.st_mtime_ns
        return None

    def being_written() -> int:
        """The size of the version being written (0: none is)."""
        for p in tmp_path.iterdir():
            if p != target:
                with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                    return p.stat().st_size
        return 0

    rng = random.Random(7)
    seen = set()
    kills = 0
    while kills < 5 or (len(seen) < 2 and kills < 30):  # until the writer got on between kills
        kills += 1
        replaced = rng.randint(1, 4)  # at least one: the first kill needs a file to keep
        mid_write = rng.random() < 0.7
        at = rng.randint(1, 1_000_000)  # of about 1.07 MB
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=tmp_path)
        deadline = time.monotonic() + 60
        last = version_on_disk()
        while replaced or (mid_write and being_written() < at):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer stopped"
            now = version_on_disk()
            if now != last:
                replaced, last = max(0, replaced - 1), now
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = json.loads(target.read_text(encoding="utf-8"))
        assert data["rows"] == ["x" * 100] * 10000
        seen.add(data["version"])
    assert len(seen) >= 2  # the writer got on between kills


def _cli_run(cfg: Path, data: Path, sb: Sandbox) -> list[str | Path]:
    """The arguments of ``dmimport run`` of this job against ``sb``, the summary on stdout."""
    return ["run", cfg, data, "--base-url", sb.url, "--quiet", "--json"]


def _stop_mid_way(cmd: list[str | Path], sb: Sandbox, sig: int, after: int) -> None:
    """Start ``dmimport CMD`` and send it ``sig`` once the sandbox has answered ``after``
    requests (its counter, which counts every run's requests)."""
    proc = start_dmimport(*cmd, secret=sb.secret, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while sb.stats()["requests"] < after and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _recorded_ok(state: Path, run_id: str) -> int:
    """How many rows the ledger has as delivered by ``run_id`` (journal or folded)."""
    import sqlite3

    conn = sqlite3.connect(state)
    try:
        journal = "SELECT count(*) FROM run_rows WHERE run_id = ? AND status = 'ok'"
        folded = "SELECT count(*) FROM rows WHERE last_run_id = ? AND last_status = 'ok'"
        return sum(conn.execute(q, (run_id,)).fetchone()[0] for q in (journal, folded))
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_a_resumed_run_sends_and_reports_what_the_run_it_resumes_did_not_deliver(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sig: int,
) -> None:
    # issue 11 #2: 30% 503s and a single attempt; the run is stopped mid-way; the platform
    # recovers (SIGKILL) or not yet (SIGINT); the same command again must send the rows the
    # stopped run left failed or not_sent, count them, and leave none out of every report.
    sb = fresh_sandbox(process=True, faults=Faults(seed=3, http_503=0.3, latency_ms="1-3"))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS, concurrency=4, attempts=1)
    data = tmp_path / "u.csv"
    rows = users_file(data, 3000)
    cmd = _cli_run(cfg, data, sb)
    _stop_mid_way(cmd, sb, sig, after=100)  # of 300 requests
    stopped = list_runs(cfg)[0]
    assert stopped.status == ("killed" if sig == signal.SIGKILL else "interrupted") or (
        sig == signal.SIGKILL and stopped.status == "running"
    )
    delivered_before = _recorded_ok(tmp_path / "state.db", stopped.run_id)
    recovered = sig == signal.SIGKILL
    if recovered:
        sb.set_faults(Faults())
    resumed = dmimport(*cmd, secret=sb.secret, timeout=300)
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from"] == stopped.run_id
    counts = summary["counts"]
    assert counts["skipped"] == delivered_before < 3000
    assert counts["ok"] + counts["failed"] == 3000 - delivered_before
    assert summary["requests"] == -(-(3000 - delivered_before) // 10)  # one attempt, 10 a request
    lines = read_results(summary)
    assert sorted(int(r["line"]) for r in lines) == list(range(2, 3002))  # every row, once
    failed = {int(r["line"]) for r in lines if r["status"] == "failed"}
    assert len(failed) == counts["failed"]
    if recovered:
        assert counts["failed"] == 0 and resumed.returncode == 0, resumed.stderr
    else:
        assert counts["failed"] > 0 and resumed.returncode == 1, resumed.stderr
        # what failed is in the resumed run's retry list, and only that
        sb.set_faults(Faults())
        again = retry(cfg, summary["run_id"], overrides={"target.base_url": sb.url})
        assert (again.rows, again.counts["ok"], again.exit_code) == (len(failed), len(failed), 0)
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert stored == {
        phone: {"phone": phone, "email": email, "username": name, "age": int(age)}
        for phone, email, name, age in rows
    }


def test_a_kill_in_the_end_of_run_fold_leaves_a_run_the_next_one_resumes(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 11 #15: SIGKILL the moment the end-of-run fold begins (the job's fold count moves,
    # or the run stops being `running`): the ledger must not say `done` without summary.json,
    # and the same command again resumes the killed run, sending nothing it delivered.
    import sqlite3

    sb = fresh_sandbox(process=True)
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS, concurrency=16)
    data = tmp_path / "u.csv"
    rows = users_file(data, 20_000)
    cmd = _cli_run(cfg, data, sb)
    state = tmp_path / "state.db"
    proc = start_dmimport(*cmd, secret=sb.secret, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not state.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        try:
            # (on a starved machine the run may get to its end between two looks: then the
            # checks below still hold, on a run that was not killed)
            while proc.poll() is None:
                assert time.monotonic() < deadline, "never reached the fold"
                with contextlib.suppress(sqlite3.OperationalError):  # tables not made yet
                    status = conn.execute("SELECT status FROM runs").fetchone()
                    folds = conn.execute("SELECT count(*) FROM job_folds").fetchone()[0]
                    if folds or (status and status[0] != "running"):
                        break
                time.sleep(0.001)
            proc.kill()
        finally:
            conn.close()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (killed,) = list_runs(cfg)
    report = tmp_path / "reports" / f"users-{killed.run_id}"
    assert killed.status != "done" or (report / "summary.json").exists()

    again = dmimport(*cmd, secret=sb.secret, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    runs = list_runs(cfg)
    if killed.status == "done":  # killed after the very end: nothing to resume
        assert runs[1].status == "done" and summary["resumed_from"] is None
    else:
        assert [r.status for r in runs] == ["done", "killed"]
        assert summary["resumed_from"] == killed.run_id
        assert (summary["counts"]["skipped"], summary["requests"]) == (len(rows), 0)
    assert len(sb.customers()) == len(rows)


def test_rows_edited_mid_file_with_the_mtime_put_back_are_not_skipped_on_resume(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 11 #16: the run is killed after it delivered the middle of a 3 MB file; rows
    # there are edited in place (same size) and the mtime is put back. The next run must not
    # take it for the same file: it starts afresh and the platform ends with the new values.
    sb = fresh_sandbox(process=True, faults=Faults(latency_ms="1-3"))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS, concurrency=4)
    data = tmp_path / "u.csv"
    pad = "x" * 1000  # ~1 KB rows: the middle third is beyond the first and last MiB
    rows = [[f"0150{i:07d}", f"u{i}@x.cn", f"v1-{i:04d}-{pad}", str(i % 90)] for i in range(3000)]
    write_csv(data, USER_COLUMNS, rows)
    cmd = _cli_run(cfg, data, sb)
    _stop_mid_way(cmd, sb, signal.SIGKILL, after=250)  # of 300 requests
    before = data.stat()
    edited = range(1200, 1800)
    for i in edited:
        rows[i][2] = f"v2-{i:04d}-{pad}"
    write_csv(data, USER_COLUMNS, rows)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    again = dmimport(*cmd, secret=sb.secret, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] is None  # another file: nothing of the killed run is trusted
    assert (summary["counts"]["ok"], summary["counts"]["skipped"]) == (3000, 0)
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert stored == {r[0]: r[2] for r in rows}
    assert [r.status for r in list_runs(cfg)] == ["done", "killed"]


def test_changed_only_judges_a_repeated_customer_by_its_last_row(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 11 #5: 1,000 customers, 500 of them again later in the file with newer values,
    # in batches of 128 rows (so a customer's rows are in different batches). Night 1 sends
    # 1,500 rows; an unchanged file then sends nothing, night after night; a real change
    # sends exactly the changed customers' rows.
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS)
    cfg.write_text(cfg.read_text() + "input: {batch_rows: 128}\n")
    data = tmp_path / "u.csv"
    rows = users_file(data, 1000, dup_every=2)  # line 2 + i; customer 2j again on line 1002 + j
    ov = {"target.base_url": sb.url}

    def night() -> tuple[RunSummary, int]:
        before = sb.stats()["requests"]
        summary = run(cfg, [data], overrides=ov, changed_only=True)
        return summary, sb.stats()["requests"] - before

    first, sent = night()
    assert (first.counts["ok"], sent, first.exit_code) == (1500, 150, 0)  # 10 rows a request
    for _ in range(2):
        again, sent = night()
        assert sent == again.requests == 0
        assert (again.counts["unchanged"], again.counts["skipped"], again.exit_code) == (
            1000,
            500,
            0,
        )
        lines = {int(r["line"]): r for r in read_results(again)}
        assert sorted(lines) == list(range(2, 1502))
        assert lines[2]["status"] == "skipped"  # customer 0, again on line 1002
        assert lines[2]["errmsg"] == "superseded by line 1002, this customer's last row, unchanged"
        assert lines[1002]["status"] == "unchanged" and lines[3]["status"] == "unchanged"

    rows[1][2] = "changed-1"  # a customer with one row
    rows[1000 + 2][2] = "changed-4-last"  # customer 4's last row (its first is line 6)
    rows[8][2] = "changed-8-first"  # customer 8's first row only: its last row decides
    write_csv(data, USER_COLUMNS, rows)
    changed, sent = night()
    # customer 1's row with customer 4's first row; its last row in a request of its own,
    # after that one (a request never carries two rows of one customer)
    assert sent == changed.requests == 2
    lines = {int(r["line"]): r for r in read_results(changed)}
    assert [ln for ln, r in sorted(lines.items()) if r["status"] == "ok"] == [3, 6, 1004]
    assert lines[10]["status"] == "skipped" and lines[1006]["status"] == "unchanged"
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert (stored[rows[1][0]], stored[rows[4][0]]) == ("changed-1", "changed-4-last")
    assert stored[rows[8][0]] == "v1-again-4"
    last, sent = night()
    assert sent == 0 and last.counts["unchanged"] == 1000

    # customer 10's later row (line 1007) is gone: its first row, held for it, is its last now
    assert rows.pop(1000 + 5)[2] == "v1-again-5"
    write_csv(data, USER_COLUMNS, rows)
    gone, sent = night()
    assert sent == gone.requests == 1
    lines = {int(r["line"]): r for r in read_results(gone)}
    assert sorted(lines) == list(range(2, 1501)) and lines[12]["status"] == "ok"
    assert {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}[
        rows[10][0]
    ] == "v1-10"


def test_retry_of_a_parquet_file_keeps_the_columns_the_job_does_not_read_in_its_rejects(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(seed=5, http_503=0.5))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS, attempts=1)
    n = 200
    blobs = [bytes([i % 256, 0, 255 - i % 256]) * (1 + i % 5) for i in range(n)]
    table = pa.table({
        "phone": [f"138{i:08d}" for i in range(n)],
        "email": [f"u{i}@b.cn" for i in range(n)],
        "name": [f"n{i}" for i in range(n)],
        "age": [str(20 + i % 50) if i != 3 else "old" for i in range(n)],
        "blob": pa.array(blobs, pa.binary()),  # not read by the job, not UTF-8
    })  # fmt: skip
    data = tmp_path / "u.parquet"
    pq.write_table(table, data, row_group_size=64)
    ov = {"target.base_url": sb.url, "input.batch_rows": 50}
    first = run(cfg, [data], overrides=ov)
    assert first.counts["rejected"] == 1 and 0 < first.counts["failed"] < n
    again = retry(cfg, first.run_id, overrides=ov)  # the platform still fails about half
    assert 0 < again.counts["failed"] < first.counts["failed"]
    (rejects,) = again.rejects_paths
    back = pq.read_table(rejects)
    assert back.column_names == table.column_names
    results = read_results(again)
    failed = sorted(int(r["line"]) for r in results if r["status"] == "failed")
    # requests complete out of order, and the rejects file holds rows in that order
    by_phone = sorted(back.to_pylist(), key=lambda r: r["phone"])
    assert by_phone == table.take([line - 1 for line in failed]).to_pylist()


def test_a_run_stopped_from_the_cli_resumes_from_python_with_its_ledger_named(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the API's ``ledger=`` names the place the CLI's run used by default (report.dir): where
    # the ledger is does not decide the bodies, so the run resumes (it did not, as a changed
    # config, when ``ledger=`` counted in the config's hash)
    sb = fresh_sandbox(process=True, faults=Faults(seed=5, latency_ms="1-3"))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = make_config(tmp_path, USERS, concurrency=4)
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace(f"state: {{path: {tmp_path / 'state.db'}}}\n", ""), "utf-8")
    assert "state:" not in cfg.read_text(encoding="utf-8")
    data = tmp_path / "u.csv"
    users_file(data, 3000)
    _stop_mid_way(_cli_run(cfg, data, sb), sb, signal.SIGINT, after=100)  # of 300 requests
    ledger = tmp_path / "state" / "state.db"
    stopped = list_runs(cfg, ledger=ledger)[0]
    assert stopped.status == "interrupted"
    summary = run(cfg, [data], ledger=ledger, overrides={"target.base_url": sb.url})
    assert summary.resumed_from == stopped.run_id
    assert summary.counts["skipped"] + summary.counts["ok"] == 3000
