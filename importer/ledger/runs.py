"""The ``runs`` table: opening a run (and finding what it resumes), closing it, listing runs."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import LedgerError
from .classify import RunInfo
from .lock import refuse_if_alive
from .schema import now, transaction

#: statuses ``end_run`` accepts; ``interrupted`` (Ctrl-C, SIGTERM) is resumable like a kill
END_STATUSES = frozenset({"done", "aborted", "interrupted"})

_RUN_COLUMNS = (
    "run_id, job, started, finished, status, config_sha256, files_json, counts_json, "
    "exit_code, resumed_from, pid, host"
)


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

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> RunRecord:
        """A ``runs`` row, its columns in ``_RUN_COLUMNS`` order."""
        rid, job, started, finished, status, config, files, counts, code, resumed, pid, host = row
        duration = None
        if finished is not None:
            delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
            duration = delta.total_seconds()
        return cls(
            run_id=rid,
            job=job,
            started=started,
            finished=finished,
            duration_s=duration,
            counts=json.loads(counts) if counts else {},
            exit_code=code,
            status=status,
            resumed_from=resumed,
            config_sha256=config,
            files=json.loads(files),
            pid=pid,
            host=host,
        )


def mark_killed(conn: sqlite3.Connection, job: str, *, host: str, holding: bool) -> None:
    """Mark the job's runs left ``running`` by a process that is gone ``killed``;
    LockedError if such a process is still alive (``holding``: this one holds the job lock)."""
    with transaction(conn):
        unfinished = conn.execute(
            "SELECT run_id, pid, host, started FROM runs WHERE job = ? AND status = 'running'",
            (job,),
        ).fetchall()
        for rid, pid, run_host, started in unfinished:
            refuse_if_alive(job, rid, pid, run_host, started, this_host=host, holding=holding)
        conn.execute(
            "UPDATE runs SET status = 'killed' WHERE job = ? AND status = 'running'", (job,)
        )


def start_run(
    conn: sqlite3.Connection,
    path: Path,
    job: str,
    run_id: str,
    config_sha256: str,
    files: list[dict[str, Any]],
    *,
    resume: bool,
    host: str,
) -> RunInfo:
    """Insert run ``run_id``, resuming the job's latest run when it is ``killed`` or
    ``interrupted``, ``resume`` is true, and it had the same config hash and the same file
    fingerprints, in the same order."""
    files_json = json.dumps(files, sort_keys=True, separators=(",", ":"))
    with transaction(conn):
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
                (run_id, job, now(), config_sha256, files_json, resumed_from, os.getpid(), host),
            )
        except sqlite3.IntegrityError:
            raise LedgerError(
                f"run id {run_id} is already in ledger {path}; use a new run id"
            ) from None
        chain = (resumed_from, *_chain(conn, resumed_from)) if resumed_from else ()
    return RunInfo(run_id=run_id, resumed_from=resumed_from, resume_chain=chain)


def _chain(conn: sqlite3.Connection, run_id: str) -> tuple[str, ...]:
    """The runs ``run_id`` resumed, nearest first."""
    chain: list[str] = []
    seen = {run_id}
    current: str | None = run_id
    while current is not None:
        row = conn.execute("SELECT resumed_from FROM runs WHERE run_id = ?", (current,)).fetchone()
        current = row[0] if row else None
        if current is None or current in seen:
            break
        seen.add(current)
        chain.append(current)
    return tuple(chain)


def close_run(
    conn: sqlite3.Connection, run_id: str, status: str, counts: dict[str, int], exit_code: int
) -> None:
    """Write the end of run ``run_id``: its status, counts and exit code."""
    with transaction(conn):
        conn.execute(
            "UPDATE runs SET finished = ?, status = ?, counts_json = ?, exit_code = ? "
            "WHERE run_id = ?",
            (now(), status, json.dumps(counts, sort_keys=True), exit_code, run_id),
        )


def list_runs(conn: sqlite3.Connection, job: str | None, limit: int) -> list[RunRecord]:
    """The latest runs (of ``job``, or of every job), newest first."""
    where, params = ("WHERE job = ?", (job, limit)) if job is not None else ("", (limit,))
    found = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY rowid DESC LIMIT ?", params
    ).fetchall()
    return [RunRecord.from_row(row) for row in found]
