"""Ledgers as older dmimports wrote them, for the tests of the in-place upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: the tables of a schema-2 ledger (dmimport up to issue 11): hashes as 16 hex digits in TEXT
SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, job TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,
    status TEXT NOT NULL, config_sha256 TEXT NOT NULL, files_json TEXT NOT NULL,
    counts_json TEXT, exit_code INTEGER, resumed_from TEXT, pid INTEGER NOT NULL,
    host TEXT NOT NULL
);
CREATE INDEX runs_job ON runs (job);
CREATE TABLE rows (
    job TEXT NOT NULL, identity TEXT NOT NULL, last_status TEXT NOT NULL, last_hash TEXT,
    last_ok_hash TEXT, last_run_id TEXT NOT NULL, last_pos INTEGER NOT NULL,
    updated TEXT NOT NULL, PRIMARY KEY (job, identity)
) WITHOUT ROWID;
CREATE TABLE run_rows (
    run_id TEXT NOT NULL, identity TEXT NOT NULL, pos INTEGER NOT NULL, status TEXT NOT NULL,
    hash TEXT
);
CREATE INDEX run_rows_run ON run_rows (run_id);
CREATE TABLE run_rows_failed (
    run_id TEXT NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL, identity TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX run_rows_failed_run ON run_rows_failed (run_id);
CREATE TABLE job_folds (job TEXT PRIMARY KEY, folds INTEGER NOT NULL);
CREATE TABLE job_index (
    job TEXT PRIMARY KEY, folds INTEGER NOT NULL, keys BLOB NOT NULL, ok_keys BLOB NOT NULL
);
CREATE TABLE job_index_pos (job TEXT PRIMARY KEY, folds INTEGER NOT NULL, positions BLOB NOT NULL);
"""


def hex16(key: int) -> str:
    """A hash key (what the ledger stores now) as schema 2 stored it: the hash's 16 hex
    digits."""
    return f"{key + (1 << 63):016x}"


def downgrade(path: Path) -> None:
    """Rewrite the ledger at ``path`` as a schema-2 ledger holding the same runs and rows (its
    journals folded already): what dmimport before the INTEGER hashes left."""
    conn = sqlite3.connect(path)
    runs = conn.execute("SELECT * FROM runs ORDER BY rowid").fetchall()
    rows = conn.execute("SELECT * FROM rows").fetchall()
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_2)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("application", "dmimport-ledger"), ("schema_version", "2"), ("created", "x")],
    )
    conn.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * 12)})", runs)
    conn.executemany(
        "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (job, ident, st, None if h is None else hex16(h), None if ok is None else hex16(ok),
             run, pos, upd)
            for job, ident, st, h, ok, run, pos, upd in rows
        ],
    )  # fmt: skip
    conn.commit()
    conn.close()
