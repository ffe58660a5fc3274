"""The durable per-row ledger of nightly runs: resume a killed run, skip unchanged rows.

One SQLite file (``state.path``, default ``<report.dir>/state.db``) in WAL mode, shared by all
jobs. It remembers, per job and row identity, the last outcome and the hash of the last body
the platform accepted, plus the runs themselves and the rows each run could not deliver::

    meta              application = 'dmimport-ledger', schema_version = 1
    runs              one row per run: job, times, status, config hash, file fingerprints,
                      counts, exit code, the run it resumed, pid and host
    rows              (job, identity) -> last status, last hash, last ok hash, run, position
    run_rows          the outcomes a run recorded and that are not yet in ``rows`` (below)
    run_rows_failed   (run, file, line, identity, status) of rows that ended failed,
                      rejected or not_sent: what ``dmimport retry RUN_ID`` re-reads

A row's ``pos`` is its place in its run: ``file_index * 2**40 + line``. Within one run, rows
of one identity are delivered in that order, so "the resumed run got this far for identity X"
is ``rows.last_pos >= pos``, even when X appears several times in a file.

Every ``record`` is one committed transaction: a process killed between two calls loses
nothing it recorded (WAL, ``synchronous=NORMAL``; a power loss may lose the last commits, whose
rows are then sent again -- harmless, sends are idempotent). A file that is not our ledger is
refused with a ``LedgerError`` and never modified.

Why a journal: a run records its outcomes in arrival order, which is random with respect to
``rows``' key order; upserting them one by one dirties a page per row (about 20,000 rows/s on
a million-row ledger). ``record`` appends to ``run_rows`` instead (about 300,000 rows/s of CPU
in batches of 200), and the journal is folded into ``rows`` in key order when the run ends
(``end_run``, about 5 s per million rows), or, for a run that died, by the job's next
``begin_run``. ``classify`` only needs the outcomes of earlier runs, so it reads ``rows`` alone.

``classify`` looks identities up with ``IN (...)`` queries (about 150,000 rows/s on a
million-row ledger) until the run has classified a twentieth as many rows as the job has in
``rows``; from then on it uses an in-memory snapshot of the job's rows (24 bytes a row, about
1.4 s per million rows to load, then about 1,500,000 rows/s). Identities are keyed there by
Python's 64-bit ``hash``: a wrong skip needs two identities with one key, about
``rows_in_run * rows_in_ledger / 2**64`` (5e-8 for a million each).

A ``Ledger`` is meant for one thread (the asyncio loop's). The connection is opened with
``check_same_thread=False`` so it may be handed over, but calls must never overlap. What
``classify`` remembers about a run lives in its ``RunInfo``, so a second ``Ledger`` on the same
file may classify in another thread (the producer's) while the first records.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from ..errors import DiskFullError, LedgerError, LockedError
from .rowhash import as_keys, keys64

log = logging.getLogger("importer")

APPLICATION = "dmimport-ledger"
SCHEMA_VERSION = 2

#: ``classify`` verdicts
SEND = 0
DONE = 1  # the resumed runs delivered this row, or a later row of its identity
UNCHANGED = 2  # changed-only: the platform already holds exactly this body
#: changed-only, ``judge_by_last``: the identity's last row in the run decides; see
#: ``resolve_held`` at the end of the run
HELD = 3
#: ``resolve_held``: an earlier row of an identity whose last row is UNCHANGED
SUPERSEDED = 4

ROW_STATUSES = frozenset({"ok", "failed", "rejected", "not_sent"})
#: statuses ``end_run`` accepts; ``interrupted`` (Ctrl-C, SIGTERM) is resumable like a kill
END_STATUSES = frozenset({"done", "aborted", "interrupted"})

BUSY_TIMEOUT_MS = 10_000
#: at most this many identities per ``IN (...)`` lookup (and SQLite's parameter limit)
_CHUNK = 32_000
#: switch ``classify`` to a snapshot once the run classified this share of the job's rows:
#: a lookup costs about as much as loading five rows into the snapshot, and a run that is
#: not small next to the ledger (a nightly re-import) gains from loading it early
_SNAPSHOT_AFTER = 0.05
#: journal rows folded per transaction, so that other jobs never wait long for the write lock
_FOLD_CHUNK = 100_000
#: a process that started this long after a run began cannot be that run: its pid was reused
_PID_REUSE_SLACK_S = 5.0

# Added by schema 2 (a schema-1 ledger gains them when opened). ``job_folds`` counts the folds
# that changed a job's ``rows``; ``job_index`` packs the job's rows for changed-only runs
# (sorted int64 identity keys, and the int64 keys of their last ok hashes) as of fold number
# ``folds``: it is valid only while that is still the job's count.
_SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS job_folds (job TEXT PRIMARY KEY, folds INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_index (
    job TEXT PRIMARY KEY,
    folds INTEGER NOT NULL,
    keys BLOB NOT NULL,
    ok_keys BLOB NOT NULL
);
"""

