"""Folding a run's journal (``run_rows``, appended in arrival order) into ``rows``, in key
order: each page of ``rows`` is written once (about 5 s per million rows)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from .index import hash_keys, read_index, write_index
from .rowhash import keys64
from .schema import now, transaction

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
    last_ok_hash = CASE WHEN excluded.last_status = 'ok' THEN excluded.last_ok_hash
                        ELSE rows.last_ok_hash END,
    last_run_id = excluded.last_run_id,
    last_pos = excluded.last_pos,
    updated = excluded.updated
"""

_COUNT_FOLD = """
INSERT INTO job_folds (job, folds) VALUES (?, 1)
ON CONFLICT (job) DO UPDATE SET folds = folds + 1
"""


def fold_job(conn: sqlite3.Connection, job: str, chunk: int) -> None:
    """Fold the journals of the job's runs that are over, oldest run first."""
    pending = conn.execute(
        "SELECT run_id FROM runs WHERE job = ? AND status <> 'running' "
        "AND EXISTS (SELECT 1 FROM run_rows WHERE run_rows.run_id = runs.run_id) "
        "ORDER BY rowid",
        (job,),
    ).fetchall()
    for (run_id,) in pending:
        fold(conn, job, run_id, chunk)


def fold(conn: sqlite3.Connection, job: str, run_id: str, chunk: int) -> None:
    """Move ``run_id``'s journal into ``rows``, ``chunk`` journal rows per transaction, and
    keep the job's packed index (if it was up to date) up to date.

    The journal is first copied in key order to a temporary table (no write lock on the
    ledger while sorting), then folded a chunk of keys per transaction, so that each page
    of ``rows`` is written once and other jobs never wait long for the write lock.
    Folding a run again is harmless (same run, same positions: same result), so a crash
    in the middle leaves the rest to the next ``begin_run``; the journal is deleted last.
    """
    # Only what is in the journal now: a late ``record`` is left for the next fold.
    last = conn.execute("SELECT max(rowid) FROM run_rows WHERE run_id = ?", (run_id,))
    upto = last.fetchone()[0]
    if upto is None:
        return
    counts = dict(
        conn.execute(
            "SELECT status, count(*) FROM run_rows WHERE run_id = ? AND rowid <= ? GROUP BY status",
            (run_id, upto),
        ).fetchall()
    )
    index = read_index(conn, job)
    conn.execute("DROP TABLE IF EXISTS temp.fold")
    conn.execute(
        "CREATE TEMP TABLE fold AS SELECT identity, pos, status, hash FROM run_rows "
        "WHERE run_id = ? AND rowid <= ? ORDER BY identity, pos, rowid",
        (run_id, upto),
    )
    try:
        stamp = now()
        for start in range(1, sum(counts.values()) + 1, chunk):
            with transaction(conn):
                if start == 1:
                    conn.execute(_COUNT_FOLD, (job,))
                conn.execute(_FOLD, (job, run_id, stamp, start, start + chunk - 1))
        if index is not None:
            # the index as of the fold before, plus what this fold changed
            changed = conn.execute(
                "SELECT identity, last_ok_hash, last_pos FROM rows WHERE job = ? "
                "AND identity IN (SELECT identity FROM temp.fold)",
                (job,),
            ).fetchall()
            snapshot = index[0].updated(
                keys64([r[0] for r in changed]),
                hash_keys([r[1] for r in changed]),
                np.fromiter((r[2] for r in changed), dtype=np.int64, count=len(changed)),
            )
            write_index(conn, job, snapshot, index[1] + 1)
    finally:
        conn.execute("DROP TABLE temp.fold")
    with transaction(conn):
        # A killed run never reported its counts: they are what it recorded.
        conn.execute(
            "UPDATE runs SET counts_json = ? WHERE run_id = ? AND counts_json IS NULL",
            (json.dumps(counts, sort_keys=True), run_id),
        )
        conn.execute("DELETE FROM run_rows WHERE run_id = ? AND rowid <= ?", (run_id, upto))
