"""``job.duplicates``: the rows of one run that share an identity, found across the whole
input before anything is sent, in memory that does not grow with the rows.

A pre-pass hands each batch's valid rows to a ``DuplicateSpill``: per row the 64-bit key of
its identity (``rowhash.keys64`` of the ledger's identity text for customers and deletes; of
``event name|event_id`` for events, what the platform de-duplicates events on), its
``position`` (file, then line), the number of its event name and, for customers kept last,
which properties it sets (a bitmask). Those fixed-size records go to 64 anonymous temporary
files (unlinked at once: a killed process leaves none), picked by the key's first 6 bits, so
all rows of one identity land in one file. ``resolve`` then reads one file at a time (a file
of more than ``BUCKET_ROWS`` rows is first split again by the key's next bits), sorts it by
(key, position) with numpy and keeps only the rows of keys seen more than once: their
verdicts (``Duplicates``: SKIP or REJECT, and the row each defers to) are the only thing held
in memory, 16 bytes a duplicate row. No Python object per row is made; spilling and resolving
cost about 0.2 s per million rows.

The rules, per ``job.duplicates``:

- ``keep_last``: the identity's last row is sent; each earlier one is SKIP, except a
  customer's earlier row that is the last to set a property the last one leaves empty: it
  is sent (in file order, before the last), or that value would be lost;
- ``keep_first``: the first row is sent, every later one SKIP;
- ``reject``: the first row is sent, every later one REJECT.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .batch import positions_of
from .rowhash import keys64

#: ``Duplicates.verdicts`` codes: sent as usual, skipped (``skipped_duplicate``), rejected
SEND = 0
SKIP = 1
REJECT = 2

#: properties per bitmask word (int64 words; the sign bit is left alone)
_BITS = 63
#: spill files per level, picked by 6 bits of the key
_FAN_BITS = 6
_FANOUT = 1 << _FAN_BITS
#: a spill file of more rows than this is split again before it is read whole
BUCKET_ROWS = 1 << 20
#: how many times a file may be split again (64**4 files: more than any input needs)
_LEVELS = 4


class DuplicateRows(Protocol):
    """What the spill reads of a mapped batch (``importer.map.Mapped``)."""

    n: int
    lines: np.ndarray
    errcode: np.ndarray
    identity_text: pa.Array | None
    event_names: list[str | None] | None
    event_ids: pa.Array | None
    present: list[np.ndarray] | None


class DuplicateSpill:
    """The identities of a run's rows, on disk (``add`` each batch, then ``resolve``).

    ``kind`` and ``policy``: the job's kind and ``job.duplicates``; ``event_name``: the job's
    fixed event name (None when the names come from a column)."""

    def __init__(self, kind: str, policy: str, event_name: str | None) -> None:
        self.kind = kind
        self.policy = policy
        self._event_name = event_name
        self._masks = kind == "user" and policy == "keep_last"
        #: event names (from a column) by their number in the spill
        self._groups: dict[str, int] = {}
        self.rows = 0
        self._buckets: _Buckets | None = None

    def add(self, mapped: DuplicateRows, file_index: int, rows: np.ndarray | None = None) -> None:
        """Spill the rows of ``mapped`` (the next batch of file ``file_index``) that pass the
        local checks, or those of ``rows`` (a mask) when given."""
        mask = mapped.errcode == 0 if rows is None else rows
        picked = np.flatnonzero(mask)
        if len(picked) == 0:
            return
        if self._buckets is None:
            words = max(1, -(-len(mapped.present or []) // _BITS)) if self._masks else 0
            self._buckets = _Buckets(_record(words), 0)
        out = np.zeros(len(picked), dtype=self._buckets.dtype)
        out["key"] = identity_keys(mapped, picked, self.kind, self._event_name)
        out["pos"] = positions_of(file_index, mapped.lines[picked])
        if mapped.event_names is not None:
            out["grp"] = self._group_ids(mapped.event_names, picked)
        if self._masks:
            bits = out["mask"]
            for j, has in enumerate(mapped.present or []):
                bits[:, j // _BITS] |= has[picked].astype(np.int64) << np.int64(j % _BITS)
        self._buckets.add(out)
        self.rows += len(picked)

    def _group_ids(self, names: list[str | None], picked: np.ndarray) -> np.ndarray:
        """The number of each picked row's event name in the spill (one dict look-up per
        distinct name of the batch)."""
        encoded = pc.dictionary_encode(pa.array(names, pa.string()).take(pa.array(picked)))
        groups = self._groups
        seen = [groups.setdefault(d or "", len(groups)) for d in encoded.dictionary.to_pylist()]
        lut = np.array(seen or [0], dtype=np.int32)
        return lut[encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)]

    def resolve(self) -> Duplicates:
        """Decide every row of an identity seen more than once (the spill files are read,
        one at a time, and closed)."""
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if self._buckets is not None:
            for rows in self._buckets.drain():
                decided = self._decide(rows)
                if len(decided[0]):
                    found.append(decided)
            self._buckets = None
        if not found:
            return Duplicates.none(self.policy)
        pos, ref, grp = (np.concatenate(parts) for parts in zip(*found, strict=True))
        order = np.argsort(pos)
        names = {n: name for name, n in self._groups.items()}
        fixed = self._event_name if self.kind == "event" and self._event_name else ""
        numbers, counts = np.unique(grp, return_counts=True)
        excluded = Counter(
            {names.get(g, fixed): c for g, c in zip(numbers.tolist(), counts.tolist(), strict=True)}
        )
        code = REJECT if self.policy == "reject" else SKIP
        return Duplicates(pos[order], ref[order], code, self.policy, self.rows, excluded)

    def _decide(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of one spill file that are not sent: their positions, the position of
        the row their identity keeps, and their event names' numbers."""
        empty = np.zeros(0, dtype=np.int64)
        if len(rows) < 2:
            return empty, empty, empty.astype(np.int32)
        rows = rows[np.lexsort((rows["pos"], rows["key"]))]
        key = rows["key"]
        same = key[1:] == key[:-1]
        repeated = np.zeros(len(rows), dtype=bool)
        repeated[1:] |= same
        repeated[:-1] |= same
        rows = rows[repeated]
        key = rows["key"]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        last = np.ones(len(rows), dtype=bool)
        last[:-1] = first[1:]
        group = np.cumsum(first) - 1
        if self.policy == "keep_last":
            kept = np.flatnonzero(last)[group]
            out = ~last
        else:
            kept = np.flatnonzero(first)[group]
            out = ~first
        if self._masks:
            # a customer's earlier row holding the last value of a property the kept row
            # lacks is sent (nothing lost); an earlier row whose values a later sent row sets
            # again is not (each costs a request: one customer's rows go one at a time)
            out &= ~_last_setters(rows["mask"], kept, group)
        at = np.flatnonzero(out)
        return rows["pos"][at], rows["pos"][kept[at]], rows["grp"][at]

    def close(self) -> None:
        """Drop the spill without resolving it (an error ended the pass)."""
        if self._buckets is not None:
            self._buckets.close()
            self._buckets = None