_SCHEMA = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    config_sha256 TEXT NOT NULL,
    files_json TEXT NOT NULL,
    counts_json TEXT,
    exit_code INTEGER,
    resumed_from TEXT,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL
);
CREATE INDEX runs_job ON runs (job);
CREATE TABLE rows (
    job TEXT NOT NULL,
    identity TEXT NOT NULL,
    last_status TEXT NOT NULL,
    last_hash TEXT,
    last_ok_hash TEXT,
    last_run_id TEXT NOT NULL,
    last_pos INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (job, identity)
) WITHOUT ROWID;
CREATE TABLE run_rows (
    run_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    pos INTEGER NOT NULL,
    status TEXT NOT NULL,
    hash TEXT
);
CREATE INDEX run_rows_run ON run_rows (run_id);
CREATE TABLE run_rows_failed (
    run_id TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    identity TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX run_rows_failed_run ON run_rows_failed (run_id);
"""
    + _SCHEMA_2
)


# Folds rows ?4..?5 of ``temp.fold`` (run ?2's journal in key order) into ``rows``. Rows of
# one identity come in position order, so its last row in the file wins even when unordered
# event sends finished out of order; runs are folded oldest first, so a later run wins. A
# failed outcome keeps the last ok hash: the platform still holds that body.
_FOLD = """
INSERT INTO rows (job, identity, last_status, last_hash, last_ok_hash, last_run_id, last_pos,
                  updated)
SELECT ?1, identity, status, hash, CASE WHEN status = 'ok' THEN hash END, ?2, pos, ?3
FROM temp.fold WHERE rowid BETWEEN ?4 AND ?5
ORDER BY rowid
ON CONFLICT (job, identity) DO UPDATE SET
    last_status = excluded.last_status,
    last_hash = excluded.last_hash,
    last_ok_hash = coalesce(excluded.last_ok_hash, rows.last_ok_hash),
    last_run_id = excluded.last_run_id,
    last_pos = excluded.last_pos,
    updated = excluded.updated
"""

_COUNT_FOLD = """
INSERT INTO job_folds (job, folds) VALUES (?, 1)
ON CONFLICT (job) DO UPDATE SET folds = folds + 1
"""

_RUN_COLUMNS = (
    "run_id, job, started, finished, status, config_sha256, files_json, counts_json, "
    "exit_code, resumed_from, pid, host"
)


@dataclass
class RunInfo:
    """The run ``begin_run`` opened. Pass it to ``classify``.

    ``resume_chain`` is the run it resumed, then the run that one resumed, and so on (empty
    when it resumed nothing).
    """

    run_id: str
    resumed_from: str | None
    resume_chain: tuple[str, ...]
    _state: _ClassifyState = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._state = _ClassifyState()


@dataclass(frozen=True)
class RunRecord:
    """One run as ``runs()`` lists it."""

    run_id: str
    job: str
    started: str
    finished: str | None
    duration_s: float | None
    counts: dict[str, int]
    exit_code: int | None
    status: str  # running | done | aborted | interrupted | killed
    resumed_from: str | None
    config_sha256: str
    files: list[dict[str, Any]]
    pid: int
    host: str


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(
    method: Callable[Concatenate[Ledger, P], R],
) -> Callable[Concatenate[Ledger, P], R]:
    """SQLite's errors leave the ledger as ``LedgerError`` naming the file (``DiskFullError``
    when its disk is full)."""

    @functools.wraps(method)
    def wrapper(self: Ledger, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    return wrapper


class Ledger:
    """The ledger file at ``path``, opened (or created, mode 0600) and validated."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._host = socket.gethostname()
        self._held: set[str] = set()
        self._run_jobs: dict[str, str] = {}
        self._conn = self._open()
        # Larger IN lists are faster (SQLite sorts them, then walks the index in order).
        limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._chunk = max(100, min(_CHUNK, limit - 1))

    # -- opening -------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created here, not by SQLite, so that it is private from the first byte; SQLite
            # gives the -wal and -shm files the same mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise LedgerError(
                f"cannot create ledger {path}: {exc.strerror}; {_fix_hint(exc.errno)}"
            ) from exc
        if not path.is_file():
            raise LedgerError(f"ledger {path} is not a regular file; set state.path to a file")
        _refuse_foreign_or_unwritable(path)
        if path.stat().st_size == 0:
            # an empty file holds nothing to lose: it becomes the ledger, private before
            # SQLite creates its -wal and -shm files with the same mode
            _make_private(path)
        try:
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Validate with reads only: nothing is written to a file that is not ours.
            if not _schema_names(conn, path):
                _create(conn)
            _validate(conn, path)
            _upgrade(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(
                    f"ledger {path} cannot use SQLite's WAL mode (got {mode!r}); "
                    "put state.path on a local disk"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            # ours now (validated): private, whatever mode the files had
            _make_private(path)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _error(self, exc: sqlite3.Error) -> LedgerError | DiskFullError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return DiskFullError(
                self.path, f"no space left on device writing the ledger {self.path}"
            )
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return LedgerError(
                f"ledger {self.path} stayed locked by another process for "
                f"{BUSY_TIMEOUT_MS // 1000} s ({exc}); try again when it is done"
            )
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return _not_a_ledger(self.path, exc)
        if code in (
            sqlite3.SQLITE_CANTOPEN,
            sqlite3.SQLITE_READONLY,
            sqlite3.SQLITE_PERM,
            sqlite3.SQLITE_IOERR,
        ):
            problem = _access_problem(self.path)
            if problem is not None:
                return problem
        return LedgerError(f"ledger {self.path}: {exc}")

    def close(self) -> None:
        """Close the file. Idempotent. Locks taken with ``lock()`` stay with their ``with``."""
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- runs ----------------------------------------------------------------------------------
    @_guarded
    def begin_run(
        self,
        job: str,
        run_id: str,
        config_sha256: str,
        files: list[dict[str, Any]],
        *,
        resume: bool = True,
    ) -> RunInfo:
        """Open run ``run_id`` of ``job``; resume the job's last run if it never finished.

        Runs left ``running`` by a process that is gone are marked ``killed`` first, and what
        they recorded is folded into ``rows`` (a few seconds per million rows); LockedError
        if that process is still alive. Then the job's latest run is resumed when it is
        ``killed`` or ``interrupted``, ``resume`` is true, and it had the same config hash
        and the same file fingerprints, in the same order.
        """
        files_json = _canonical(files)
        conn = self._conn
        with self._transaction():
            unfinished = conn.execute(
                "SELECT run_id, pid, host, started FROM runs WHERE job = ? AND status = 'running'",
                (job,),
            ).fetchall()
            for rid, pid, host, started in unfinished:
                self._refuse_if_alive(job, rid, pid, host, started)
            conn.execute(
                "UPDATE runs SET status = 'killed' WHERE job = ? AND status = 'running'", (job,)
            )
        self._fold_job(job)
        with self._transaction():
            latest = conn.execute(
                "SELECT run_id, status, config_sha256, files_json FROM runs WHERE job = ? "
                "ORDER BY rowid DESC LIMIT 1",
                (job,),
            ).fetchone()
            resumed_from: str | None = None
            if (
                resume
                and latest is not None
                and latest[1] in ("killed", "interrupted")
                and latest[2] == config_sha256
                and latest[3] == files_json
            ):
                resumed_from = latest[0]
            try:
                conn.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}) "
                    "VALUES (?, ?, ?, NULL, 'running', ?, ?, NULL, NULL, ?, ?, ?)",
                    (
                        run_id,
                        job,
                        _now(),
                        config_sha256,
                        files_json,
                        resumed_from,
                        os.getpid(),
                        self._host,
                    ),
                )
            except sqlite3.IntegrityError:
                raise LedgerError(
                    f"run id {run_id} is already in ledger {self.path}; use a new run id"
                ) from None
            chain = (resumed_from, *self._chain(resumed_from)) if resumed_from else ()
        self._run_jobs[run_id] = job
        return RunInfo(run_id=run_id, resumed_from=resumed_from, resume_chain=chain)

    def _refuse_if_alive(self, job: str, run_id: str, pid: int, host: str, started: str) -> None:
        """LockedError unless the process of unfinished run ``run_id`` is certainly gone."""
        holding = job in self._held
        if host != self._host:
            # Another host cannot be probed. The job lock (flock on the ledger's local disk)
            # already keeps a second run out, so a run without the lock is dead.
            if holding:
                return
            raise LockedError(
                f"job '{job}' has an unfinished run {run_id} (pid {pid} on host {host}, "
                f"started {started}) that this host cannot check; run it under the job lock "
                "(Ledger.lock) to resume it"
            )
        if pid == os.getpid() and holding:
            return  # this process holds the lock, so its earlier run of the job is over
        if _process_alive(pid, started):
            raise LockedError(
                f"job '{job}' is already running (pid {pid}, started {started}); "
                "wait for it to finish, or stop that process, then run again"
            )

    def _chain(self, run_id: str) -> tuple[str, ...]:
        """The runs ``run_id`` resumed, nearest first."""
        chain: list[str] = []
        seen = {run_id}
        current: str | None = run_id
        while current is not None:
            row = self._conn.execute(
                "SELECT resumed_from FROM runs WHERE run_id = ?", (current,)
            ).fetchone()
            current = row[0] if row else None
            if current is None or current in seen:
                break
            seen.add(current)
            chain.append(current)
        return tuple(chain)

    def _fold_job(self, job: str) -> None:
        """Fold the journals of the job's runs that are over, oldest run first."""
        pending = self._conn.execute(
            "SELECT run_id FROM runs WHERE job = ? AND status <> 'running' "
            "AND EXISTS (SELECT 1 FROM run_rows WHERE run_rows.run_id = runs.run_id) "
            "ORDER BY rowid",
            (job,),
        ).fetchall()
        for (run_id,) in pending:
            self._fold(job, run_id)

    def _fold(self, job: str, run_id: str) -> None:
        """Move ``run_id``'s journal into ``rows``.

        The journal is first copied in key order to a temporary table (no write lock on the
        ledger while sorting), then folded a chunk of keys per transaction, so that each page
        of ``rows`` is written once and other jobs never wait long for the write lock.
        Folding a run again is harmless (same run, same positions: same result), so a crash
        in the middle leaves the rest to the next ``begin_run``; the journal is deleted last.
        """
        conn = self._conn
        # Only what is in the journal now: a late ``record`` is left for the next fold.
        last = conn.execute("SELECT max(rowid) FROM run_rows WHERE run_id = ?", (run_id,))
        upto = last.fetchone()[0]
        if upto is None:
            return
        counts = dict(
            conn.execute(
                "SELECT status, count(*) FROM run_rows WHERE run_id = ? AND rowid <= ? "
                "GROUP BY status",
                (run_id, upto),
            ).fetchall()
        )
        index = self._read_index(job)
        conn.execute("DROP TABLE IF EXISTS temp.fold")
        conn.execute(
            "CREATE TEMP TABLE fold AS SELECT identity, pos, status, hash FROM run_rows "
            "WHERE run_id = ? AND rowid <= ? ORDER BY identity, pos, rowid",
            (run_id, upto),
        )
        try:
            now = _now()
            for start in range(1, sum(counts.values()) + 1, _FOLD_CHUNK):
                with self._transaction():
                    if start == 1:
                        conn.execute(_COUNT_FOLD, (job,))
                    conn.execute(_FOLD, (job, run_id, now, start, start + _FOLD_CHUNK - 1))
            if index is not None:
                # the index as of the fold before, plus what this fold changed
                changed = conn.execute(
                    "SELECT identity, last_ok_hash, last_pos FROM rows WHERE job = ? "
                    "AND identity IN (SELECT identity FROM temp.fold)",
                    (job,),
                ).fetchall()
                snapshot = index[0].updated(
                    keys64([r[0] for r in changed]),
                    _hash_keys([r[1] for r in changed]),
                    np.fromiter((r[2] for r in changed), dtype=np.int64, count=len(changed)),
                )
                self._write_index(job, snapshot, index[1] + 1)
        finally:
            conn.execute("DROP TABLE temp.fold")
        with self._transaction():
            # A killed run never reported its counts: they are what it recorded.
            conn.execute(
                "UPDATE runs SET counts_json = ? WHERE run_id = ? AND counts_json IS NULL",
                (json.dumps(counts, sort_keys=True), run_id),
            )
            conn.execute("DELETE FROM run_rows WHERE run_id = ? AND rowid <= ?", (run_id, upto))

    @_guarded
    def fold_run(self, run_id: str) -> None:
        """Fold what run ``run_id`` recorded so far into ``rows`` (a few seconds per million
        rows), leaving its status as it is. ``end_run`` does it too; a caller with more to do
        before the run counts as over (write its report) folds first, then ends it."""
        self._fold(self._job_of(run_id), run_id)

    @_guarded
    def end_run(self, run_id: str, *, status: str, counts: dict[str, int], exit_code: int) -> None:
        """Close a run: ``done``, ``aborted`` (fatal errcode) or ``interrupted`` (resumable).

        What it recorded is folded into ``rows`` first (a few seconds per million rows), and
        the status written last: a process killed in the fold leaves the run ``running``, so
        the job's next run finds it ``killed``, folds the rest and resumes it."""
        if status not in END_STATUSES:
            raise ValueError(f"end_run status must be one of {sorted(END_STATUSES)}: {status!r}")
        self._fold(self._job_of(run_id), run_id)
        with self._transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished = ?, status = ?, counts_json = ?, exit_code = ? "
                "WHERE run_id = ?",
                (_now(), status, json.dumps(counts, sort_keys=True), exit_code, run_id),
            )

    def _job_of(self, run_id: str) -> str:
        found = self._conn.execute("SELECT job FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if found is None:
            raise LedgerError(f"run {run_id} is not in ledger {self.path}")
        return str(found[0])

    @_guarded
    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The latest runs (of ``job``, or of every job), newest first."""
        where, params = ("WHERE job = ?", (job, limit)) if job is not None else ("", (limit,))
        found = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY rowid DESC LIMIT ?", params
        ).fetchall()
        records = []
        for (
            rid,
            job_,
            started,
            finished,
            status,
            config,
            files_json,
            counts_json,
            exit_code,
            resumed_from,
            pid,
            host,
        ) in found:
            duration = None
            if finished is not None:
                delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
                duration = delta.total_seconds()
            records.append(
                RunRecord(
                    run_id=rid,
                    job=job_,
                    started=started,
                    finished=finished,
                    duration_s=duration,
                    counts=json.loads(counts_json) if counts_json else {},
                    exit_code=exit_code,
                    status=status,
                    resumed_from=resumed_from,
                    config_sha256=config,
                    files=json.loads(files_json),
                    pid=pid,
                    host=host,
                )
            )
        return records

    # -- rows ----------------------------------------------------------------------------------
    @_guarded
    def classify(
        self,
        job: str,
        run: RunInfo,
        identities: Sequence[str],
        positions: Sequence[int],
        hashes: Sequence[str | None] | np.ndarray,
        *,
        changed_only: bool,
        identity_keys: np.ndarray | None = None,
        judge_by_last: bool = False,
    ) -> np.ndarray:
        """One verdict per row, int8: SEND (0), DONE (1: the resumed runs delivered it, ok, or
        a later row of its identity; a row they left failed or not_sent is SEND), UNCHANGED
        (2: only with ``changed_only``; the platform holds this very body).

        Call it for the rows of a run in file order, batch after batch. ``hashes`` are the
        rows' 16-hex body hashes (``hashes[i]`` is read only when needed), or their int64
        keys (``rowhash.keys64``). ``identity_keys`` are ``rowhash.keys64(identities)``,
        computed here when not given. An empty identity is SEND. Once a row of an identity
        is SEND, every later row of it in the run is SEND too: skipping one as unchanged would
        leave the platform with the earlier row's values.

        ``judge_by_last`` (changed-only, user rows: a later row of a customer overrides the
        earlier ones): a changed row of a known identity whose last row in the job's last run
        came later in the file (so a later row is likely to come in this run too) is HELD, and
        so is every later row of that identity: ``resolve_held`` decides them all at the end
        of the run by the identity's last row.
        """
        n = len(identities)
        verdict = np.zeros(n, dtype=np.int8)
        if n == 0 or not (run.resume_chain or changed_only):
            return verdict
        state = run._state
        keys = keys64(identities) if identity_keys is None else identity_keys
        snapshot = self._snapshot(job, run, n, changed_only)
        pos = np.asarray(positions, dtype=np.int64)
        if snapshot is not None:
            done, ok_key, last_pos = snapshot.find(keys)
        else:
            done, ok_key, last_pos = self._lookup(job, run.resume_chain, identities, changed_only)
        if "" in identities:
            blank = np.fromiter((not s for s in identities), dtype=bool, count=n)
            done[blank] = _FLOOR
            ok_key[blank] = _NO_HASH
        is_done = done >= pos
        verdict[is_done] = DONE
        if not changed_only:
            return verdict
        sent = state.sent.contains(keys)
        held = state.held.contains(keys) if judge_by_last else np.zeros(n, dtype=bool)
        known = ~is_done & (ok_key != _NO_HASH) & ~sent & ~held
        candidates = np.flatnonzero(known)
        row_keys = np.full(n, _NO_HASH, dtype=np.int64)
        if len(candidates):
            if isinstance(hashes, np.ndarray):
                row_keys[candidates] = hashes[candidates]
            else:
                row_keys[candidates] = _hash_keys([hashes[i] for i in candidates.tolist()])
            verdict[candidates[row_keys[candidates] == ok_key[candidates]]] = UNCHANGED
        if judge_by_last:
            later = known & (verdict == SEND) & (last_pos > pos)
            verdict[(~is_done & held) | later] = HELD
        _follow_first(verdict, keys)
        state.sent.add(keys[verdict == SEND])
        if judge_by_last:
            self._hold(state, verdict, keys, pos, hashes, row_keys, ok_key)
        return verdict

    def _hold(
        self,
        state: _ClassifyState,
        verdict: np.ndarray,
        keys: np.ndarray,
        pos: np.ndarray,
        hashes: Sequence[str | None] | np.ndarray,
        row_keys: np.ndarray,
        ok_key: np.ndarray,
    ) -> None:
        """Remember the HELD rows of a batch for ``resolve_held``."""
        rows = np.flatnonzero(verdict == HELD)
        if len(rows) == 0:
            return
        # rows held as the followers of an earlier one were not compared yet
        missing = rows[row_keys[rows] == _NO_HASH]
        if len(missing):
            if isinstance(hashes, np.ndarray):
                row_keys[missing] = hashes[missing]
            else:
                row_keys[missing] = _hash_keys([hashes[i] for i in missing.tolist()])
        new = ~state.held.contains(keys[rows])
        state.held.add(keys[rows])
        state.held_rows.append((keys[rows], pos[rows], row_keys[rows]))
        # the ok-hash key an identity had when its first row was held
        state.held_ok.append((keys[rows][new], ok_key[rows][new]))

    def resolve_held(self, run: RunInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decide the rows ``classify`` HELD in ``run``, once every row was classified.

        Returns their positions, in order; a verdict for each: UNCHANGED for an identity's
        last row that equals its last ok body, SUPERSEDED for the earlier rows of such an
        identity, else SEND (all the identity's rows, in order: the earlier ones may carry
        values the last one leaves empty); and, for SUPERSEDED, the position of the
        identity's last row (-1 otherwise)."""
        state = run._state
        if not state.held_rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.astype(np.int8), empty
        keys, pos, row_keys = (np.concatenate(p) for p in zip(*state.held_rows, strict=True))
        ok_keys, ok_values = (np.concatenate(p) for p in zip(*state.held_ok, strict=True))
        order = np.lexsort((pos, keys))  # by identity, then file order
        keys, pos, row_keys = keys[order], pos[order], row_keys[order]
        is_last = np.ones(len(keys), dtype=bool)
        is_last[:-1] = keys[1:] != keys[:-1]
        lasts = np.flatnonzero(is_last)
        last_of = lasts[np.searchsorted(lasts, np.arange(len(keys)))]  # each row's group's
        by_ok = np.argsort(ok_keys)
        ok = ok_values[by_ok[np.searchsorted(ok_keys, keys, sorter=by_ok)]]
        unchanged = (row_keys == ok)[last_of]
        verdict = np.where(unchanged, SUPERSEDED, SEND).astype(np.int8)
        verdict[is_last & unchanged] = UNCHANGED
        superseded_by = np.where(verdict == SUPERSEDED, pos[last_of], -1)
        back = np.argsort(pos, kind="stable")
        return pos[back], verdict[back], superseded_by[back]

    def _snapshot(self, job: str, run: RunInfo, n: int, changed_only: bool) -> _Snapshot | None:
        """What ``classify`` looks rows up in: None for ``IN`` queries, else the job's rows in
        memory: its packed index (changed-only, nothing resumed) or a load of ``rows``."""
        state = run._state
        state.classified += n
        snapshot = state.snapshot
        usable = snapshot is not None and (snapshot.with_ok or not changed_only)
        if usable:
            return snapshot
        plain = changed_only and not run.resume_chain
        if plain and not state.index_tried:
            state.index_tried = True
            found = self._read_index(job)
            if found is not None:
                state.snapshot = found[0]
                return state.snapshot
        if state.ledger_rows is None:
            state.ledger_rows = self._conn.execute(
                "SELECT count(*) FROM rows WHERE job = ?", (job,)
            ).fetchone()[0]
        if state.classified < _SNAPSHOT_AFTER * state.ledger_rows:
            return None
        if plain:
            snapshot, folds = self._build_index(job)
            self._write_index(job, snapshot, folds)
        else:
            snapshot = _Snapshot.load(self._conn, job, run.resume_chain, changed_only)
        state.snapshot = snapshot
        return snapshot

    # -- the packed index of a job's rows (changed-only) ---------------------------------------
    def _read_index(self, job: str) -> tuple[_Snapshot, int] | None:
        """The job's index and the fold count it reflects, if it is up to date."""
        conn = self._conn
        conn.execute("BEGIN")  # one read snapshot for the three tables
        try:
            folds = _folds(conn, job)
            row = conn.execute(
                "SELECT folds, keys, ok_keys FROM job_index WHERE job = ?", (job,)
            ).fetchone()
            at = None
            if _has_table(conn, "job_index_pos"):
                at = conn.execute(
                    "SELECT folds, positions FROM job_index_pos WHERE job = ?", (job,)
                ).fetchone()
        finally:
            conn.execute("COMMIT")
        if row is None or row[0] != folds or at is None or at[0] != folds:
            return None
        keys = np.frombuffer(row[1], dtype="<i8").astype(np.int64)
        ok_key = np.frombuffer(row[2], dtype="<i8").astype(np.int64)
        last_pos = np.frombuffer(at[1], dtype="<i8").astype(np.int64)
        if len(last_pos) != len(keys):
            return None
        floor = np.full(len(keys), _FLOOR, dtype=np.int64)
        return _Snapshot(keys, floor, ok_key, True, last_pos), folds

    def _build_index(self, job: str) -> tuple[_Snapshot, int]:
        """The job's index, from ``rows`` (about 1.5 s per million rows)."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            folds = _folds(conn, job)
            cursor = conn.execute(
                "SELECT identity, last_ok_hash, last_pos FROM rows WHERE job = ?", (job,)
            )
            parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            while batch := cursor.fetchmany(65536):
                parts.append(
                    (
                        keys64([r[0] for r in batch]),
                        _hash_keys([r[1] for r in batch]),
                        np.fromiter((r[2] for r in batch), dtype=np.int64, count=len(batch)),
                    )
                )
        finally:
            conn.execute("COMMIT")
        return _Snapshot.from_keys(parts), folds

    def _write_index(self, job: str, snapshot: _Snapshot, folds: int) -> None:
        """Store ``snapshot`` as the job's index as of fold ``folds``, unless rows changed
        since (then the next changed-only run builds it again)."""
        with self._transaction() as conn:
            if _folds(conn, job) != folds:
                return
            conn.execute(
                "INSERT INTO job_index (job, folds, keys, ok_keys) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET folds = excluded.folds, keys = excluded.keys, "
                "ok_keys = excluded.ok_keys",
                (
                    job,
                    folds,
                    snapshot.keys.astype("<i8").tobytes(),
                    snapshot.ok_key.astype("<i8").tobytes(),
                ),
            )
            # Added after schema 2 (an older dmimport leaves it behind, so it is rebuilt).
            conn.execute(_INDEX_POS)
            conn.execute(
                "INSERT INTO job_index_pos (job, folds, positions) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET folds = excluded.folds, "
                "positions = excluded.positions",
                (job, folds, snapshot.last_pos.astype("<i8").tobytes()),
            )

    def _lookup(
        self, job: str, chain: tuple[str, ...], identities: Sequence[str], with_ok: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the position the resumed runs reached for its identity (``_FLOOR`` when
        none), the key of its last ok hash (``_NO_HASH`` when none) and its last position
        (``_FLOOR`` when none), from ``rows``."""
        unique = list(dict.fromkeys(identities))
        columns, params = _columns(chain, with_ok)
        known: dict[str, tuple[int, str | None, int]] = {}
        size = max(1, self._chunk - len(params))
        for start in range(0, len(unique), size):
            chunk = unique[start : start + size]
            query = (
                f"SELECT identity, {columns} FROM rows "
                f"WHERE job = ? AND identity IN ({','.join('?' * len(chunk))})"
            )
            for identity, reached, ok, last in self._conn.execute(query, (*params, job, *chunk)):
                known[identity] = (reached, ok, last)
        found = [known.get(s, _MISSING) for s in identities]
        done = np.fromiter((f[0] for f in found), dtype=np.int64, count=len(found))
        last_pos = np.fromiter((f[2] for f in found), dtype=np.int64, count=len(found))
        return done, _hash_keys([f[1] for f in found]), last_pos

    @_guarded
    def record(self, job: str, run_id: str, items: Sequence[tuple[str, int, str, str]]) -> None:
        """Record final outcomes ``(identity, pos, status, hash)``; one committed transaction.

        ``status`` is ok, failed, rejected or not_sent; an ok outcome also becomes the row's
        last ok hash (what changed-only compares with) when the run's journal is folded.
        Items with an empty identity are skipped.
        """
        statuses = {item[2] for item in items}
        if not statuses <= ROW_STATUSES:
            raise ValueError(f"unknown row status {sorted(statuses - ROW_STATUSES)}")
        self._check_run(job, run_id)
        params = [(run_id, ident, pos, st, h) for ident, pos, st, h in items if ident]
        if not params:
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO run_rows (run_id, identity, pos, status, hash) VALUES (?, ?, ?, ?, ?)",
                params,
            )

    def _check_run(self, job: str, run_id: str) -> None:
        known = self._run_jobs.get(run_id)
        if known is None:
            row = self._conn.execute("SELECT job FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise LedgerError(f"run {run_id} is not in ledger {self.path}; call begin_run")
            known = self._run_jobs[run_id] = row[0]
        if known != job:
            raise LedgerError(f"run {run_id} belongs to job '{known}', not '{job}'")

    @_guarded
    def record_failed(self, run_id: str, items: Sequence[tuple[str, int, str, str]]) -> None:
        """Remember rows of ``run_id`` that did not get through: ``(file, line, identity,
        status)`` with status failed, rejected or not_sent."""
        if not items:
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO run_rows_failed (run_id, file, line, identity, status) "
                "VALUES (?, ?, ?, ?, ?)",
                [(run_id, file, line, identity, status) for file, line, identity, status in items],
            )

    @_guarded
    def failed_rows(self, run_id: str) -> list[tuple[str, int, str, str]]:
        """The rows to retry for ``run_id``: ``(file, line, identity, status)``, by file, line.

        Only the run's own: a resumed run sends again every row the runs it resumed did not
        deliver, so their failures are its own report's (and its retry list's), or were
        delivered by it. The last entry wins for a (file, line) listed twice.
        """
        picked: dict[tuple[str, int], tuple[str, int, str, str]] = {}
        for file, line, identity, status in self._conn.execute(
            "SELECT file, line, identity, status FROM run_rows_failed WHERE run_id = ? "
            "ORDER BY rowid",
            (run_id,),
        ):
            picked[(file, line)] = (file, line, identity, status)
        return [picked[k] for k in sorted(picked)]

    def delivered_positions(
        self, job: str, run_id: str, identities: Sequence[str]
    ) -> dict[str, int]:
        """For each of ``identities`` that ``run_id`` delivered (the platform answered ok),
        the position of the last row of it the run delivered, as far as the ledger knows:
        the run's journal if it was not folded yet, else ``rows`` while the run is still the
        identity's last. ``dmimport retry`` uses it not to send again a row a later row of its
        customer overrode."""
        unique = list(dict.fromkeys(i for i in identities if i))
        found: dict[str, int] = {}
        size = max(1, self._chunk - 2)
        for start in range(0, len(unique), size):
            chunk = unique[start : start + size]
            marks = ",".join("?" * len(chunk))
            for identity, pos in self._conn.execute(
                "SELECT identity, MAX(pos) FROM run_rows WHERE run_id = ? AND status = 'ok' "
                f"AND identity IN ({marks}) GROUP BY identity",
                (run_id, *chunk),
            ):
                found[identity] = max(pos, found.get(identity, pos))
            for identity, pos in self._conn.execute(
                "SELECT identity, last_pos FROM rows WHERE job = ? AND last_run_id = ? "
                f"AND last_status = 'ok' AND identity IN ({marks})",
                (job, run_id, *chunk),
            ):
                found[identity] = max(pos, found.get(identity, pos))
        return found

    # -- locks ---------------------------------------------------------------------------------
    def lock_path(self, job: str) -> Path:
        """The sidecar file ``<ledger>.<job>.lock`` that ``lock(job)`` flocks."""
        return lock_path(self.path, job)

    def lock(self, job: str) -> contextlib.AbstractContextManager[None]:
        """Hold ``job``'s lock for the ``with`` block; LockedError if another run holds it.

        An exclusive ``flock`` on a sidecar file: the kernel releases it when the holder dies,
        however it dies, so a killed run never leaves a stale lock. The file is never deleted
        (deleting it would let two processes lock two different files).
        """
        return self._lock(job)

    @contextlib.contextmanager
    def _lock(self, job: str) -> Iterator[None]:
        path = self.lock_path(job)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(f"cannot open lock file {path}: {exc.strerror}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(self._locked_message(job, fd)) from None
            holder = {"pid": os.getpid(), "host": self._host, "started": _now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            self._held.add(job)
            try:
                yield
            finally:
                self._held.discard(job)
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _locked_message(self, job: str, fd: int) -> str:
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            who = f"pid {holder['pid']}"
            if holder.get("host") != self._host:
                who += f" on {holder.get('host')}"
            who += f", started {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "pid unknown"  # the holder has not written its name yet
        return (
            f"job '{job}' is already running ({who}); wait for it to finish, or stop that "
            f"process, then run again (lock file {self.lock_path(job)})"
        )


def lock_path(ledger: Path, job: str) -> Path:
    """The sidecar file ``<ledger>.<job>.lock`` that ``Ledger.lock(job)`` flocks."""
    return ledger.with_name(f"{ledger.name}.{quote(job, safe='')}.lock")


# -- classification helpers ----------------------------------------------------------------------
#: "the resumed runs did not reach this identity" (positions are >= 0)
_FLOOR = -1
#: the key of "no ok hash"; a real hash mapping to it is merely never taken as unchanged
_NO_HASH = 0
_MISSING = (_FLOOR, None, _FLOOR)

_INDEX_POS = """
CREATE TABLE IF NOT EXISTS job_index_pos (
    job TEXT PRIMARY KEY,
    folds INTEGER NOT NULL,
    positions BLOB NOT NULL
)
"""


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _columns(chain: tuple[str, ...], with_ok: bool) -> tuple[str, tuple[str, ...]]:
    """SQL for (position reached by the resumed runs, last ok hash) of a ``rows`` row."""
    reached = str(_FLOOR)
    if chain:
        reached = (
            f"CASE WHEN last_run_id IN ({','.join('?' * len(chain))}) "
            f"AND last_status = 'ok' THEN last_pos ELSE {_FLOOR} END"
        )
    return f"{reached}, {'last_ok_hash' if with_ok else 'NULL'}, last_pos", chain


def _hash_key(value: str | None) -> int:
    """A 64-bit key for a properties hash, the same in every process: exact for 16 hex
    digits (what the mapper makes), else ``rowhash.keys64`` of the text."""
    return int(_hash_keys_one_by_one([value])[0])


def _hash_keys_one_by_one(values: Sequence[str | None]) -> np.ndarray:
    """``_hash_key`` of each value; the ones that are not 16 hex digits hashed together."""
    keys = np.full(len(values), _NO_HASH, dtype=np.int64)
    other: list[int] = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if len(value) == 16 and _HEX_DIGITS.issuperset(value):
            keys[i] = int(value, 16) - (1 << 63)
        else:
            other.append(i)
    if other:
        keys[other] = keys64([values[i] for i in other])  # type: ignore[misc]
    return keys


def _hash_keys(values: Sequence[str | None]) -> np.ndarray:
    """``_hash_key`` of each value, vectorized when they are all 16 hex digits (or None)."""
    n = len(values)
    arr = pa.array(values, type=pa.string())
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1)
    if data_buf is None or not (np.diff(offsets)[valid] == 16).all():
        return _hash_keys_one_by_one(values)
    nibbles = _HEX[np.frombuffer(data_buf, dtype=np.uint8, count=int(offsets[-1]))]
    if (nibbles == 255).any():
        return _hash_keys_one_by_one(values)
    nibbles = nibbles.reshape(-1, 16)
    packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])
    unsigned = packed.view(">u8").ravel().astype(np.uint64)
    keys = np.full(n, _NO_HASH, dtype=np.int64)
    keys[valid] = as_keys(unsigned)
    return keys


