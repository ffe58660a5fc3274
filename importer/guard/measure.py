"""What a run is about to do, measured in the pre-pass that already reads every row
(``importer.duplicates.find_duplicates``): ``GuardObserver`` takes each mapped batch, and
``GuardObserver.measure`` compares the run's rows with the ledger.

Per identity (its last row in the run) it keeps its ``keys64`` key, its body hash key, its
position and one uint16 fingerprint per property (``ledger.fingerprint``): 18 + 2 per
property bytes a row in memory, numpy arrays. ``measure`` then classifies every identity as
the ledger knows it: ``new`` (never delivered ok), ``unchanged`` (its body hash is the last
ok one) or ``changed``, whatever ``--changed-only`` says; counts, for the changed ones, the
properties whose fingerprint differs from the job's baseline (``ledger.Baseline``); and
compares each property's share of rows with a value with the previous run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ledger import Baseline, Identities, Ledger, fingerprint, keys64, place
from ..ledger.batch import positions_of
from ..map import Mapped

#: ledger.index's "no ok hash" key
_NO_HASH = 0


@dataclass
class Measured:
    """What the run is about to do (``GuardObserver.measure``)."""

    rows: int  # distinct identities the run sends (the last row of each)
    new: int
    changed: int
    unchanged: int
    deletes: int  # user_delete jobs: the customers the run deletes
    first_run: bool  # the ledger knows no row of the job: never held
    #: for the changed rows, each property whose value changed, and how often
    changed_properties: dict[str, int] = field(default_factory=dict)
    #: per property: share of rows without a value, before (previous run) and now
    null_share: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    #: properties with a value in some rows of the previous run and in none now
    emptied: list[str] = field(default_factory=list)
    #: (file index, line) of some changed and some new rows
    changed_at: list[tuple[int, int]] = field(default_factory=list)
    new_at: list[tuple[int, int]] = field(default_factory=list)
    #: the baseline this run will leave (stored once the run is let through)
    baseline: Baseline | None = None

    def share(self, n: int) -> float:
        return n / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "deletes": self.deletes,
            "first_run": self.first_run,
            "changed_properties": self.changed_properties,
            "null_share": {
                k: {"before": b, "now": n} for k, (b, n) in sorted(self.null_share.items())
            },
            "emptied": self.emptied,
        }


class GuardObserver:
    """Collects, batch by batch, what ``measure`` needs of the rows that pass the checks."""

    def __init__(self, kind: str, event_name: str | None) -> None:
        self._kind = kind
        self._identities = Identities(kind, event_name)
        self._keys: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._fps: list[np.ndarray] = []
        self._properties: list[str] | None = None
        self._present: np.ndarray | None = None
        self._valid = 0

    def add(self, mapped: Mapped, file_index: int) -> None:
        """A mapped batch of file ``file_index`` (mapped with its change hashes)."""
        rows = np.flatnonzero(mapped.ok)
        hashes = mapped.properties_hash
        if len(rows) == 0 or hashes is None:
            return
        _, text = self._identities(mapped, rows)
        labels, values = hashes.columns()  # the rows of mapped.ok
        if self._properties is None:
            self._properties = labels
            self._present = np.zeros(len(labels), dtype=np.int64)
        assert self._present is not None
        self._present += (values != 0).sum(axis=1)
        self._valid += len(rows)
        self._keys.append(keys64(text))
        self._hashes.append(hashes.keys(rows))
        self._positions.append(positions_of(file_index, mapped.lines[rows]))
        self._fps.append(fingerprint(values).T.copy())

    def measure(self, ledger: Ledger, job: str, run_id: str, examples: int) -> Measured:
        """Compare the rows collected with the ledger's record of job ``job``."""
        props = self._properties or []
        width = len(props)
        keys, hashes, pos, fps = _last_of_each(
            _cat(self._keys, np.int64),
            _cat(self._hashes, np.int64),
            _cat(self._positions, np.int64),
            np.concatenate(self._fps) if self._fps else np.zeros((0, width), np.uint16),
        )
        known = ledger.baselines.ok_hashes(job)
        first_run = len(known.keys) == 0
        _, ok_key, _ = known.find(keys)
        delivered = ok_key != _NO_HASH
        same = delivered & (ok_key == hashes)
        changed = delivered & ~same
        present = self._present if self._present is not None else np.zeros(0, np.int64)
        shares = {p: float(present[i]) / self._valid for i, p in enumerate(props)}
        baseline = ledger.baselines.read(job)
        out = Measured(
            rows=len(keys),
            new=int((~delivered).sum()),
            changed=int(changed.sum()),
            unchanged=int(same.sum()),
            deletes=len(keys) if self._kind == "user_delete" else 0,
            first_run=first_run,
            changed_at=[place(int(p)) for p in np.sort(pos[changed])[:examples]],
            new_at=[place(int(p)) for p in np.sort(pos[~delivered])[:examples]],
        )
        if baseline is not None:
            out.changed_properties = _changed_properties(
                baseline, props, keys[changed], fps[changed]
            )
            for p in props:
                before = baseline.present.get(p)
                out.null_share[p] = (None if before is None else 1 - before, 1 - shares[p])
                if before and not shares[p]:
                    out.emptied.append(p)
            out.baseline = baseline.merged(run_id, keys, fps, shares, self._valid, props)
        else:
            out.null_share = {p: (None, 1 - shares[p]) for p in props}
            out.baseline = Baseline(run_id, props, keys, fps, shares, self._valid)
        return out


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _last_of_each(
    keys: np.ndarray, hashes: np.ndarray, pos: np.ndarray, fps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The last row (by position) of each identity key, sorted by key."""
    order = np.lexsort((pos, keys))
    keys = keys[order]
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    pick = order[last]
    return keys[last], hashes[pick], pos[pick], fps[pick]


def _changed_properties(
    baseline: Baseline, props: list[str], keys: np.ndarray, fps: np.ndarray
) -> dict[str, int]:
    """How many of the changed rows changed each property (by its fingerprint), most first."""
    hit, old = baseline.find(keys)
    counts: dict[str, int] = {}
    for i, p in enumerate(props):
        if p not in baseline.properties:
            continue
        j = baseline.properties.index(p)
        n = int(((old[:, j] != fps[:, i]) & hit).sum())
        if n:
            counts[p] = n
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
