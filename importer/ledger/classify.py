"""``classify``: which rows of a run to send, from the outcomes of earlier runs.

A row is DONE when the runs it resumes delivered it (or a later row of its identity), and,
changed-only, UNCHANGED when the platform already holds exactly its body. ``classify`` looks
identities up with ``IN (...)`` queries (about 150,000 rows/s on a million-row ledger) until
the run has classified ``snapshot_after`` times as many rows as the job has in ``rows``; from
then on it uses an in-memory snapshot of the job's rows (24 bytes a row, about 1.4 s per
million rows to load, then about 1,500,000 rows/s; see ``index``). What it remembers about a
run lives in the run's ``RunInfo``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .index import (
    FLOOR,
    NO_HASH,
    HashSet,
    Snapshot,
    build_index,
    hash_keys,
    read_index,
    row_columns,
    write_index,
)
from .rowhash import keys64

#: ``classify`` verdicts
SEND = 0
DONE = 1  # the resumed runs delivered this row, or a later row of its identity
UNCHANGED = 2  # changed-only: the platform already holds exactly this body
#: changed-only, ``judge_by_last``: the identity's last row in the run decides; see
#: ``resolve_held`` at the end of the run
HELD = 3
#: ``resolve_held``: an earlier row of an identity whose last row is UNCHANGED
SUPERSEDED = 4

#: switch ``classify`` to a snapshot once the run classified this share of the job's rows:
#: a lookup costs about as much as loading five rows into the snapshot, and a run that is
#: not small next to the ledger (a nightly re-import) gains from loading it early
SNAPSHOT_AFTER = 0.05

_MISSING = (FLOOR, None, FLOOR)


@dataclass
class ClassifyState:
    """What ``classify`` keeps for one run."""

    #: identities classified SEND so far (see ``follow_first``)
    sent: HashSet = field(default_factory=HashSet)
    #: identities classified HELD so far, and their held rows: (identity keys, positions,
    #: row hash keys) and (identity keys, ok-hash keys) per batch, for ``resolve_held``
    held: HashSet = field(default_factory=HashSet)
    held_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    held_ok: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    classified: int = 0
    ledger_rows: int | None = None
    snapshot: Snapshot | None = None
    index_tried: bool = False

    #: where ``classify`` looks rows up: "queries" (``IN`` lookups), "index" (the job's packed
    #: index, read), "built" (the packed index, built from ``rows`` and stored), "rows" (a
    #: snapshot loaded from ``rows``)
    source: str = "queries"


@dataclass
class RunInfo:
    """The run ``begin_run`` opened. Pass it to ``classify``.

    ``resume_chain`` is the run it resumed, then the run that one resumed, and so on (empty
    when it resumed nothing).
    """

    run_id: str
    resumed_from: str | None
    resume_chain: tuple[str, ...]
    _state: ClassifyState = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._state = ClassifyState()

    @property
    def lookups(self) -> str:
        """Where ``classify`` looks this run's rows up now: "queries", "index", "built" or
        "rows" (see ``ClassifyState.source``)."""
        return self._state.source


class Classifier:
    """``classify`` and ``resolve_held`` on a ledger's connection."""

    def __init__(self, conn: sqlite3.Connection, chunk: int, snapshot_after: float) -> None:
        self._conn = conn
        self._chunk = chunk
        self._snapshot_after = snapshot_after

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
        """One verdict per row, int8: SEND (0), DONE (1: the resumed runs delivered it, ok, or
        a later row of its identity; a row they left failed or not_sent is SEND), UNCHANGED
        (2: only with ``changed_only``; the platform holds this very body).

        Call it for the rows of a run in file order, batch after batch. ``hashes`` are the
        int64 keys of the rows' body hashes (``rowhash.as_keys``), as ``record`` takes them;
        read only with ``changed_only`` (None will do without). ``identity_keys`` are
        ``rowhash.keys64(identities)``, computed here when not given. An empty identity is
        SEND. Once a row of an identity is SEND, every later row of it in the run is SEND too:
        skipping one as unchanged would leave the platform with the earlier row's values.

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
        row_hashes = np.zeros(n, np.int64) if hashes is None else np.asarray(hashes, np.int64)
        snapshot = self._snapshot(job, run, n, changed_only)
        pos = np.asarray(positions, dtype=np.int64)
        if snapshot is not None:
            done, ok_key, last_pos = snapshot.find(keys)
        else:
            done, ok_key, last_pos = self._lookup(job, run.resume_chain, identities, changed_only)
        if "" in identities:
            blank = np.fromiter((not s for s in identities), dtype=bool, count=n)
            done[blank] = FLOOR
            ok_key[blank] = NO_HASH
        is_done = done >= pos
        verdict[is_done] = DONE
        if not changed_only:
            return verdict
        sent = state.sent.contains(keys)
        held = state.held.contains(keys) if judge_by_last else np.zeros(n, dtype=bool)
        known = ~is_done & (ok_key != NO_HASH) & ~sent & ~held
        candidates = np.flatnonzero(known)
        row_keys = np.full(n, NO_HASH, dtype=np.int64)
        if len(candidates):
            row_keys[candidates] = row_hashes[candidates]
            verdict[candidates[row_keys[candidates] == ok_key[candidates]]] = UNCHANGED
        if judge_by_last:
            later = known & (verdict == SEND) & (last_pos > pos)
            verdict[(~is_done & held) | later] = HELD
        follow_first(verdict, keys)
        state.sent.add(keys[verdict == SEND])
        if judge_by_last:
            self._hold(state, verdict, keys, pos, row_hashes, row_keys, ok_key)
        return verdict

    def _hold(
        self,
        state: ClassifyState,
        verdict: np.ndarray,
        keys: np.ndarray,
        pos: np.ndarray,
        hashes: np.ndarray,
        row_keys: np.ndarray,
        ok_key: np.ndarray,
    ) -> None:
        """Remember the HELD rows of a batch for ``resolve_held``."""
        rows = np.flatnonzero(verdict == HELD)
        if len(rows) == 0:
            return
        # rows held as the followers of an earlier one were not compared yet
        missing = rows[row_keys[rows] == NO_HASH]
        row_keys[missing] = hashes[missing]
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

    def _snapshot(self, job: str, run: RunInfo, n: int, changed_only: bool) -> Snapshot | None:
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
            found = read_index(self._conn, job)
            if found is not None:
                state.snapshot, state.source = found[0], "index"
                return state.snapshot
        if state.ledger_rows is None:
            state.ledger_rows = self._conn.execute(
                "SELECT count(*) FROM rows WHERE job = ?", (job,)
            ).fetchone()[0]
        if state.classified < self._snapshot_after * state.ledger_rows:
            return None
        if plain:
            snapshot, folds = build_index(self._conn, job)
            write_index(self._conn, job, snapshot, folds)
            state.source = "built"
        else:
            snapshot = Snapshot.load(self._conn, job, run.resume_chain, changed_only)
            state.source = "rows"
        state.snapshot = snapshot
        return snapshot

    def _lookup(
        self, job: str, chain: tuple[str, ...], identities: Sequence[str], with_ok: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the position the resumed runs reached for its identity (``FLOOR`` when
        none), the key of its last ok hash (``NO_HASH`` when none) and its last position
        (``FLOOR`` when none), from ``rows``."""
        unique = list(dict.fromkeys(identities))
        columns, params = row_columns(chain, with_ok)
        known: dict[str, tuple[int, int | None, int]] = {}
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
        return done, hash_keys([f[1] for f in found]), last_pos


def follow_first(verdict: np.ndarray, keys: np.ndarray) -> None:
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