def _search(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Where each needle is or would be in the sorted, non-empty ``haystack`` (clipped to
    its last index). Sorting the needles first makes the search three times faster."""
    order = np.argsort(needles)
    at = np.empty(len(needles), dtype=np.intp)
    at[order] = np.searchsorted(haystack, needles[order])
    return at.clip(max=len(haystack) - 1)


class _HashSet:
    """A growing set of int64 keys: a sorted array, 8 bytes a key."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.int64)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if len(self._keys) == 0:
            return np.zeros(len(keys), dtype=bool)
        return self._keys[_search(self._keys, keys)] == keys

    def add(self, keys: np.ndarray) -> None:
        new = np.unique(keys)
        new = new[~self.contains(new)]
        if len(new):
            self._keys = np.insert(self._keys, np.searchsorted(self._keys, new), new)


@dataclass
class _Snapshot:
    """The job's rows in memory, by identity key (``rowhash.keys64``)."""

    keys: np.ndarray  # sorted int64
    done: np.ndarray  # int64: position the resumed runs reached, or _FLOOR
    ok_key: np.ndarray  # int64: ``_hash_key`` of the last ok hash
    with_ok: bool  # whether ok_key was loaded (changed-only)
    last_pos: np.ndarray  # int64: the identity's last position (``rows.last_pos``)
    _directory: tuple[int, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls, conn: sqlite3.Connection, job: str, chain: tuple[str, ...], with_ok: bool
    ) -> _Snapshot:
        columns, params = _columns(chain, with_ok)
        where = "job = ?"
        if not with_ok:  # resuming only: the other rows cannot be DONE
            where += f" AND last_run_id IN ({','.join('?' * len(chain))})"
            params = (*params, job, *chain)
        else:
            params = (*params, job)
        cursor = conn.execute(f"SELECT identity, {columns} FROM rows WHERE {where}", params)
        parts: list[tuple[np.ndarray, ...]] = []
        while batch := cursor.fetchmany(65536):
            m = len(batch)
            parts.append(
                (
                    keys64([r[0] for r in batch]),
                    np.fromiter((r[1] for r in batch), dtype=np.int64, count=m),
                    _hash_keys([r[2] for r in batch]) if with_ok else np.zeros(m, np.int64),
                    np.fromiter((r[3] for r in batch), dtype=np.int64, count=m),
                )
            )
        return cls._sorted(parts, with_ok)

    @classmethod
    def from_keys(cls, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> _Snapshot:
        """A changed-only snapshot from (identity keys, ok-hash keys, last positions)."""
        return cls._sorted(
            [(k, np.full(len(k), _FLOOR, np.int64), ok, at) for k, ok, at in parts], True
        )

    @classmethod
    def _sorted(cls, parts: list[tuple[np.ndarray, ...]], with_ok: bool) -> _Snapshot:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, with_ok, empty)
        keys, done, ok_key, last_pos = (np.concatenate(p) for p in zip(*parts, strict=True))
        order = np.argsort(keys, kind="stable")
        keys, done, ok_key, last_pos = keys[order], done[order], ok_key[order], last_pos[order]
        # Two identities with one key (odds about 3e-8 for a million rows): forget both, so
        # that their rows are simply sent.
        clash = np.zeros(len(keys), dtype=bool)
        same = keys[1:] == keys[:-1]
        clash[1:] |= same
        clash[:-1] |= same
        done[clash] = _FLOOR
        ok_key[clash] = _NO_HASH
        last_pos[clash] = _FLOOR
        return cls(keys, done, ok_key, with_ok, last_pos)

    def updated(self, keys: np.ndarray, ok_key: np.ndarray, last_pos: np.ndarray) -> _Snapshot:
        """This changed-only snapshot with the ok-hash keys and last positions of ``keys``
        replaced or added."""
        if len(keys) == 0:
            return self
        replaced = np.zeros(len(self.keys), dtype=bool)
        if len(self.keys):
            at = _search(self.keys, keys)
            replaced[at[self.keys[at] == keys]] = True
        keep = ~replaced
        parts: list[tuple[np.ndarray, ...]] = [
            (self.keys[keep], self.done[keep], self.ok_key[keep], self.last_pos[keep])
        ]
        parts.append((keys, np.full(len(keys), _FLOOR, np.int64), ok_key, last_pos))
        return self._sorted(parts, True)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key: (position reached by the resumed runs, ok-hash key, last position), as
        ``_lookup``."""
        n = len(keys)
        if len(self.keys) == 0:
            floor = np.full(n, _FLOOR, dtype=np.int64)
            return floor, np.full(n, _NO_HASH, dtype=np.int64), floor.copy()
        at = self._locate(keys)
        hit = self.keys[at] == keys
        done = np.where(hit, self.done[at], _FLOOR)
        ok_key = np.where(hit, self.ok_key[at], _NO_HASH)
        last_pos = np.where(hit, self.last_pos[at], _FLOOR)
        return done, ok_key, last_pos

    def _locate(self, needles: np.ndarray) -> np.ndarray:
        """Where each needle is in ``keys`` (or some index where it is not).

        The keys are hashes, so spread evenly over the int64 range: a directory of their top
        bits (about one key per bucket) turns a binary search, 20 cache misses a needle in a
        million keys, into one or two probes."""
        keys = self.keys
        if len(keys) < 4096:
            return _search(keys, needles)
        if self._directory is None:
            bits = max(1, int(len(keys) - 1).bit_length())
            buckets = (keys.view(np.uint64) ^ _SIGN) >> np.uint64(64 - bits)
            counts = np.bincount(buckets.astype(np.int64), minlength=1 << bits)
            self._directory = (bits, np.concatenate(([0], np.cumsum(counts))))
        bits, start = self._directory
        bucket = ((needles.view(np.uint64) ^ _SIGN) >> np.uint64(64 - bits)).astype(np.int64)
        pos = start[bucket]
        end = start[bucket + 1]
        at = np.zeros(len(needles), dtype=np.int64)
        live = np.flatnonzero(pos < end)
        while len(live):
            p = pos[live]
            found = keys[p] >= needles[live]  # sorted within the bucket: stop at or past it
            at[live[found]] = p[found]
            live = live[~found]
            pos[live] += 1
            live = live[pos[live] < end[live]]
        return at


_SIGN = np.uint64(1 << 63)


@dataclass
class _ClassifyState:
    """What ``classify`` keeps for one run."""

    #: identities classified SEND so far (see ``_follow_first``)
    sent: _HashSet = field(default_factory=_HashSet)
    #: identities classified HELD so far, and their held rows: (identity keys, positions,
    #: row hash keys) and (identity keys, ok-hash keys) per batch, for ``resolve_held``
    held: _HashSet = field(default_factory=_HashSet)
    held_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    held_ok: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    classified: int = 0
    ledger_rows: int | None = None
    snapshot: _Snapshot | None = None
    index_tried: bool = False


def _folds(conn: sqlite3.Connection, job: str) -> int:
    """How many folds have changed the job's ``rows``."""
    row = conn.execute("SELECT folds FROM job_folds WHERE job = ?", (job,)).fetchone()
    return int(row[0]) if row else 0


def _follow_first(verdict: np.ndarray, keys: np.ndarray) -> None:
    """Within one batch, the rows of an identity after its first SEND or HELD row take that
    verdict (an UNCHANGED row after a SEND row becomes SEND, any row after a HELD row HELD).

    (Identities sent or held in earlier batches are ruled out before: they are in the run's
    ``sent`` and ``held`` sets.)
    """
    lead = np.flatnonzero((verdict == SEND) | (verdict == HELD))
    rest = np.flatnonzero(verdict != DONE)
    if len(lead) == 0 or len(rest) == len(lead):
        return
    first_keys, first = np.unique(keys[lead], return_index=True)
    first_at = lead[first]
    at = np.searchsorted(first_keys, keys[rest]).clip(max=len(first_keys) - 1)
    later = (first_keys[at] == keys[rest]) & (first_at[at] < rest)
    verdict[rest[later]] = verdict[first_at[at[later]]]


# -- helpers -----------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _canonical(files: list[dict[str, Any]]) -> str:
    return json.dumps(files, sort_keys=True, separators=(",", ":"))


_SQLITE_HEADER = b"SQLite format 3\x00"
#: a ledger's meta table is among its first pages: a damaged file holding this early on is one
_LEDGER_MARK = APPLICATION.encode()
_MARK_SCAN = 1 << 20


def _not_a_ledger(path: Path, exc: BaseException) -> LedgerError:
    """An SQLite file that cannot be read: a damaged ledger may be moved aside; anything
    else is somebody else's file, which dmimport never advises to move."""
    try:
        with open(path, "rb") as fh:
            ours = _LEDGER_MARK in fh.read(_MARK_SCAN)
    except OSError:
        ours = False
    if ours:
        return LedgerError(
            f"ledger {path} is a damaged dmimport ledger ({exc}); it was left untouched. "
            f"Move it aside with its -wal and -shm files (mv {path} {path}.bad) to start a new "
            "ledger, or set state.path to another file"
        )
    return LedgerError(
        f"{path} is not a dmimport ledger (an SQLite database that cannot be read: {exc}); "
        "it was left untouched. Set state.path to another file"
    )


def _refuse_foreign_or_unwritable(path: Path) -> None:
    """Before SQLite opens ``path``: refuse a file that is not an SQLite database (never ours
    to touch), then one this process cannot write (named with the actual cause)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except OSError:
        head = b""  # unreadable: the access check says why
    if head and head != _SQLITE_HEADER:
        raise LedgerError(
            f"{path} is not a dmimport ledger (not an SQLite database); it was left untouched. "
            "Set state.path to another file (a new one is created there)"
        )
    problem = _access_problem(path)
    if problem is not None:
        raise problem


def _access_problem(path: Path) -> LedgerError | None:
    """Why the ledger at ``path`` (or SQLite's -wal and -shm files next to it) cannot be
    written by this process, if it cannot: a read-only file system, or permissions."""
    try:
        readonly = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly:
        return LedgerError(
            f"ledger {path} is on a read-only file system; it was left untouched. "
            f"{_fix_hint(errno.EROFS)}"
        )
    user = f"this user (uid {os.geteuid()})"
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return LedgerError(
                f"ledger {path}: {file} cannot be read and written by {user}: permission "
                f"denied; it was left untouched. {_fix_hint(errno.EACCES)}"
            )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return LedgerError(
            f"ledger {path}: its folder {path.parent} cannot be written by {user} (SQLite "
            f"keeps the -wal and -shm files there): permission denied; it was left untouched. "
            f"{_fix_hint(errno.EACCES)}"
        )
    return None


def _fix_hint(code: int | None) -> str:
    if code == errno.EROFS:
        return "Remount it read-write, or set state.path to a file on a writable disk"
    if code in (errno.EACCES, errno.EPERM):
        return (
            "Let the user running dmimport read and write the ledger, its -wal and -shm files "
            "and its folder (chown/chmod), or set state.path to a place it can write"
        )
    return "Set state.path to a writable place"


def _make_private(path: Path) -> None:
    """The ledger and its -wal and -shm files: readable by their owner only (they hold
    customer identities), whatever mode they had."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            pass
        except OSError as exc:  # not its owner: say so, the run can still go on
            log.warning("cannot make %s private (mode 600): %s", file, exc.strerror)


def _schema_names(conn: sqlite3.Connection, path: Path) -> set[str]:
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:  # 'file is not a database', 'malformed'
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            raise _not_a_ledger(path, exc) from exc
        raise


def _create(conn: sqlite3.Connection) -> None:
    """Lay out a new ledger in an empty file (an empty SQLite file holds nothing to lose)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created it while this one waited for the write lock.
        if not {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("application", APPLICATION),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created", _now()),
                ],
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _validate(conn: sqlite3.Connection, path: Path) -> None:
    names = _schema_names(conn, path)
    meta: dict[str, str] = {}
    if "meta" in names:
        with contextlib.suppress(sqlite3.DatabaseError):
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise LedgerError(
            f"ledger {path} is an SQLite database that dmimport did not create (no "
            f"'{APPLICATION}' meta); it was left untouched. Set state.path to another file"
        )
    version = meta.get("schema_version", "")
    if not version.isdigit():
        raise LedgerError(
            f"ledger {path} has no valid schema_version ({version!r}); it was left untouched. "
            f"Move it aside (mv {path} {path}.bad) to start a new ledger"
        )
    if int(version) > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {path} has schema_version {version}, newer than this dmimport supports "
            f"({SCHEMA_VERSION}); upgrade dmimport, or set state.path to another file"
        )
    missing = {"runs", "rows", "run_rows", "run_rows_failed"} - names
    if missing:
        raise LedgerError(
            f"ledger {path} lacks table(s) {', '.join(sorted(missing))}; it was left "
            f"untouched. Move it aside (mv {path} {path}.bad) to start a new ledger"
        )


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring an older ledger (already validated) to this schema; its data is kept."""
    if _schema_version(conn) >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _schema_version(conn) < SCHEMA_VERSION:  # another process may have done it
            for statement in _SCHEMA_2.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0])


def _process_alive(pid: int, started: str) -> bool:
    """Whether ``pid`` on this host may still be the process that began a run at ``started``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    proc = _proc_start(pid)
    if proc is None:
        return True  # no /proc (macOS): a live pid is taken as the run
    state, start = proc
    if state in ("Z", "X"):
        return False
    try:
        run_start = datetime.fromisoformat(started).timestamp()
    except ValueError:
        return True
    # After a reboot or a long pause the pid may belong to a process started since.
    return start <= run_start + _PID_REUSE_SLACK_S


def _proc_start(pid: int) -> tuple[str, float] | None:
    """(state, start time as a Unix timestamp) of ``pid`` from Linux's /proc, if there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        with open("/proc/stat") as fh:
            btime = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
        return fields[0], btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
