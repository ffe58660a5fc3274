"""The job's rows in memory for ``classify``, and the packed index changed-only runs load them
from.

Identities are keyed by ``rowhash.keys64`` and body hashes by their int64 key (what the ledger
stores): a wrong skip needs two identities with one key, about
``rows_in_run * rows_in_ledger / 2**64`` (5e-8 for a million each), and two identities that
do share a key in the ledger are forgotten (their rows are simply sent).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .rowhash import keys64
from .schema import transaction

#: "the resumed runs did not reach this identity" (positions are >= 0)
FLOOR = -1
#: the key of "no ok hash"; a real hash with this key is merely never taken as unchanged
NO_HASH = 0


def hash_keys(values: Sequence[int | None]) -> np.ndarray:
    """Stored hash keys as int64, ``NO_HASH`` for NULL."""
    return (
        pa.array(values, type=pa.int64())
        .fill_null(NO_HASH)
        .to_numpy(zero_copy_only=False, writable=True)
    )


def row_columns(chain: tuple[str, ...], with_ok: bool) -> tuple[str, tuple[str, ...]]:
    """SQL for (position reached by the resumed runs, last ok hash) of a ``rows`` row."""
    reached = str(FLOOR)
    if chain:
        reached = (
            f"CASE WHEN last_run_id IN ({','.join('?' * len(chain))}) "
            f"AND last_status = 'ok' THEN last_pos ELSE {FLOOR} END"
        )
    return f"{reached}, {'last_ok_hash' if with_ok else 'NULL'}, last_pos", chain


def search(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Where each needle is or would be in the sorted, non-empty ``haystack`` (clipped to
    its last index). Sorting the needles first makes the search three times faster."""
    order = np.argsort(needles)
    at = np.empty(len(needles), dtype=np.intp)
    at[order] = np.searchsorted(haystack, needles[order])
    return at.clip(max=len(haystack) - 1)


