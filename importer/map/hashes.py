"""Change hashes: a 64-bit hash of each row's mapped properties, computed without bodies.

A changed-only run compares them with the ledger's to send only rows whose body changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..ledger import ABSENT, as_keys, combine, hash64, hex16
from .arrays import bools
from .values import Prop, PropValues


def layout_hash(head: str, props: Sequence[Prop]) -> np.uint64:
    """The hash of what every body of a job shares: its head (event name), and each property's
    name, type and constant."""
    layout = [head, [(p.name, p.spec.type, p.constant) for p in props]]
    return hash64([json.dumps(layout, ensure_ascii=False)])[0]


def property_hashes(
    props: Sequence[Prop],
    values: Mapping[str, PropValues],
    names: pa.Array | None,
    ok: np.ndarray,
) -> tuple[list[str], np.ndarray]:
    """Per property read from the file (and the event name, when it comes from a column, as
    ``"(event name)"``): its name, and a (properties, rows with a body) uint64 matrix of
    ``hash64`` of each such row's JSON value (``ABSENT`` for no value): the rows of ``ok``
    alone, in order, so neither this nor its readers scatter or gather."""
    rows = np.flatnonzero(ok)
    every = len(rows) == len(ok)
    picked = pa.array(rows)
    labels: list[str] = []
    arrays: list[pa.Array] = []
    for p in props:
        if p.constant is None and (a := values[p.name].json) is not None:
            labels.append(p.name)
            arrays.append(a)
    if names is not None:
        labels.append("(event name)")
        arrays.append(names)
    if not arrays:
        return labels, np.zeros((0, len(rows)), dtype=np.uint64)
    if not every:
        arrays = [a.take(picked) for a in arrays]
    # one pass over every column's values: fewer, larger numpy operations
    flat = pa.concat_arrays([a.cast(pa.string()) for a in arrays])
    h = hash64(flat)
    if flat.null_count:
        h[~bools(pc.is_valid(flat))] = ABSENT
    return labels, h.reshape(len(arrays), len(rows))


def properties_hash(layout: np.uint64, matrix: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row with a body (0 elsewhere): ``ledger.combine`` of the job's layout (event
    name, property names, types and constants) and of each property's JSON value (or
    "absent"), plus the row's event name when it comes from a column: the columns of
    ``property_hashes``' matrix (one per row of ``ok``). The same values make the same body,
    and the other way round, so this tells a changed body from an unchanged one without
    building bodies."""
    rows = np.flatnonzero(ok)
    columns = [np.full(len(rows), layout, dtype=np.uint64)]
    columns.extend(matrix)
    out = np.zeros(len(ok), dtype=np.uint64)
    out[rows] = combine(columns)
    return out


class HashList(Sequence[str | None]):
    """``Mapped.properties_hash``: the change hash of each row (``properties_hash``), as 16 hex
    digits, None for rows rejected locally; ``values()`` gives them all as uint64 and
    ``keys(rows)`` as int64. Computed for the whole table at once on first use: reading one
    hash or a million costs the same pass."""

    def __init__(
        self,
        compute: Callable[[], tuple[list[str], np.ndarray]],
        layout: np.uint64,
        ok: np.ndarray,
    ):
        self._compute: Callable[[], tuple[list[str], np.ndarray]] | None = compute
        self._layout = layout
        self._ok = ok
        self._parts: tuple[list[str], np.ndarray] | None = None
        self._values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._ok)

    def columns(self) -> tuple[list[str], np.ndarray]:
        """Each property's name and the hash of its value in every row with a body (those of
        ``ok``, in order): ``property_hashes`` (what ``importer.guard`` compares property by
        property)."""
        if self._parts is None:
            assert self._compute is not None
            self._parts, self._compute = self._compute(), None
        return self._parts

    def values(self) -> np.ndarray:
        """The uint64 hash of every row (0 where the row has no body)."""
        if self._values is None:
            self._values = properties_hash(self._layout, self.columns()[1], self._ok)
        return self._values

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...
    def __getitem__(self, i: int | slice) -> str | list[str | None] | None:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        ok = self._ok
        if i < 0:
            i += len(ok)
        if not 0 <= i < len(ok):
            raise IndexError("hash index out of range")
        return hex16(self.values()[i]) if ok[i] else None

    def __iter__(self) -> Iterator[str | None]:
        pairs = zip(self.values().tolist(), self._ok.tolist(), strict=True)
        return (hex16(v) if ok else None for v, ok in pairs)

    def keys(self, rows: np.ndarray) -> np.ndarray:
        """int64 keys of the hashes of ``rows`` (all with bodies): ``ledger.as_keys``, the hash
        less 2**63, as the ledger stores and compares it."""
        return as_keys(self.values()[rows])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
