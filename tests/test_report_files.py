"""Where a run's files go, and what happens when they cannot be written: one rejects file per
input whatever the inputs are called (issue 11 #4)."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import remount
from helpers import dmimport, start_dmimport, write_csv

from importer.api import list_runs, load_config, run, validate
from importer.ledger import Ledger, adopt_old_ledger, ledger_path
from importer.report import RunSummary
from importer.sandbox import Faults, Sandbox

pytestmark = pytest.mark.slow  # full disks, subprocesses

COLUMNS = ["phone", "email", "name", "age"]

CONFIG = """
job: {{name: customers, kind: user, primary_keys: [phone, email]}}
columns:
  phone: phone
  email: email
  username: name
  age: {{from: age, type: integer}}
send: {{concurrency: 4, retry: {{max_attempts: 2, initial_backoff_s: 0.01, max_backoff_s: 0.02}}}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        CONFIG.format(reports=tmp_path / "reports", state=tmp_path / "state.db"), encoding="utf-8"
    )
    return path


def _inputs(tmp_path: Path) -> dict[Path, set[str]]:
    """Inputs whose names meet in every way a rejects name could: the same stem, the same
    name in two folders, names differing only in case, odd characters. Each has rows that are
    rejected (age not a number); the value -> the ages of those rows, all distinct."""
    names = [
        "in/customers.2024-12-01.csv",
        "in/customers.2024-12-02.csv",
        "other/customers.2024-12-01.csv",
        "in/Customers.csv",
        "in/CUSTOMERS.csv",
        "in/cust omers:新*?.csv",
        "in/cust_omers_新__.csv",
    ]
    made: dict[Path, set[str]] = {}
    for f, name in enumerate(names):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[f"0188{f:02d}{i:05d}", f"f{f}u{i}@x.cn", f"n{i}", str(i)] for i in range(6)]
        bad = {f"bad-{f}-{i}" for i in (1, 4)}
        for i in (1, 4):
            rows[i][3] = f"bad-{f}-{i}"
        write_csv(path, COLUMNS, rows)
        made[path] = bad
    return made


def _check_rejects(summary: RunSummary, inputs: dict[Path, set[str]]) -> None:
    assert summary.report_dir is not None
    data = json.loads((summary.report_dir / "summary.json").read_text(encoding="utf-8"))
    assert data["counts"]["rejected"] == 2 * len(inputs)
    assert len(summary.rejects_paths) == len(inputs)
    assert len({p.name.casefold() for p in summary.rejects_paths}) == len(inputs)
    assert sorted(data["rejects"]) == sorted(str(p) for p in summary.rejects_paths)
    found: list[str] = []
    for path in summary.rejects_paths:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == COLUMNS
        found.extend(r[3] for r in rows[1:])
    assert sorted(found) == sorted(v for bad in inputs.values() for v in bad)
    names = sorted(p.name for p in summary.rejects_paths)
    assert names == sorted(
        [
            "rejects-customers.2024-12-01.csv",
            "rejects-customers.2024-12-01-2.csv",
            "rejects-customers.2024-12-02.csv",
            "rejects-CUSTOMERS.csv",
            "rejects-Customers-2.csv",
            "rejects-cust_omers_新__.csv",
            "rejects-cust_omers_新__-2.csv",
        ]
    )


def test_inputs_with_meeting_names_get_one_rejects_file_each_in_validate(
    tmp_path: Path,
) -> None:
    inputs = _inputs(tmp_path)
    summary = validate(_config(tmp_path), sorted(inputs))
    assert summary.exit_code == 1
    _check_rejects(summary, inputs)


def test_inputs_with_meeting_names_get_one_rejects_file_each_in_run(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    inputs = _inputs(tmp_path)
    summary = run(_config(tmp_path), sorted(inputs), overrides={"target.base_url": sb.url})
    assert summary.exit_code == 1
    assert summary.counts["ok"] == 4 * len(inputs)
    _check_rejects(summary, inputs)


# -- issue 11 #14: the ledger and the lock belong to the job, not to --report-dir ------------

JOB = """
job: {{name: nightly, kind: user, primary_keys: [phone]}}
columns:
  phone: phone
  username: name
send: {{concurrency: {concurrency}, batch_rows: {batch_rows}}}
report: {{dir: {reports}}}
"""


def _job(tmp_path: Path, concurrency: int = 4, batch_rows: int = 500) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        JOB.format(reports=tmp_path / "reports", concurrency=concurrency, batch_rows=batch_rows),
        encoding="utf-8",
    )
    return path


def _people(path: Path, n: int, version: str = "v1") -> Path:
    return write_csv(
        path, ["phone", "name"], [[f"0177{i:07d}", f"{version}-{i}"] for i in range(n)]
    )


def _cli(*args: str | Path, secret: str) -> subprocess.Popen[str]:
    return start_dmimport(*args, secret=secret)


