"""The ``runs`` table: opening a run (and finding what it resumes), closing it, listing runs."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import LedgerError
from .classify import RunInfo
from .lock import refuse_if_alive
from .schema import now, transaction

#: statuses ``end_run`` accepts; ``interrupted`` (Ctrl-C, SIGTERM) is resumable like a kill;
#: ``refused``: the run's plan did not fit in the daily quota and it sent nothing (the next run
#: looks past it for the run to resume); ``held``: the blast-radius gate (``guard:``) held it
#: before a single request (looked past the same way)
END_STATUSES = frozenset({"done", "aborted", "interrupted", "refused", "quota", "held"})
#: the statuses of a run the next run of the job resumes (same config, same files): every run
#: that did not end ``done``. ``quota``: the daily quota ran out, the rest was left
#: ``not_sent``; ``aborted``: an outage (``send.abort_after_failed_rows``, ...), a fatal answer
#: (a wrong SECRET) or the job's own mistake (``send.abort_after_same_refusals``) stopped it:
#: the same command resumes it once the cause is gone, without sending its delivered rows
#: again (a fix in the config changes its hash, and the next run starts afresh instead)
RESUMABLE = ("killed", "interrupted", "quota", "aborted")

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
    status: str  # running | done | aborted | interrupted | killed | quota | refused
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
    """Insert run ``run_id``, resuming the job's latest run when it is ``RESUMABLE`` (any
    status but ``done``), ``resume`` is true, and it had the same config hash and the same file
    fingerprints, in the same order."""
    files_json = _files_json(files)
    with transaction(conn):
        resumed_from = (
            _to_resume(conn, job, config_sha256, files_json, say=True) if resume else None
        )
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


def _files_json(files: list[dict[str, Any]]) -> str:
    return json.dumps(files, sort_keys=True, separators=(",", ":"))


def _to_resume(
    conn: sqlite3.Connection, job: str, config_sha256: str, files_json: str, say: bool = False
) -> str | None:
    """The job's latest run (a ``refused`` or ``held`` one sent nothing: looked past) when it is
    ``RESUMABLE`` and had this config hash and these file fingerprints. With ``say``, a
    resumable latest run that is not resumed is said, with why (``importer.resume``)."""
    latest = conn.execute(
        "SELECT run_id, status, config_sha256, files_json FROM runs WHERE job = ? "
        "AND status NOT IN ('refused', 'held') ORDER BY rowid DESC LIMIT 1",
        (job,),
    ).fetchone()
    if latest is None or latest[1] not in RESUMABLE:
        return None
    if latest[2] == config_sha256 and latest[3] == files_json:
        return str(latest[0])
    if say:
        why = (
            "its config changed"
            if latest[2] != config_sha256
            else _files_changed(latest[3], files_json)
        )
        logging.getLogger("importer.resume").info(
            "not resuming run %s (%s): %s since; every row is sent again",
            latest[0], latest[1], why,
        )  # fmt: skip
    return None


def _files_changed(before_json: str, now_json: str) -> str:
    """Which input files differ between two runs' fingerprints, in words."""
    before = {f.get("path"): f for f in json.loads(before_json)}
    now = {f.get("path"): f for f in json.loads(now_json)}
    if set(before) != set(now) or list(before) != list(now):
        return "its input files are other files"
    changed = [str(p) for p in now if before[p] != now[p]]
    return f"{', '.join(changed)} changed" if changed else "its input files changed"


def peek_run(
    conn: sqlite3.Connection, job: str, config_sha256: str, files: list[dict[str, Any]]
) -> RunInfo:
    """What ``start_run`` would open, read only (``preview``, ``--dry-run``): a run of no id
    with the resume chain it would have. A run left ``running`` by a dead process is not
    resumed here (``begin_run`` marks it ``killed`` first), so the plan is an upper bound."""
    resumed_from = _to_resume(conn, job, config_sha256, _files_json(files))
    chain = (resumed_from, *_chain(conn, resumed_from)) if resumed_from else ()
    return RunInfo(run_id="", resumed_from=resumed_from, resume_chain=chain)


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


def find_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    """Run ``run_id``, if the ledger has it."""
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return RunRecord.from_row(row) if row is not None else None


def delivered_count(conn: sqlite3.Connection, job: str, run_ids: Sequence[str]) -> int:
    """How many of the job's row identities were last delivered (``ok``) by one of ``run_ids``
    (a resume chain, its journals folded): what a run resuming them skips, at most."""
    if not run_ids:
        return 0
    marks = ",".join("?" * len(run_ids))
    row = conn.execute(
        f"SELECT count(*) FROM rows WHERE job = ? AND last_status = 'ok' "
        f"AND last_run_id IN ({marks})",
        (job, *run_ids),
    ).fetchone()
    return int(row[0])


def list_runs(conn: sqlite3.Connection, job: str | None, limit: int) -> list[RunRecord]:
    """The latest runs (of ``job``, or of every job), newest first."""
    where, params = ("WHERE job = ?", (job, limit)) if job is not None else ("", (limit,))
    found = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY rowid DESC LIMIT ?", params
    ).fetchall()
    return [RunRecord.from_row(row) for row in found]


def delivered_positions(
    conn: sqlite3.Connection, per_query: int, job: str, run_id: str, identities: Sequence[str]
) -> dict[str, int]:
    """``Ledger.delivered_positions``: the journal of ``run_id``, then ``rows``, looked up
    ``per_query`` identities at a time."""
    unique = list(dict.fromkeys(i for i in identities if i))
    found: dict[str, int] = {}
    size = max(1, per_query - 2)
    for start in range(0, len(unique), size):
        chunk = unique[start : start + size]
        marks = ",".join("?" * len(chunk))
        for identity, pos in conn.execute(
            "SELECT identity, MAX(pos) FROM run_rows WHERE run_id = ? AND status = 'ok' "
            f"AND identity IN ({marks}) GROUP BY identity",
            (run_id, *chunk),
        ):
            found[identity] = max(pos, found.get(identity, pos))
        for identity, pos in conn.execute(
            "SELECT identity, last_pos FROM rows WHERE job = ? AND last_run_id = ? "
            f"AND last_status = 'ok' AND identity IN ({marks})",
            (job, run_id, *chunk),
        ):
            found[identity] = max(pos, found.get(identity, pos))
    return found
