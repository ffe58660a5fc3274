"""The ledger on real SQLite files: validation, resume, changed-only, locks, durability."""

from __future__ import annotations

import hashlib
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from oldledger import SCHEMA_2, hex16

from importer.errors import LedgerError, LockedError
from importer.ledger import (
    DONE,
    HELD,
    SCHEMA_VERSION,
    SEND,
    SUPERSEDED,
    UNCHANGED,
    Ledger,
    RunInfo,
    keys64,
)
from importer.ledger.index import Snapshot, search
from importer.ledger.schema import transaction

JOB = "customers"
FILES = [{"path": "/data/customers.csv", "size": 120, "mtime": 1.5, "sha256": "ab"}]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "reports" / "state.db"


@pytest.fixture
def ledger(path: Path, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """The ledger at ``path``; in a test that also takes ``lookup_mode``, in that mode."""
    options = {}
    if "lookup_mode" in request.fixturenames:
        mode = request.getfixturevalue("lookup_mode")
        options["snapshot_after"] = math.inf if mode == "lookups" else 0.0
    with Ledger(path, **options) as led:
        yield led


@pytest.fixture(params=["lookups", "snapshot"])
def lookup_mode(request: pytest.FixtureRequest) -> str:
    """classify has two ways to read the ledger; both must give the same verdicts."""
    return str(request.param)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def h(text: str) -> int:
    """A properties hash as the ledger takes them: a 64-bit hash's int64 key."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest()) - (1 << 63)


def die(path: Path, run_id: str, pid: int) -> None:
    """What a SIGKILL leaves behind: the run still 'running', its pid gone."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (pid, run_id))
    conn.close()


def db(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def verdicts(
    led: Ledger, run: RunInfo, rows: list[tuple[str, int, int]], *, changed_only: bool
) -> list[int]:
    """classify's verdicts for (identity, pos, hash) rows, as a list."""
    ids, pos, hashes = zip(*rows, strict=True)
    result = led.classify(JOB, run, list(ids), list(pos), list(hashes), changed_only=changed_only)
    assert isinstance(result, np.ndarray) and result.dtype == np.int8
    return result.tolist()


# -- opening -----------------------------------------------------------------------------------
def test_create_and_reopen(path: Path) -> None:
    with Ledger(path) as led:
        run = led.begin_run(JOB, "r1", "cfg", FILES)
        led.end_run(run.run_id, status="done", counts={"ok": 3}, exit_code=0)
        for private in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert private.stat().st_mode & 0o777 == 0o600, private
    assert db(path, "SELECT key, value FROM meta WHERE key <> 'created' ORDER BY key") == [
        ("application", "dmimport-ledger"),
        ("schema_version", "4"),
    ]
    assert db(path, "PRAGMA journal_mode") == [("wal",)]
    with Ledger(path) as led:
        [record] = led.runs(JOB)
    assert (record.run_id, record.status, record.counts, record.files) == (
        "r1",
        "done",
        {"ok": 3},
        FILES,
    )


def test_empty_file_becomes_a_ledger(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.touch()
    Ledger(path).close()
    assert db(path, "SELECT value FROM meta WHERE key = 'application'") == [("dmimport-ledger",)]


@pytest.mark.parametrize(
    "setup",
    [
        "CREATE TABLE customers (id INTEGER)",
        "CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('application', 'x')",
    ],
    ids=["other-tables", "other-meta"],
)
def test_foreign_sqlite_file_is_refused_untouched(path: Path, setup: str) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(setup)
    conn.close()
    before = path.read_bytes()
    with pytest.raises(LedgerError) as exc:
        Ledger(path)
    assert str(exc.value) == (
        f"ledger {path} is an SQLite database that dmimport did not create (no "
        "'dmimport-ledger' meta); it was left untouched. Set state.path to another file"
    )
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()


def test_garbage_file_is_refused_untouched(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"phone,email\n13800138000,a@b.cn\n" * 200)
    before = path.read_bytes()
    with pytest.raises(LedgerError) as exc:
        Ledger(path)
    assert str(exc.value) == (
        f"{path} is not a dmimport ledger (not an SQLite database); it was left untouched. "
        "Set state.path to another file (a new one is created there)"
    )
    assert exc.value.exit_code == 2
    assert path.read_bytes() == before


def test_newer_schema_is_refused(path: Path) -> None:
    Ledger(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(LedgerError) as exc:
        Ledger(path)
    assert str(exc.value) == (
        f"ledger {path} has schema_version 5, newer than this dmimport supports (4); "
        "upgrade dmimport, or set state.path to another file"
    )


# -- runs and resume ---------------------------------------------------------------------------
def test_first_run_of_a_job_resumes_nothing(ledger: Ledger) -> None:
    run = ledger.begin_run(JOB, "r1", "cfg", FILES)
    assert (run.run_id, run.resumed_from, run.resume_chain) == ("r1", None, ())
    with pytest.raises(LedgerError, match="run id r1 is already in ledger"):
        ledger.begin_run("orders", "r1", "cfg", FILES)


def test_a_killed_run_is_resumed(ledger: Ledger, path: Path, dead_pid: int) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record(JOB, "r1", [("phone=1", 10, "ok", h("a")), ("phone=2", 11, "failed", h("b"))])
    die(path, "r1", dead_pid)
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    assert (run.resumed_from, run.resume_chain) == ("r1", ("r1",))
    killed, resumed = ledger.runs(JOB)[::-1]
    assert (killed.status, killed.finished, killed.counts) == (
        "killed",
        None,
        {"ok": 1, "failed": 1},
    )
    assert (resumed.status, resumed.resumed_from) == ("running", "r1")
    # and again: the chain grows, nearest first
    die(path, "r2", dead_pid)
    assert ledger.begin_run(JOB, "r3", "cfg", FILES).resume_chain == ("r2", "r1")


@pytest.mark.parametrize(
    ("config", "files", "resume"),
    [
        ("other-cfg", FILES, True),
        ("cfg", [{**FILES[0], "size": 121}], True),
        ("cfg", FILES, False),
    ],
    ids=["config-changed", "file-changed", "resume-off"],
)
def test_a_killed_run_is_not_resumed_when_anything_changed(
    ledger: Ledger, path: Path, dead_pid: int, config: str, files: list[dict], resume: bool
) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    die(path, "r1", dead_pid)
    run = ledger.begin_run(JOB, "r2", config, files, resume=resume)
    assert (run.resumed_from, run.resume_chain) == (None, ())
    assert [r.status for r in ledger.runs(JOB)] == ["running", "killed"]


def test_interrupted_is_resumed_done_is_not(ledger: Ledger) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.end_run("r1", status="interrupted", counts={}, exit_code=130)
    assert ledger.begin_run(JOB, "r2", "cfg", FILES).resumed_from == "r1"
    ledger.end_run("r2", status="done", counts={}, exit_code=0)
    assert ledger.begin_run(JOB, "r3", "cfg", FILES).resumed_from is None


def test_a_live_unfinished_run_is_a_concurrent_run(ledger: Ledger, path: Path) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        die(path, "r1", sleeper.pid)  # not dead at all: its pid is alive
        with pytest.raises(
            LockedError, match=f"job 'customers' is already running \\(pid {sleeper.pid}"
        ):
            ledger.begin_run(JOB, "r2", "cfg", FILES)
        assert [r.status for r in ledger.runs(JOB)] == ["running"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_reused_pid_does_not_keep_a_dead_run_alive(ledger: Ledger, path: Path) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    # the run began an hour ago; the process now holding its pid started just now
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE runs SET pid = ?, started = '2000-01-01T00:00:00.000+00:00'", (os.getpid(),)
        )
    conn.close()
    assert ledger.begin_run(JOB, "r2", "cfg", FILES).resumed_from == "r1"


# -- classify ----------------------------------------------------------------------------------
def test_resume_skips_what_the_dead_run_recorded(
    ledger: Ledger, path: Path, dead_pid: int, lookup_mode: str
) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    # X appears at pos 10 and 20; the run died after recording only pos 10
    ledger.record(JOB, "r1", [("X", 10, "ok", h("x1")), ("Y", 11, "failed", h("y"))])
    ledger.record(JOB, "r1", [("Z", 12, "not_sent", h("z")), ("V", 13, "rejected", h("v"))])
    ledger.record(JOB, "r1", [("U", 14, "failed", h("u1")), ("U", 15, "ok", h("u2"))])
    die(path, "r1", dead_pid)
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    rows = [
        ("X", 10, h("x1")),
        ("Y", 11, h("y")),  # failed: not delivered, so sent again (issue 11 #2)
        ("Z", 12, h("z")),  # not_sent: sent again
        ("V", 13, h("v")),  # rejected: not delivered either
        ("U", 14, h("u1")),  # failed, but a later row of U was delivered: done
        ("U", 15, h("u2")),
        ("X", 20, h("x2")),
        ("W", 21, h("w")),  # never seen
        ("", 22, h("blank")),
    ]
    assert verdicts(ledger, run, rows, changed_only=False) == [
        DONE, SEND, SEND, SEND, DONE, DONE, SEND, SEND, SEND
    ]  # fmt: skip


def test_changed_only_skips_unchanged_rows(ledger: Ledger, lookup_mode: str) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record(JOB, "r1", [("A", 1, "ok", h("a")), ("B", 2, "ok", h("b"))])
    ledger.record(JOB, "r1", [("C", 3, "rejected", h("c"))])
    ledger.end_run("r1", status="done", counts={}, exit_code=0)
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    rows = [("A", 1, h("a")), ("B", 2, h("b-changed")), ("C", 3, h("c")), ("D", 4, h("d"))]
    assert verdicts(ledger, run, rows, changed_only=True) == [UNCHANGED, SEND, SEND, SEND]
    assert verdicts(ledger, run, rows, changed_only=False) == [SEND] * 4


def test_a_failed_outcome_keeps_the_last_ok_hash(
    ledger: Ledger, path: Path, lookup_mode: str
) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record(JOB, "r1", [("A", 1, "ok", h("v1"))])
    ledger.end_run("r1", status="done", counts={}, exit_code=0)
    ledger.begin_run(JOB, "r2", "cfg", FILES)
    ledger.record(JOB, "r2", [("A", 1, "failed", h("v2"))])
    ledger.end_run("r2", status="done", counts={}, exit_code=1)
    assert db(path, "SELECT last_status, last_hash, last_ok_hash, last_run_id FROM rows") == [
        ("failed", h("v2"), h("v1"), "r2")
    ]
    run = ledger.begin_run(JOB, "r3", "cfg", FILES)
    # the platform still holds v1: v1 is unchanged, v2 must be sent again
    assert verdicts(ledger, run, [("A", 1, h("v1"))], changed_only=True) == [UNCHANGED]
    run = RunInfo("r3", None, ())
    assert verdicts(ledger, run, [("A", 1, h("v2"))], changed_only=True) == [SEND]


def test_changed_only_sends_every_row_after_a_sent_row_of_the_identity(
    ledger: Ledger, lookup_mode: str
) -> None:
    # last night X's final row was v2; tonight the file has X=v1 then X=v2 again
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record(JOB, "r1", [("X", 1, "ok", h("v1")), ("X", 2, "ok", h("v2"))])
    ledger.end_run("r1", status="done", counts={}, exit_code=0)
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    same_batch = [("X", 1, h("v1")), ("X", 2, h("v2")), ("X", 3, h("v2"))]
    assert verdicts(ledger, run, same_batch, changed_only=True) == [SEND, SEND, SEND]
    run = RunInfo("r2", None, ())
    assert verdicts(ledger, run, [("X", 1, h("v1"))], changed_only=True) == [SEND]
    assert verdicts(ledger, run, [("X", 2, h("v2"))], changed_only=True) == [SEND]


def test_judge_by_last_holds_a_repeated_identity_until_its_last_row_decides(
    ledger: Ledger, lookup_mode: str
) -> None:
    # issue 11 #5: last run X and Z had two rows each; tonight X's rows are the same, Z's last
    # row changed, W is new
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record(JOB, "r1", [("X", 1, "ok", h("x-old")), ("Y", 2, "ok", h("y"))])
    ledger.record(JOB, "r1", [("X", 3, "ok", h("x")), ("Z", 4, "ok", h("z1"))])
    ledger.record(JOB, "r1", [("Z", 6, "ok", h("z2"))])
    ledger.end_run("r1", status="done", counts={}, exit_code=0)
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)

    def classify(rows: list[tuple[str, int, str]]) -> list[int]:
        ids, pos, hashes = zip(*rows, strict=True)
        return ledger.classify(
            JOB, run, list(ids), list(pos), list(hashes), changed_only=True, judge_by_last=True
        ).tolist()

    assert classify([("X", 1, h("x-old")), ("Y", 2, h("y")), ("Z", 4, h("z1"))]) == [
        HELD, UNCHANGED, HELD
    ]  # fmt: skip
    assert classify([("X", 3, h("x")), ("Z", 6, h("z2-changed")), ("W", 7, h("w"))]) == [
        HELD, HELD, SEND
    ]  # fmt: skip
    positions, verdict, superseded_by = ledger.resolve_held(run)
    assert positions.tolist() == [1, 3, 4, 6]
    assert verdict.tolist() == [SUPERSEDED, UNCHANGED, SEND, SEND]  # Z: both rows, in order
    assert superseded_by.tolist() == [3, -1, -1, -1]


def test_end_run_folds_the_journal_in_file_order(path: Path) -> None:
    ledger = Ledger(path, fold_chunk=2)
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    # unordered event sends may finish out of order: the file's last row of E still wins
    ledger.record(JOB, "r1", [("E", 20, "ok", h("late")), ("E", 10, "failed", h("early"))])
    ledger.record(JOB, "r1", [("A", 1, "ok", h("a")), ("B", 2, "rejected", h("b"))])
    ledger.record(JOB, "r1", [("", 3, "rejected", h("no identity"))])
    ledger.end_run("r1", status="done", counts={"ok": 2}, exit_code=1)
    assert db(path, "SELECT identity, last_pos, last_status, last_ok_hash FROM rows") == [
        ("A", 1, "ok", h("a")),
        ("B", 2, "rejected", None),
        ("E", 20, "ok", h("late")),
    ]
    assert db(path, "SELECT count(*) FROM run_rows") == [(0,)]
    assert ledger.runs(JOB)[0].counts == {"ok": 2}  # what end_run was told, not the journal
    ledger.close()


def test_classify_switches_to_the_snapshot_with_the_same_verdicts(path: Path) -> None:
    ledger = Ledger(path, snapshot_after=0.5)
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record(JOB, "r1", [(f"id{i}", i, "ok", h(str(i))) for i in range(100)])
    ledger.end_run("r1", status="done", counts={}, exit_code=0)
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    got = []
    sources = []
    for start in range(0, 100, 20):
        rows = [(f"id{i}", i, h(str(i) if i % 3 else "new")) for i in range(start, start + 20)]
        got += verdicts(ledger, run, rows, changed_only=True)
        sources.append(run.lookups)
    # queries until half the job's 100 rows were classified, then the index built from rows
    assert sources == ["queries", "queries", "built", "built", "built"]
    assert got == [SEND if i % 3 == 0 else UNCHANGED for i in range(100)]
    ledger.close()


def test_record_refuses_what_it_cannot_store(ledger: Ledger) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    with pytest.raises(ValueError, match="unknown row status \\['sent'\\]"):
        ledger.record(JOB, "r1", [("A", 1, "sent", h("a"))])
    with pytest.raises(LedgerError, match="run nope is not in ledger"):
        ledger.record(JOB, "nope", [("A", 1, "ok", h("a"))])
    with pytest.raises(LedgerError, match="run r1 belongs to job 'customers', not 'orders'"):
        ledger.record("orders", "r1", [("A", 1, "ok", h("a"))])


# -- listing -----------------------------------------------------------------------------------
def test_runs_newest_first_with_counts(ledger: Ledger) -> None:
    for i, job in enumerate([JOB, "orders", JOB]):
        ledger.begin_run(job, f"r{i}", "cfg", FILES)
        ledger.end_run(f"r{i}", status="done", counts={"ok": i, "failed": 1}, exit_code=1)
    assert [r.run_id for r in ledger.runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in ledger.runs(JOB)] == ["r2", "r0"]
    assert [r.run_id for r in ledger.runs(limit=1)] == ["r2"]
    newest = ledger.runs(JOB)[0]
    assert (newest.counts, newest.exit_code, newest.status) == ({"failed": 1, "ok": 2}, 1, "done")
    assert newest.duration_s is not None and 0 <= newest.duration_s < 60


def test_failed_rows_are_the_runs_own_a_resumed_run_sends_the_earlier_ones_again(
    ledger: Ledger, path: Path, dead_pid: int
) -> None:
    ledger.begin_run(JOB, "r1", "cfg", FILES)
    ledger.record_failed(
        "r1", [("b.csv", 7, "phone=7", "failed"), ("a.csv", 9, "phone=9", "not_sent")]
    )
    die(path, "r1", dead_pid)
    ledger.begin_run(JOB, "r2", "cfg", FILES)
    ledger.record_failed(
        "r2", [("a.csv", 9, "phone=9", "failed"), ("a.csv", 3, "phone=3", "rejected")]
    )
    assert ledger.failed_rows("r1") == [
        ("a.csv", 9, "phone=9", "not_sent"),
        ("b.csv", 7, "phone=7", "failed"),
    ]
    # r2 sent r1's undelivered rows again: what still failed is in r2's own list (issue 11 #2)
    assert ledger.failed_rows("r2") == [
        ("a.csv", 3, "phone=3", "rejected"),
        ("a.csv", 9, "phone=9", "failed"),
    ]
    assert ledger.failed_rows("unknown") == []


# -- locks -------------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from importer.ledger import Ledger
with Ledger(sys.argv[1]).lock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_excludes_another_process_until_it_dies(ledger: Ledger, path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), JOB], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(LockedError) as exc, ledger.lock(JOB):
            pass
        message = str(exc.value)
        assert message.startswith(f"job 'customers' is already running (pid {holder.pid}, started ")
        assert message.endswith(f"then run again (lock file {path}.customers.lock)")
        assert exc.value.exit_code == 4
        with ledger.lock("orders"):  # other jobs are not affected
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # and within one process a second holder is refused too
    with (
        ledger.lock(JOB),
        pytest.raises(LockedError, match=f"pid {os.getpid()}"),
        ledger.lock(JOB),
    ):
        pass
    assert ledger.lock_path("a/b") == path.with_name("state.db.a%2Fb.lock")


def test_the_lock_holder_resumes_its_own_abandoned_run(ledger: Ledger) -> None:
    # e.g. a library caller whose first run raised before end_run
    with ledger.lock(JOB):
        ledger.begin_run(JOB, "r1", "cfg", FILES)
        assert ledger.begin_run(JOB, "r2", "cfg", FILES).resumed_from == "r1"
    with pytest.raises(LockedError, match="already running"):
        ledger.begin_run(JOB, "r3", "cfg", FILES)  # without the lock: r2 may be running


# -- durability --------------------------------------------------------------------------------
RECORD_FOREVER = """
import sys
from importer.ledger import Ledger
led = Ledger(sys.argv[1])
led.begin_run("customers", "r1", "cfg", [])
batch = 0
while True:
    rows = [(f"id{batch}-{i}", batch * 200 + i, "ok", batch) for i in range(200)]
    led.record("customers", "r1", rows)
    print(batch, flush=True)
    batch += 1
"""


def test_sigkill_loses_nothing_that_was_committed(path: Path) -> None:
    Ledger(path).close()
    child = subprocess.Popen(
        [sys.executable, "-c", RECORD_FOREVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    # killed once it reported a number of committed batches (an event, not a moment), drawn
    # at random; it is recording the next batch by then
    committed: list[int] = []
    stop_after = random.randint(20, 200)
    for _ in range(stop_after):
        committed.append(int(child.stdout.readline()))
    child.send_signal(signal.SIGKILL)
    child.wait()
    committed += [int(line) for line in child.stdout.read().split()]
    child.stdout.close()
    assert db(path, "PRAGMA integrity_check") == [("ok",)]
    with Ledger(path) as led:
        run = led.begin_run("customers", "r2", "cfg", [])
        assert run.resumed_from == "r1"
        last = committed[-1]
        rows = [(f"id{b}-{i}", b * 200 + i, b) for b in range(last + 1) for i in range(200)]
        assert verdicts(led, run, rows, changed_only=False) == [DONE] * len(rows)


# -- the packed index changed-only runs read -----------------------------------------------
def index_arrays(path: Path) -> tuple[list[int], list[int], int, int]:
    """The stored index of JOB (keys, ok keys), its fold number and the job's fold count."""
    [(keys, ok, folds)] = db(path, "SELECT keys, ok_keys, folds FROM job_index WHERE job = ?", JOB)
    [(count,)] = db(path, "SELECT folds FROM job_folds WHERE job = ?", JOB)
    as_list = lambda blob: np.frombuffer(blob, dtype="<i8").tolist()  # noqa: E731
    return as_list(keys), as_list(ok), int(folds), int(count)  # type: ignore[arg-type]


def rebuilt(ledger: Ledger) -> tuple[list[int], list[int]]:
    snapshot = ledger.build_index(JOB)
    return snapshot.keys.tolist(), snapshot.ok_key.tolist()


def test_every_fold_keeps_the_index_up_to_date(path: Path) -> None:
    ledger = Ledger(path, snapshot_after=0.0)
    run = ledger.begin_run(JOB, "r1", "cfg", FILES)
    first = [("A", 1, h("a")), ("B", 2, h("b")), ("C", 3, h("c"))]
    assert verdicts(ledger, run, first, changed_only=True) == [SEND] * 3
    ledger.record(JOB, "r1", [("A", 1, "ok", h("a")), ("B", 2, "ok", h("b"))])
    ledger.record(JOB, "r1", [("C", 3, "failed", h("c"))])
    ledger.end_run("r1", status="done", counts={}, exit_code=1)
    keys, ok, folds, count = index_arrays(path)
    assert folds == count == 1
    assert (keys, ok) == rebuilt(ledger) and len(keys) == 3

    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    second = [("A", 1, h("a")), ("B", 2, h("b2")), ("C", 3, h("c")), ("D", 4, h("d"))]
    assert verdicts(ledger, run, second, changed_only=True) == [UNCHANGED, SEND, SEND, SEND]
    assert run.lookups == "index"  # read, not rebuilt
    ledger.record(JOB, "r2", [("B", 2, "ok", h("b2")), ("C", 3, "ok", h("c"))])
    ledger.record(JOB, "r2", [("D", 4, "rejected", h("d"))])
    ledger.end_run("r2", status="done", counts={}, exit_code=0)
    keys, ok, folds, count = index_arrays(path)
    assert folds == count == 2
    assert (keys, ok) == rebuilt(ledger) and len(keys) == 4

    run = ledger.begin_run(JOB, "r3", "cfg", FILES)
    assert verdicts(ledger, run, second, changed_only=True) == [UNCHANGED] * 3 + [SEND]
    ledger.close()


def test_an_index_behind_the_rows_is_rebuilt_not_trusted(path: Path) -> None:
    ledger = Ledger(path, snapshot_after=0.0)
    run = ledger.begin_run(JOB, "r1", "cfg", FILES)
    verdicts(ledger, run, [("A", 1, h("a"))], changed_only=True)
    ledger.record(JOB, "r1", [("A", 1, "ok", h("a"))])
    ledger.end_run("r1", status="done", counts={}, exit_code=0)
    # rows changed by a fold the index did not see (a crash between the fold's transactions)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE rows SET last_ok_hash = ? WHERE identity = 'A'", (h("a2"),))
        conn.execute("UPDATE job_folds SET folds = folds + 1")
    conn.close()
    run = ledger.begin_run(JOB, "r2", "cfg", FILES)
    assert ledger.read_index(JOB) is None
    assert verdicts(ledger, run, [("A", 2, h("a2"))], changed_only=True) == [UNCHANGED]
    assert run.lookups == "built"
    keys, ok, folds, count = index_arrays(path)
    assert folds == count == 2 and (keys, ok) == rebuilt(ledger)
    read = ledger.read_index(JOB)
    assert read is not None and read.keys.tolist() == keys
    ledger.close()


# -- older ledgers, upgraded in place ------------------------------------------------------------
def old_ledger(path: Path, version: int) -> None:
    """A ledger as dmimport left it at schema ``version`` (1 or 2): job JOB's run r1 (done)
    delivered A and B and failed C; run r2 (killed) recorded D in its journal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_2)
    if version == 1:
        conn.executescript("DROP TABLE job_folds; DROP TABLE job_index; DROP TABLE job_index_pos;")
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("application", "dmimport-ledger"), ("schema_version", str(version)), ("created", "x")],
    )
    run = "INSERT INTO runs VALUES (?, ?, '2026-12-01T00:00:00+00:00', NULL, ?, 'cfg', '[]', "
    run += "NULL, NULL, NULL, ?, 'gone-host')"
    conn.execute(run, ("r1", JOB, "done", 1))
    conn.execute(run, ("r2", JOB, "killed", 1))
    conn.executemany(
        "INSERT INTO rows VALUES (?, ?, ?, ?, ?, 'r1', ?, 'x')",
        [
            (JOB, "A", "ok", hex16(h("a")), hex16(h("a")), 1),
            (JOB, "B", "ok", hex16(h("b")).upper(), hex16(h("b")).upper(), 2),
            (JOB, "C", "failed", hex16(h("c2")), hex16(h("c1")), 3),
            (JOB, "E", "ok", "", "", 5),  # a row sent without a body hash
            (JOB, "F", "ok", "sha:f", "sha:f", 6),  # not hex: was compared by keys64
        ],
    )
    conn.execute("INSERT INTO run_rows VALUES ('r2', 'D', 4, 'ok', ?)", (hex16(h("d")),))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_ledger_is_upgraded_in_place(path: Path, version: int) -> None:
    old_ledger(path, version)
    with Ledger(path) as led:
        assert [r.run_id for r in led.runs(JOB)] == ["r2", "r1"]
    assert db(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    assert SCHEMA_VERSION == 4
    assert db(path, "SELECT identity, last_hash, last_ok_hash FROM rows ORDER BY identity") == [
        ("A", h("a"), h("a")),
        ("B", h("b"), h("b")),
        ("C", h("c2"), h("c1")),
        ("E", None, None),
        ("F", keys64(["sha:f"])[0], keys64(["sha:f"])[0]),
    ]
    assert db(path, "SELECT typeof(last_ok_hash) FROM rows WHERE identity = 'A'") == [("integer",)]
    assert db(path, "SELECT run_id, identity, pos, hash FROM run_rows") == [("r2", "D", 4, h("d"))]
    assert db(path, "PRAGMA integrity_check") == [("ok",)]
    with Ledger(path) as led:  # opened again: nothing left to upgrade
        run = led.begin_run(JOB, "r3", "cfg", [], resume=False)  # folds r2's journal
        assert run.resumed_from is None
        rows = [("A", 1, h("a")), ("B", 2, h("b")), ("C", 3, h("c1")), ("D", 4, h("d"))]
        rows += [("E", 5, h("e")), ("F", 6, int(keys64(["sha:f"])[0]))]
        got = verdicts(led, run, rows, changed_only=True)
        assert got == [UNCHANGED, UNCHANGED, UNCHANGED, UNCHANGED, SEND, UNCHANGED]


def test_a_failed_upgrade_leaves_the_old_ledger_as_it_was(path: Path) -> None:
    old_ledger(path, 2)
    # a table in the way of the conversion: the upgrade fails after it converted ``rows``
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE run_rows_v3 (x)")
    conn.close()
    before = db(path, "SELECT * FROM rows ORDER BY identity")
    with pytest.raises(LedgerError):
        Ledger(path)
    assert db(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
    assert db(path, "SELECT * FROM rows ORDER BY identity") == before
    assert db(path, "SELECT typeof(last_ok_hash) FROM rows WHERE identity = 'A'") == [("text",)]
    assert "rows_v3" not in {n for (n,) in db(path, "SELECT name FROM sqlite_master")}


def test_the_snapshot_directory_finds_what_a_binary_search_finds() -> None:
    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64))
    keys = np.sort(np.concatenate([keys, keys[:10]]))  # clashing identities stay in twice
    edge = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1, 0], dtype=np.int64)
    snap = Snapshot(keys, np.arange(len(keys)), keys ^ 7, True, keys ^ 3)
    needles = np.concatenate(
        [rng.choice(keys, 5000), rng.integers(-(2**63), 2**63 - 1, 5000), edge, keys[[0, -1]]]
    )
    at = snap.locate(needles)
    expected = search(keys, needles)
    assert (keys[at] == needles).tolist() == (keys[expected] == needles).tolist()
    assert (keys[at] == needles).sum() > 5000
    done, ok, last = snap.find(needles)
    hit = np.isin(needles, keys)
    assert (ok[hit] == needles[hit] ^ 7).all() and (ok[~hit] == 0).all()
    assert (last[hit] == needles[hit] ^ 3).all() and (last[~hit] == -1).all()
    assert (keys[done[hit]] == needles[hit]).all() and (done[~hit] == -1).all()


def test_a_transaction_inside_an_open_one_is_a_savepoint_of_it(tmp_path: Path) -> None:
    """``transaction`` on a connection whose own transaction is still open (a run's recorder
    keeps its last batch open) joins it: an error undoes only its own part, and what it
    wrote is committed with the outer transaction (a BEGIN there used to fail with "cannot
    start a transaction within a transaction", and a run's guard baseline was lost)."""
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")  # opens the outer transaction
    assert conn.in_transaction
    with pytest.raises(ValueError), transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        raise ValueError("undo only this part")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (3)")
    assert conn.in_transaction  # still the outer one: nothing committed yet
    conn.commit()
    conn.close()
    again = sqlite3.connect(tmp_path / "t.db")
    assert [v for (v,) in again.execute("SELECT v FROM t ORDER BY v")] == [1, 3]
    again.close()