def test_two_runs_of_a_job_with_different_report_dirs_share_one_lock(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(latency_ms=100))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = _job(tmp_path, concurrency=1, batch_rows=5)  # 80 requests of 100 ms: about 8 s
    data = _people(tmp_path / "people.csv", 400)
    lock = tmp_path / "state" / "state.db.nightly.lock"
    first = _cli("run", cfg, data, "--base-url", sb.url, "--report-dir", tmp_path / "r1", "-q",
                 secret=sb.secret)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # the first run holds the job's lock once it wrote its name into the lock file
        while not (lock.exists() and lock.read_text()) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert first.poll() is None
        holder = json.loads(lock.read_text())["pid"]
        second = _cli("run", cfg, data, "--base-url", sb.url, "--report-dir", tmp_path / "r2",
                      "-q", secret=sb.secret)  # fmt: skip
        _out, err = second.communicate(timeout=120)
        assert second.returncode == 4, err
        assert err == (
            f"error: job 'nightly' is already running (pid {holder}, started "
            f"{json.loads(lock.read_text())['started']}); wait for it to finish, or stop that "
            f"process, then run again (lock file {lock})\n"
        )
        assert not (tmp_path / "r2" / "state.db").exists()
        assert not (tmp_path / "r1" / "state.db").exists()
    finally:
        first.kill()
        first.communicate()
    # the next night's run, with a new dated report dir, resumes the killed one
    killed = list_runs(cfg)[0]
    assert killed.status == "running"
    night2 = run(
        cfg, [data], overrides={"target.base_url": sb.url, "send.concurrency": 16},
        report_dir=tmp_path / "r3",
    )  # fmt: skip
    assert night2.resumed_from == killed.run_id
    assert night2.counts["skipped"] > 0 and night2.exit_code == 0
    assert len(sb.customers()) == 400


def test_a_new_dated_report_dir_each_night_keeps_the_jobs_memory(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = _job(tmp_path)
    data = _people(tmp_path / "people.csv", 50)
    ov = {"target.base_url": sb.url}
    night1 = run(cfg, [data], overrides=ov, report_dir=tmp_path / "2024-12-01", changed_only=True)
    assert (night1.exit_code, night1.counts["ok"], night1.requests) == (0, 50, 1)  # one batch
    night2 = run(cfg, [data], overrides=ov, report_dir=tmp_path / "2024-12-02", changed_only=True)
    assert (night2.exit_code, night2.counts["unchanged"], night2.requests) == (0, 50, 0)
    assert (tmp_path / "state" / "state.db").is_file()
    assert not list(tmp_path.glob("2024-12-0*/state.db*"))


def test_a_ledger_left_in_report_dir_by_dmimport_0_1_moves_to_the_job(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = _job(tmp_path)
    data = _people(tmp_path / "people.csv", 30)
    old = tmp_path / "fixed-reports" / "state.db"
    # where dmimport 0.1 put the ledger of `run --report-dir fixed-reports`
    ov: dict[str, object] = {"target.base_url": sb.url, "state.path": str(old)}
    first = run(cfg, [data], overrides=ov, report_dir=old.parent, changed_only=True)
    assert (first.counts["ok"], first.requests) == (30, 1)  # one batch

    ov = {"target.base_url": sb.url}
    second = run(cfg, [data], overrides=ov, report_dir=old.parent, changed_only=True)
    new = tmp_path / "state" / "state.db"
    assert (second.counts["unchanged"], second.requests) == (30, 0)
    assert new.is_file() and not old.exists()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"moved the ledger from {old} to {new}"
    ]
    assert oct(new.stat().st_mode & 0o777) == "0o600"


def test_the_ledger_moves_once_from_report_dir_to_state_next_to_it(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg = _job(tmp_path)
    data = _people(tmp_path / "people.csv", 30)
    old = tmp_path / "reports" / "state.db"  # the default of earlier versions
    ov: dict[str, object] = {"target.base_url": sb.url, "state.path": str(old)}
    first = run(cfg, [data], overrides=ov, changed_only=True)
    assert (first.counts["ok"], first.requests) == (30, 1)
    assert (tmp_path / "reports" / "state.db.nightly.lock").is_file()

    caplog.clear()
    ov = {"target.base_url": sb.url}
    second = run(cfg, [data], overrides=ov, changed_only=True)
    new = tmp_path / "state" / "state.db"
    assert (second.counts["unchanged"], second.requests) == (30, 0)  # the job kept its memory
    assert new.is_file() and not old.exists()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir() if not p.is_dir()) == []
    assert (tmp_path / "state" / "state.db.nightly.lock").is_file()  # the lock moved along
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"moved the ledger from {old} to {new}"]

    caplog.clear()  # once: the next run finds it in place and says nothing
    third = run(cfg, [data], overrides=ov, changed_only=True)
    assert third.counts["unchanged"] == 30
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