def _last_setters(masks: np.ndarray, kept: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per row (sorted by identity, then position; ``group`` numbers the identities,
    ``kept`` is the index of each row's kept row): whether it is its identity's last row to
    set some property that the kept row leaves empty. One pass per property, none per row."""
    need = np.zeros(len(masks), dtype=bool)
    lacking = masks & ~masks[kept]
    for word in range(masks.shape[1]):
        column = lacking[:, word]
        bits = int(np.bitwise_or.reduce(column)) if len(column) else 0
        for bit in range(_BITS):
            flag = np.int64(1) << np.int64(bit)
            if not bits & int(flag):
                continue
            at = np.flatnonzero(column & flag)
            g = group[at]
            last = np.ones(len(at), dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            need[at[last]] = True
    return need


def _record(words: int) -> np.dtype[Any]:
    """One spilled row: identity key, position, event name number, property bitmask."""
    fields: list[Any] = [("key", "<i8"), ("pos", "<i8"), ("grp", "<i4")]
    if words:
        fields.append(("mask", "<i8", (words,)))
    return np.dtype(fields)


class _Buckets:
    """Records appended to ``_FANOUT`` anonymous temporary files by the ``level``-th 6 bits
    of their key (every record of a key in one file)."""

    def __init__(self, dtype: np.dtype[Any], level: int) -> None:
        self.dtype = dtype
        self.level = level
        self.files: list[IO[bytes] | None] = [None] * _FANOUT
        self.rows = [0] * _FANOUT

    def add(self, records: np.ndarray) -> None:
        shift = np.uint64(64 - _FAN_BITS * (self.level + 1))
        bucket = ((records["key"].view(np.uint64) >> shift) & np.uint64(_FANOUT - 1)).astype(
            np.intp
        )
        records = records[np.argsort(bucket, kind="stable")]
        start = 0
        for i, end in enumerate(np.cumsum(np.bincount(bucket, minlength=_FANOUT)).tolist()):
            if end > start:
                f = self.files[i]
                if f is None:
                    # closed (and so deleted) by drain or close
                    f = self.files[i] = tempfile.TemporaryFile(prefix="dmimport-dups-")  # noqa: SIM115
                f.write(records[start:end].tobytes())
                self.rows[i] += end - start
            start = end

    def drain(self) -> Iterator[np.ndarray]:
        """Each file's records, one file at a time (a file is closed, and so deleted, once
        read); a file too large to read whole is split again first."""
        try:
            for i, f in enumerate(self.files):
                if f is None:
                    continue
                self.files[i] = None
                with f:
                    f.flush()
                    f.seek(0)
                    if self.rows[i] <= BUCKET_ROWS or self.level + 1 >= _LEVELS:
                        records = np.fromfile(f, dtype=self.dtype)
                        sub = None
                    else:
                        sub = _Buckets(self.dtype, self.level + 1)
                        while len(chunk := np.fromfile(f, dtype=self.dtype, count=BUCKET_ROWS)):
                            sub.add(chunk)
                if sub is None:
                    yield records
                else:
                    yield from sub.drain()
        finally:
            self.close()

    def close(self) -> None:
        for i, f in enumerate(self.files):
            if f is not None:
                f.close()
                self.files[i] = None


class Duplicates:
    """The rows of a run ``job.duplicates`` holds back (``DuplicateSpill.resolve``): their
    positions, sorted, and the position of the row each one's identity keeps."""

    def __init__(
        self,
        positions: np.ndarray,
        kept: np.ndarray,
        code: int,
        policy: str,
        rows: int,
        excluded: Counter[str],
    ) -> None:
        self._pos = positions
        self._kept = kept
        self._code = code
        self.policy = policy
        #: the valid rows the pre-pass looked at
        self.rows = rows
        #: the rows that are not sent (skipped or rejected), by event name ("" for customers
        #: and deletes): what the daily quota's plan takes off
        self.excluded = excluded

    @classmethod
    def none(cls, policy: str = "keep_last") -> Duplicates:
        """No duplicates at all."""
        empty = np.zeros(0, dtype=np.int64)
        return cls(empty, empty, SKIP, policy, 0, Counter())

    @property
    def found(self) -> int:
        """How many rows are not sent as duplicates."""
        return len(self._pos)

    def verdicts(self, file_index: int, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row on ``lines`` of file number ``file_index``: its code (SEND, SKIP, REJECT)
        and, for SKIP and REJECT, the position of the row its identity keeps (-1 otherwise)."""
        n = len(lines)
        codes = np.zeros(n, dtype=np.int8)
        refs = np.full(n, -1, dtype=np.int64)
        if n == 0 or len(self._pos) == 0:
            return codes, refs
        pos = positions_of(file_index, np.asarray(lines, dtype=np.int64))
        at = np.searchsorted(self._pos, pos).clip(max=len(self._pos) - 1)
        hit = self._pos[at] == pos
        codes[hit] = self._code
        refs[hit] = self._kept[at[hit]]
        return codes, refs


def identity_keys(
    mapped: DuplicateRows, rows: np.ndarray, kind: str, event_name: str | None
) -> np.ndarray:
    """The int64 key of each of ``rows``' identity as ``job.duplicates`` compares them: the
    ledger's identity text (the primary-key values) for customers and deletes, ``event
    name|event_id`` for events."""
    picked = pa.array(rows, pa.int64())
    if kind != "event":
        text = mapped.identity_text
        assert text is not None
        return keys64(text.take(picked))
    ids = mapped.event_ids
    assert ids is not None
    ids = pc.fill_null(ids.take(picked), "")
    names: Any = event_name
    if mapped.event_names is not None:
        names = pa.array(mapped.event_names, pa.string()).take(picked)
    return keys64(pc.binary_join_element_wise(names, ids, "|"))