class HashSet:
    """A growing set of int64 keys: a sorted array, 8 bytes a key."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.int64)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if len(self._keys) == 0:
            return np.zeros(len(keys), dtype=bool)
        return self._keys[search(self._keys, keys)] == keys

    def add(self, keys: np.ndarray) -> None:
        new = np.unique(keys)
        new = new[~self.contains(new)]
        if len(new):
            self._keys = np.insert(self._keys, np.searchsorted(self._keys, new), new)


@dataclass
class Snapshot:
    """The job's rows in memory, by identity key (``rowhash.keys64``)."""

    keys: np.ndarray  # sorted int64
    done: np.ndarray  # int64: position the resumed runs reached, or FLOOR
    ok_key: np.ndarray  # int64: the key of the last ok hash (as stored), NO_HASH when none
    with_ok: bool  # whether ok_key was loaded (changed-only)
    last_pos: np.ndarray  # int64: the identity's last position (``rows.last_pos``)
    _directory: tuple[int, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls, conn: sqlite3.Connection, job: str, chain: tuple[str, ...], with_ok: bool
    ) -> Snapshot:
        columns, params = row_columns(chain, with_ok)
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
                    hash_keys([r[2] for r in batch]) if with_ok else np.zeros(m, np.int64),
                    np.fromiter((r[3] for r in batch), dtype=np.int64, count=m),
                )
            )
        return cls._sorted(parts, with_ok)

    @classmethod
    def from_keys(cls, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Snapshot:
        """A changed-only snapshot from (identity keys, ok-hash keys, last positions)."""
        return cls._sorted(
            [(k, np.full(len(k), FLOOR, np.int64), ok, at) for k, ok, at in parts], True
        )

    @classmethod
    def _sorted(cls, parts: list[tuple[np.ndarray, ...]], with_ok: bool) -> Snapshot:
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
        done[clash] = FLOOR
        ok_key[clash] = NO_HASH
        last_pos[clash] = FLOOR
        return cls(keys, done, ok_key, with_ok, last_pos)

    def updated(self, keys: np.ndarray, ok_key: np.ndarray, last_pos: np.ndarray) -> Snapshot:
        """This changed-only snapshot with the ok-hash keys and last positions of ``keys``
        replaced or added."""
        if len(keys) == 0:
            return self
        replaced = np.zeros(len(self.keys), dtype=bool)
        if len(self.keys):
            at = search(self.keys, keys)
            replaced[at[self.keys[at] == keys]] = True
        keep = ~replaced
        parts: list[tuple[np.ndarray, ...]] = [
            (self.keys[keep], self.done[keep], self.ok_key[keep], self.last_pos[keep])
        ]
        parts.append((keys, np.full(len(keys), FLOOR, np.int64), ok_key, last_pos))
        return self._sorted(parts, True)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key: (position reached by the resumed runs, ok-hash key, last position), as
        ``_lookup``."""
        n = len(keys)
        if len(self.keys) == 0:
            floor = np.full(n, FLOOR, dtype=np.int64)
            return floor, np.full(n, NO_HASH, dtype=np.int64), floor.copy()
        at = self.locate(keys)
        hit = self.keys[at] == keys
        done = np.where(hit, self.done[at], FLOOR)
        ok_key = np.where(hit, self.ok_key[at], NO_HASH)
        last_pos = np.where(hit, self.last_pos[at], FLOOR)
        return done, ok_key, last_pos

    def locate(self, needles: np.ndarray) -> np.ndarray:
        """Where each needle is in ``keys`` (or some index where it is not).

        The keys are hashes, so spread evenly over the int64 range: a directory of their top
        bits (about one key per bucket) turns a binary search, 20 cache misses a needle in a
        million keys, into one or two probes."""
        keys = self.keys
        if len(keys) < 4096:
            return search(keys, needles)
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


def fold_count(conn: sqlite3.Connection, job: str) -> int:
    """How many folds have changed the job's ``rows``."""
    row = conn.execute("SELECT folds FROM job_folds WHERE job = ?", (job,)).fetchone()
    return int(row[0]) if row else 0


def read_index(conn: sqlite3.Connection, job: str) -> tuple[Snapshot, int] | None:
    """The job's packed index and the fold count it reflects, if it is up to date (None
    when it is missing or behind the job's ``rows``)."""
    conn.execute("BEGIN")  # one read snapshot for the three tables
    try:
        folds = fold_count(conn, job)
        row = conn.execute(
            "SELECT folds, keys, ok_keys FROM job_index WHERE job = ?", (job,)
        ).fetchone()
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
    floor = np.full(len(keys), FLOOR, dtype=np.int64)
    return Snapshot(keys, floor, ok_key, True, last_pos), folds


def build_index(conn: sqlite3.Connection, job: str) -> tuple[Snapshot, int]:
    """The job's index as ``rows`` hold it now, and their fold count (about 1.5 s per million
    rows)."""
    conn.execute("BEGIN")
    try:
        folds = fold_count(conn, job)
        cursor = conn.execute(
            "SELECT identity, last_ok_hash, last_pos FROM rows WHERE job = ?", (job,)
        )
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        while batch := cursor.fetchmany(65536):
            parts.append(
                (
                    keys64([r[0] for r in batch]),
                    hash_keys([r[1] for r in batch]),
                    np.fromiter((r[2] for r in batch), dtype=np.int64, count=len(batch)),
                )
            )
    finally:
        conn.execute("COMMIT")
    return Snapshot.from_keys(parts), folds


def write_index(conn: sqlite3.Connection, job: str, snapshot: Snapshot, folds: int) -> None:
    """Store ``snapshot`` as the job's index as of fold ``folds``, unless rows changed
    since (then the next changed-only run builds it again)."""
    with transaction(conn):
        if fold_count(conn, job) != folds:
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
        conn.execute(
            "INSERT INTO job_index_pos (job, folds, positions) VALUES (?, ?, ?) "
            "ON CONFLICT (job) DO UPDATE SET folds = excluded.folds, "
            "positions = excluded.positions",
            (job, folds, snapshot.last_pos.astype("<i8").tobytes()),
        )