def test_a_ledger_in_use_by_another_job_is_not_moved_under_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _job(tmp_path)
    old = tmp_path / "reports" / "state.db"
    with Ledger(old) as other, other.lock("other-job"):
        # another job's run holds its lock on the old file: this job keeps using it there
        assert adopt_old_ledger(load_config(cfg), None) is None
        assert ledger_path(load_config(cfg)) == old
    assert old.is_file() and not (tmp_path / "state" / "state.db").exists()
    moved = adopt_old_ledger(load_config(cfg), None)  # the other run is over: now it moves
    assert moved == old and ledger_path(load_config(cfg)) == tmp_path / "state" / "state.db"
    assert (tmp_path / "state" / "state.db.other-job.lock").is_file()


def test_when_both_ledgers_exist_the_new_place_wins_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(_job(tmp_path))
    old, new = tmp_path / "reports" / "state.db", tmp_path / "state" / "state.db"
    for path in (old, new):
        Ledger(path).close()
    assert adopt_old_ledger(cfg, None) is None
    assert ledger_path(cfg) == new and old.is_file()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"both {old} and {new} exist: using {new} (the job's ledger); {old} is no longer read: "
        "move it aside (with its -wal and -shm files) once you no longer need it"
    ]


# -- issue 11 #12: a full disk stops the run with exit 6, one line, and it resumes -----------

