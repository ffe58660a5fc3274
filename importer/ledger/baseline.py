"""What the blast-radius gate (``importer.guard``) compares a run with: per job, the values
its rows last carried, property by property, in a few bytes per customer.

``job_baseline`` holds one row per job: the property names (JSON), the sorted int64
identity keys (``rowhash.keys64``), per identity one uint16 per property (``fingerprint``
of the value's ``hash64``: 0 for no value), and the share of rows with a value per property
in the run that wrote it. That is ``8 + 2 * properties`` bytes per identity (28 for ten
properties), packed as BLOBs like ``job_index``: read at once with ``numpy.frombuffer``.
A 16-bit fingerprint misses a changed value with odds 1 in 65,535: the counts of changed
properties are estimates, good to a few rows in 100,000, which is what a gate needs.

The table is created on first write (``CREATE TABLE IF NOT EXISTS``): a ledger without it is
a job whose values were never recorded (its gate judges shares only).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .index import Snapshot, build_index, read_index, write_index
from .schema import now, transaction

_TABLE = """
CREATE TABLE IF NOT EXISTS job_baseline (
    job TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    keys BLOB NOT NULL,
    fingerprints BLOB NOT NULL,
    present TEXT NOT NULL,
    rows INTEGER NOT NULL,
    updated TEXT NOT NULL
)
"""


def fingerprint(hashes: np.ndarray) -> np.ndarray:
    """uint16 fingerprints of uint64 value hashes: the low 16 bits, 0 kept for "no value"
    (``rowhash.ABSENT``) and a real hash whose low bits are 0 taken as 1."""
    low = (np.asarray(hashes, dtype=np.uint64) & np.uint64(0xFFFF)).astype(np.uint16)
    low[(low == 0) & (hashes != 0)] = 1
    return low


@dataclass
class Baseline:
    """A job's recorded values: ``keys`` sorted int64 identity keys, ``fingerprints`` a
    (len(keys), len(properties)) uint16 matrix, ``present`` each property's share of rows
    with a value in run ``run_id`` (of ``rows`` valid rows)."""

    run_id: str
    properties: list[str]
    keys: np.ndarray
    fingerprints: np.ndarray
    present: dict[str, float]
    rows: int

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per key: whether it is recorded, and its row of ``fingerprints`` (zeros if not)."""
        width = len(self.properties)
        if len(self.keys) == 0:
            return np.zeros(len(keys), dtype=bool), np.zeros((len(keys), width), np.uint16)
        at = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        hit = self.keys[at] == keys
        rows = self.fingerprints[at]
        rows[~hit] = 0
        return hit, rows

    def merged(
        self, run_id: str, keys: np.ndarray, fingerprints: np.ndarray, present: dict[str, float],
        rows: int, properties: list[str],
    ) -> Baseline:  # fmt: skip
        """This baseline updated with a run's rows (sorted unique ``keys``): their
        fingerprints replace the recorded ones; identities the run lacks keep theirs
        (when the properties are the same; otherwise the run's rows alone are kept)."""
        if properties != self.properties or len(self.keys) == 0:
            return Baseline(run_id, properties, keys, fingerprints, present, rows)
        keep = ~np.isin(self.keys, keys, assume_unique=True)
        all_keys = np.concatenate([self.keys[keep], keys])
        all_fp = np.concatenate([self.fingerprints[keep], fingerprints])
        order = np.argsort(all_keys, kind="stable")
        return Baseline(run_id, properties, all_keys[order], all_fp[order], present, rows)


class Baselines:
    """``Ledger.baselines``: the job baselines of a ledger's connection; SQLite's errors
    leave as ``error`` makes them (``LedgerError`` naming the file, ``DiskFullError``)."""

    def __init__(self, conn: sqlite3.Connection, error: Callable[[sqlite3.Error], Exception]):
        self._conn = conn
        self._error = error

    def ok_hashes(self, job: str) -> Snapshot:
        """The job's identities with their last ok hash keys: its packed index, read when up
        to date, else built and stored (a changed-only run then reads it: no second build)."""
        try:
            found = read_index(self._conn, job)
            if found is not None:
                return found[0]
            snapshot, folds = build_index(self._conn, job)
            write_index(self._conn, job, snapshot, folds)
            return snapshot
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def read(self, job: str) -> Baseline | None:
        """Job ``job``'s baseline, None when it has none."""
        try:
            return read_baseline(self._conn, job)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def save(self, job: str, baseline: Baseline) -> int:
        """Store job ``job``'s baseline (replacing its old one); the BLOB bytes written."""
        try:
            return write_baseline(self._conn, job, baseline)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc


def read_baseline(conn: sqlite3.Connection, job: str) -> Baseline | None:
    """Job ``job``'s baseline, None when it has none."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'job_baseline'"
    ).fetchone()
    if exists is None:
        return None
    row = conn.execute(
        "SELECT run_id, properties, keys, fingerprints, present, rows FROM job_baseline "
        "WHERE job = ?",
        (job,),
    ).fetchone()
    if row is None:
        return None
    run_id, props_json, keys, fps, present, rows = row
    properties = list(json.loads(props_json))
    key_array = np.frombuffer(keys, dtype="<i8").astype(np.int64)
    fp = np.frombuffer(fps, dtype="<u2").astype(np.uint16)
    fp = fp.reshape(len(key_array), len(properties))
    return Baseline(run_id, properties, key_array, fp, dict(json.loads(present)), int(rows))


def write_baseline(conn: sqlite3.Connection, job: str, baseline: Baseline) -> int:
    """Store ``baseline`` as job ``job``'s (replacing the old one); the BLOB bytes written."""
    keys = np.ascontiguousarray(baseline.keys, dtype="<i8").tobytes()
    fps = np.ascontiguousarray(baseline.fingerprints, dtype="<u2").tobytes()
    # the run's recorder may still hold its last batch's transaction open on this connection
    # (committed when the run ends): ``transaction`` joins it as a savepoint
    with transaction(conn):
        conn.execute(_TABLE)
        conn.execute(
            "INSERT OR REPLACE INTO job_baseline (job, run_id, properties, keys, fingerprints, "
            "present, rows, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job,
                baseline.run_id,
                json.dumps(baseline.properties, ensure_ascii=False),
                keys,
                fps,
                json.dumps(baseline.present, sort_keys=True),
                baseline.rows,
                now(),
            ),
        )
    return len(keys) + len(fps)
