"""The durable per-row ledger of nightly runs: resume a killed run, skip unchanged rows.

One SQLite file (``state.path``, default ``<parent of report.dir>/state/state.db``) in WAL
mode, shared by all jobs. It remembers, per job and row identity, the last outcome and the
hash of the last body the platform accepted, plus the runs themselves and the rows each run
could not deliver::

    meta              application = 'dmimport-ledger', schema_version = 4
    runs              one row per run: job, times, status, config hash, file fingerprints,
                      counts, exit code, the run it resumed, pid and host
    rows              (job, identity) -> last status, last hash, last ok hash, run, position
    run_rows          the outcomes a run recorded and that are not yet in ``rows`` (below)
    run_rows_failed   (run, file, line, identity, status) of rows that ended failed,
                      rejected or not_sent: what ``dmimport retry RUN_ID`` re-reads
    job_folds, job_index, job_index_pos
                      the job's rows packed for changed-only runs (``index``)
    requests          (account, quota day, job) -> requests made: the daily quota
                      (``requests``)

Hashes are INTEGER: the int64 key (``rowhash.as_keys``) of the 64-bit ``dmh64`` hash of the
row's mapped properties (``importer.map``); NULL for a row without one. ``schema`` upgrades
older ledgers, whose hashes were hex TEXT, in place.

A row's ``pos`` is its place in its run (``batch.position``: by file, then line). Within one
run, rows of one identity are delivered in that order, so "the resumed run got this far for
identity X" is ``rows.last_pos >= pos``, even when X appears several times in a file.

Every ``record`` is one committed transaction: a process killed between two calls loses
nothing it recorded (WAL, ``synchronous=NORMAL``; a power loss may lose the last commits, whose
rows are then sent again -- harmless, sends are idempotent). A file that is not our ledger is
refused with a ``LedgerError`` and never modified.

Why a journal: a run records its outcomes in arrival order, which is random with respect to
``rows``' key order; upserting them one by one dirties a page per row (about 20,000 rows/s on
a million-row ledger). ``record`` appends to ``run_rows`` instead (about 300,000 rows/s of CPU
in batches of 200), and the journal is folded into ``rows`` in key order when the run ends
(``end_run``, ``fold``), or, for a run that died, by the job's next ``begin_run``.
``classify`` only needs the outcomes of earlier runs, so it reads ``rows`` alone.

Threads: one ``Ledger`` (one SQLite connection) is used by one thread at a time; it is opened
with ``check_same_thread=False`` so that it may be handed over, but calls must never overlap.
The pipeline records from a writer thread of its own (``recorder.OutcomeRecorder``) and
classifies in its producer thread on a second ``Ledger`` of the same file (``reader``): what
``classify`` remembers about a run lives in the run's ``RunInfo``, not in the ``Ledger``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from ..errors import DiskFullError, LedgerError
from .access import (
    access_problem,
    fix_hint,
    make_private,
    not_a_ledger,
    refuse_foreign_or_unwritable,
)
from .baseline import Baselines
from .classify import SNAPSHOT_AFTER, Classifier, RunInfo
from .fold import fold, fold_job
from .index import Snapshot, build_index, read_index
from .lock import job_lock, lock_path
from .requests import add_requests, requests_on
from .runs import (
    END_STATUSES,
    RunRecord,
    close_run,
    delivered_count,
    delivered_positions,
    find_run,
    list_runs,
    mark_killed,
    peek_run,
    start_run,
)
from .schema import create, schema_names, transaction, upgrade, validate

ROW_STATUSES = frozenset({"ok", "failed", "rejected", "not_sent"})

BUSY_TIMEOUT_MS = 10_000
#: at most this many identities per ``IN (...)`` lookup (and SQLite's parameter limit)
_CHUNK = 32_000
#: journal rows folded per transaction, so that other jobs never wait long for the write lock
FOLD_CHUNK = 100_000

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
            raise sqlite_error(self.path, exc) from exc

    return wrapper


class Ledger:
    """The ledger file at ``path``, opened (or created, mode 0600), validated and upgraded.

    ``snapshot_after``: ``classify`` switches from ``IN`` queries to an in-memory snapshot of
    the job's rows once a run classified this share of them (0 at once, ``math.inf`` never).
    ``fold_chunk``: journal rows folded into ``rows`` per transaction.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        snapshot_after: float = SNAPSHOT_AFTER,
        fold_chunk: int = FOLD_CHUNK,
    ) -> None:
        self.path = Path(path)
        self.snapshot_after = snapshot_after
        self.fold_chunk = fold_chunk
        self._host = socket.gethostname()
        self._held: set[str] = set()
        self._run_jobs: dict[str, str] = {}
        self._conn = open_connection(self.path)
        # Larger IN lists are faster (SQLite sorts them, then walks the index in order).
        limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._chunk = max(100, min(_CHUNK, limit - 1))
        self._classifier = Classifier(self._conn, self._chunk, snapshot_after)

    def reader(self) -> Ledger:
        """Another ``Ledger`` of the same file and options, on its own connection (a thread's)."""
        return Ledger(self.path, snapshot_after=self.snapshot_after, fold_chunk=self.fold_chunk)

    def close(self) -> None:
        """Close the file. Idempotent. Locks taken with ``lock()`` stay with their ``with``."""
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        if that process is still alive. Then the job's latest run is resumed when it did not
        end ``done`` (``runs.RESUMABLE``: killed, interrupted, quota, aborted), ``resume`` is
        true, and it had the same config hash and the same file fingerprints, in order."""
        mark_killed(self._conn, job, host=self._host, holding=job in self._held)
        fold_job(self._conn, job, self.fold_chunk)
        run = start_run(
            self._conn, self.path, job, run_id, config_sha256, files, resume=resume,
            host=self._host,
        )  # fmt: skip
        self._run_jobs[run_id] = job
        return run

    @_guarded
    def peek_run(self, job: str, config_sha256: str, files: list[dict[str, Any]]) -> RunInfo:
        """What ``begin_run`` would open, read only (``runs.peek_run``)."""
        return peek_run(self._conn, job, config_sha256, files)

    @_guarded
    def fold_run(self, run_id: str) -> None:
        """Fold what run ``run_id`` recorded so far into ``rows`` (a few seconds per million
        rows), leaving its status as it is. ``end_run`` does it too; a caller with more to do
        before the run counts as over (write its report) folds first, then ends it."""
        fold(self._conn, self._job_of(run_id), run_id, self.fold_chunk)

    @_guarded
    def end_run(self, run_id: str, *, status: str, counts: dict[str, int], exit_code: int) -> None:
        """Close a run: ``done``, ``aborted`` (fatal errcode), ``interrupted`` (resumable),
        ``refused`` (it did not fit in the daily quota and sent nothing) or ``held`` (guard:).

        What it recorded is folded into ``rows`` first (a few seconds per million rows), and
        the status written last: a process killed in the fold leaves the run ``running``, so
        the job's next run finds it ``killed``, folds the rest and resumes it."""
        if status not in END_STATUSES:
            raise ValueError(f"end_run status must be one of {sorted(END_STATUSES)}: {status!r}")
        fold(self._conn, self._job_of(run_id), run_id, self.fold_chunk)
        close_run(self._conn, run_id, status, counts, exit_code)

    def _job_of(self, run_id: str) -> str:
        found = self._conn.execute("SELECT job FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if found is None:
            raise LedgerError(f"run {run_id} is not in ledger {self.path}")
        return str(found[0])

    @_guarded
    def runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The latest runs (of ``job``, or of every job), newest first."""
        return list_runs(self._conn, job, limit)

    @_guarded
    def run(self, run_id: str) -> RunRecord | None:
        """Run ``run_id`` as ``runs`` lists it (None: not in this ledger)."""
        return find_run(self._conn, run_id)

    @_guarded
    def delivered(self, job: str, run: RunInfo) -> int:
        """How many row identities the runs ``run`` resumes delivered: the rows it skips."""
        return delivered_count(self._conn, job, run.resume_chain)

    # -- rows ----------------------------------------------------------------------------------
    @_guarded
    def classify(
        self,
        job: str,
        run: RunInfo,
        identities: Sequence[str],
        positions: Sequence[int] | np.ndarray,
        hashes: Sequence[int] | np.ndarray | None,
        *,
        changed_only: bool,
        identity_keys: np.ndarray | None = None,
        judge_by_last: bool = False,
    ) -> np.ndarray:
        """One int8 verdict per row (``classify.Classifier.classify`` says which)."""
        return self._classifier.classify(
            job, run, identities, positions, hashes, changed_only=changed_only,
            identity_keys=identity_keys, judge_by_last=judge_by_last,
        )  # fmt: skip

    def resolve_held(self, run: RunInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decide the rows ``classify`` HELD (``classify.Classifier.resolve_held``)."""
        return self._classifier.resolve_held(run)

    @property
    def baselines(self) -> Baselines:
        """The values the job's rows last carried, for the blast-radius gate (``baseline``)."""
        return Baselines(self._conn, functools.partial(sqlite_error, self.path))

    @_guarded
    def read_index(self, job: str) -> Snapshot | None:
        """The job's packed index (what changed-only runs load); None if missing or stale."""
        found = read_index(self._conn, job)
        return None if found is None else found[0]

    @_guarded
    def build_index(self, job: str) -> Snapshot:
        """The job's packed index as its ``rows`` are now (not stored)."""
        return build_index(self._conn, job)[0]

    @_guarded
    def record(
        self, job: str, run_id: str, items: Sequence[tuple[str, int, str, int | None]]
    ) -> None:
        """Record final outcomes ``(identity, pos, status, hash)``; one committed transaction.

        ``status`` is ok, failed, rejected or not_sent; ``hash`` the int64 key of the row's
        body hash (``rowhash.as_keys``), None when it has none. An ok outcome's hash also
        becomes the row's last ok hash (what changed-only compares with) when the run's
        journal is folded. Items with an empty identity are skipped."""
        statuses = {item[2] for item in items}
        if not statuses <= ROW_STATUSES:
            raise ValueError(f"unknown row status {sorted(statuses - ROW_STATUSES)}")
        self._check_run(job, run_id)
        params = [(run_id, ident, pos, st, h) for ident, pos, st, h in items if ident]
        if not params:
            return
        with transaction(self._conn) as conn:
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
        with transaction(self._conn) as conn:
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
        """For each of ``identities`` that ``run_id`` delivered (answered ok), the position of
        the last row of it the run delivered, as far as the ledger knows: the run's journal if
        not folded yet, else ``rows`` while the run is still the identity's last. ``dmimport
        retry`` uses it not to send again a row a later row of its customer overrode."""
        return delivered_positions(self._conn, self._chunk, job, run_id, identities)

    # -- the daily quota (``requests``) --------------------------------------------------------
    @_guarded
    def add_requests(self, account: str, day: str, job: str, n: int) -> None:
        """Count ``n`` more requests of ``job`` on ``account`` and quota ``day``."""
        add_requests(self._conn, account, day, job, n)

    @_guarded
    def requests(
        self, day: str, *, account: str | None = None, job: str | None = None
    ) -> dict[tuple[str, str], int]:
        """The requests counted on quota ``day`` by (account, job), of one account or job."""
        return requests_on(self._conn, day, account, job)

    # -- locks ---------------------------------------------------------------------------------
    def lock_path(self, job: str) -> Path:
        """The sidecar file ``<ledger>.<job>.lock`` that ``lock(job)`` flocks."""
        return lock_path(self.path, job)

    def lock(self, job: str) -> contextlib.AbstractContextManager[None]:
        """Hold ``job``'s lock for the ``with`` block; LockedError if another run holds it
        (``lock.job_lock``). While it is held, ``begin_run`` may take over the job's runs
        that another host left unfinished."""
        return job_lock(self.path, job, self._host, self._held)


def open_connection(path: Path) -> sqlite3.Connection:
    """Open (or create, mode 0600) the ledger at ``path``: validated, upgraded, WAL mode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created here, not by SQLite, so that it is private from the first byte; SQLite
        # gives the -wal and -shm files the same mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise LedgerError(
            f"cannot create ledger {path}: {exc.strerror}; {fix_hint(exc.errno)}"
        ) from exc
    if not path.is_file():
        raise LedgerError(f"ledger {path} is not a regular file; set state.path to a file")
    refuse_foreign_or_unwritable(path)
    if path.stat().st_size == 0:
        # an empty file holds nothing to lose: it becomes the ledger, private before
        # SQLite creates its -wal and -shm files with the same mode
        make_private(path)
    try:
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise sqlite_error(path, exc) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Validate with reads only: nothing is written to a file that is not ours.
        if not schema_names(conn, path):
            create(conn)
        validate(conn, path)
        upgrade(conn)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(
                f"ledger {path} cannot use SQLite's WAL mode (got {mode!r}); "
                "put state.path on a local disk"
            )
        conn.execute("PRAGMA synchronous = NORMAL")
        # ours now (validated): private, whatever mode the files had
        make_private(path)
    except sqlite3.Error as exc:
        conn.close()
        raise sqlite_error(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def sqlite_error(path: Path, exc: sqlite3.Error) -> LedgerError | DiskFullError:
    """An SQLite error on the ledger at ``path`` in the user's terms."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return DiskFullError(path, f"no space left on device writing the ledger {path}")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LedgerError(
            f"ledger {path} stayed locked by another process for "
            f"{BUSY_TIMEOUT_MS // 1000} s ({exc}); try again when it is done"
        )
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return not_a_ledger(path, exc)
    if code in (
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_IOERR,
    ):
        problem = access_problem(path)
        if problem is not None:
            return problem
    return LedgerError(f"ledger {path}: {exc}")