FULL = """
job: {{name: full, kind: user, primary_keys: [phone]}}
input: {{batch_rows: 200}}
columns:
  phone: phone
  username: name
send: {{concurrency: 8}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""


def _full_job(tmp_path: Path, reports: Path, state: Path) -> Path:
    path = tmp_path / "full.yaml"
    path.write_text(FULL.format(reports=reports, state=state), encoding="utf-8")
    return path


def _stored(sb: Sandbox) -> dict[str, str]:
    return {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}


def test_a_full_ledger_disk_stops_the_run_with_exit_6_and_it_resumes(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    sb = fresh_sandbox()
    disk = tmpfs("state", "256k")
    state = disk / "state.db"
    cfg = _full_job(tmp_path, tmp_path / "reports", state)
    n = 6000
    data = _people(tmp_path / "people.csv", n)
    out = dmimport("run", cfg, data, "--base-url", sb.url, "-q", "--json", secret=sb.secret)
    assert out.returncode == 6, out.stderr
    assert "Traceback" not in out.stderr
    summary = json.loads(out.stdout)
    assert summary["exit_code"] == 6
    assert summary["aborted"] == (
        f"no space left on device writing the ledger {state}: the run stopped; free space, "
        "then run the same command again (it resumes; rows whose outcome the ledger could not "
        "record are sent again)"
    )
    # what was sent is known: the report is whole, and says exactly what the platform holds
    with open(summary["results"], newline="", encoding="utf-8-sig") as fh:
        results = list(csv.DictReader(fh))
    assert len(results) == n
    ok = {r["identity"].removeprefix("phone=") for r in results if r["status"] == "ok"}
    assert 0 < len(ok) < n
    assert {r["status"] for r in results} == {"ok", "not_sent"}
    assert set(_stored(sb)) == ok

    remount(disk, "size=64m")  # room again
    again = dmimport("run", cfg, data, "--base-url", sb.url, "-q", "--json", secret=sb.secret)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["resumed_from"] == summary["run_id"]
    assert resumed["counts"]["ok"] + resumed["counts"]["skipped"] == n
    assert _stored(sb) == {f"0177{i:07d}": f"v1-{i}" for i in range(n)}


def test_a_full_report_disk_stops_the_run_with_exit_6_and_it_resumes(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    sb = fresh_sandbox()
    disk = tmpfs("reports", "96k")
    state = tmp_path / "state.db"
    cfg = _full_job(tmp_path, disk, state)
    n = 6000
    data = _people(tmp_path / "people.csv", n)
    out = dmimport("run", cfg, data, "--base-url", sb.url, "-q", secret=sb.secret)
    assert out.returncode == 6, out.stderr
    run_dir = next(disk.iterdir())
    sent = len(_stored(sb))
    assert 0 < sent < n
    assert out.stderr == (
        f"error: no space left on device writing {run_dir / 'results.csv'}: the run stopped "
        f"after the platform answered {sent} rows ({sent} ok, 0 failed), and its report is "
        f"incomplete. The ledger {state} has their outcomes: free space, then run the same "
        "command again (it resumes)\n"
    )
    assert list(run_dir.iterdir()) == []  # no half report, and its room is free again
    [record] = list_runs(cfg)
    assert (record.status, record.exit_code) == ("interrupted", 6)

    remount(disk, "size=64m")
    again = dmimport("run", cfg, data, "--base-url", sb.url, "-q", "--json", secret=sb.secret)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["resumed_from"] == record.run_id
    assert (resumed["counts"]["skipped"], resumed["counts"]["ok"]) == (sent, n - sent)
    assert _stored(sb) == {f"0177{i:07d}": f"v1-{i}" for i in range(n)}


def test_no_room_for_a_new_ledger_exits_6_saying_nothing_was_sent(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    sb = fresh_sandbox()
    disk = tmpfs("state", "64k")
    with open(disk / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:  # the disk fills up, the ledger's file can still be created (empty)
            fh.write(b"\0" * 4096)
    state = disk / "state.db"
    reports = tmp_path / "reports"
    cfg = _full_job(tmp_path, reports, state)
    data = _people(tmp_path / "people.csv", 10)
    out = dmimport("run", cfg, data, "--base-url", sb.url, "-q", secret=sb.secret)
    assert out.returncode == 6
    assert out.stderr == (
        f"error: no space left on device writing the ledger {state}: nothing was sent; "
        "free space, then run the same command again\n"
    )
    assert sb.customers() == [] and list(reports.iterdir()) == []  # no empty run folder


def test_validate_on_a_full_report_disk_exits_6_in_one_line(
    tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    disk = tmpfs("reports", "64k")
    cfg = _full_job(tmp_path, disk, tmp_path / "state.db")
    data = _people(tmp_path / "people.csv", 6000)
    out = dmimport("validate", cfg, data, "-q", secret="")
    run_dir = next(disk.iterdir())
    assert out.returncode == 6
    assert out.stderr == (
        f"error: no space left on device writing {run_dir / 'results.csv'}: validate stopped; "
        "free space, then run it again\n"
    )


def test_no_room_for_the_report_folder_exits_6_before_anything_is_sent(
    tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    disk = tmpfs("reports", "1m", "nr_inodes=1")  # no inode left: mkdir finds no space
    cfg = _full_job(tmp_path, disk, tmp_path / "state.db")
    data = _people(tmp_path / "people.csv", 10)
    out = dmimport("run", cfg, data, "--base-url", "http://127.0.0.1:9", "-q", secret="x")
    assert out.returncode == 6
    assert out.stderr.startswith(f"error: no space left on device writing {disk}/full-")
    assert out.stderr.endswith(": nothing was sent; free space, then run the same command again\n")
    assert out.stderr.count("\n") == 1


# -- issue 13: the reasons a summary counts, as the import API words them ---------------------


def test_a_platform_reason_with_an_apostrophe_is_counted_as_written(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the import API refuses an undeclared property with "... is not defined in the account's
    # metadata": the apostrophe of "account's" is not a quoted value to take out
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    data = write_csv(tmp_path / "c.csv", ["phone", "tier"], [["13800138000", "gold"]])
    config = tmp_path / "job.yaml"
    config.write_text(
        "job: {name: tiers, kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, tier: tier}\n"
        f"report: {{dir: {tmp_path / 'reports'}}}\n",
        encoding="utf-8",
    )
    summary = run(config, [data], overrides={"target.base_url": sb.url})
    assert summary.counts["failed"] == 1
    assert summary.top_reasons == [
        {
            "reason": "Data checking failed: property '…' is not defined in the account's metadata",
            "rows": 1,
            "example": "c.csv:2",
        }
    ]


def test_the_printed_requests_lines_add_up_to_the_requests(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # every row refused (an undeclared property), and one customer twice: a batch of three
    # customers bisected, the customer's second row in a request of its own. The lines under
    # `requests` add up to it (bisection's halves are not counted as batches too).
    sb = fresh_sandbox()
    rows = [["13800138000", "a"], ["13900139000", "b"], ["13700137000", "c"]]
    data = write_csv(tmp_path / "c.csv", ["phone", "tier"], [*rows, ["13800138000", "d"]])
    config = tmp_path / "job.yaml"
    config.write_text(
        # keep_all: the customer's second row is sent too (not only its last)
        "job: {name: tiers, kind: user, primary_keys: [phone], duplicates: keep_all}\n"
        "columns: {phone: phone, tier: tier}\n"
        f"report: {{dir: {tmp_path / 'reports'}}}\n",
        encoding="utf-8",
    )
    out = dmimport("run", config, data, "--base-url", sb.url, secret=sb.secret)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index(next(ln for ln in lines if ln.startswith("  requests ")))
    assert [ln.strip() for ln in lines[at : at + 4]] == [
        "requests             6",
        "1 batch of up to 500 rows",
        "1 with a single row",
        "4 to find bad rows in batches",
    ]
    summary = json.loads(next((tmp_path / "reports").glob("tiers-*/summary.json")).read_text())
    assert summary["sending"]["batch_requests"] == 1
    assert summary["sending"]["bisect_requests"] == 4
    assert sb.stats()["requests"] == 6
