"""The lazy sequences ``Mapped`` hands out: they read like lists, but cost nothing until used."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import buffers

T = TypeVar("T")


class Texts:
    """Zero-copy view of an Arrow string array's values as bytes."""

    def __init__(self, values: pa.Array):
        offsets, data = buffers(values)
        self.offsets = offsets.tolist()
        self.data = data.data  # a memoryview over the Arrow buffer

    def __getitem__(self, i: int) -> memoryview:
        return self.data[self.offsets[i] : self.offsets[i + 1]]


class TextList(Sequence[bytes | None]):
    """Per-row bytes of one table (the mapper's items, or event-name literals), kept in an
    Arrow string array; ``bytes`` are made on access.

    Reads like ``list[bytes | None]`` (index, slice, iterate, ``len``, ``==``), with ``None``
    for rows rejected locally. ``make`` builds the array; it is called on first use (or
    ``build``): a changed-only run that finds nothing changed never builds the items.
    ``sizes`` gives every row's byte length at once (what a batch of them weighs).
    """

    def __init__(self, make: Callable[[], pa.Array], ok: np.ndarray):
        self._ok = ok
        self._make: Callable[[], pa.Array] | None = make
        self._texts: Texts | None = None
        self._array: pa.Array | None = None

    def build(self) -> None:
        """Build the values now (they are otherwise built on first access)."""
        if self._make is not None:
            make, self._make = self._make, None
            self._array = make()  # keeps the buffers alive

    def _value(self, i: int) -> bytes:
        if self._texts is None:
            # the per-row index is made on the first single access only: the sender takes
            # the values in bulk (``take``), and a batch waiting for its answers would
            # otherwise hold a Python int per row (about 40 bytes a row)
            self.build()
            assert self._array is not None
            self._texts = Texts(self._array)
        return bytes(self._texts[i])

    def take(self, rows: np.ndarray) -> list[bytes]:
        """The values of ``rows`` (none of them rejected), as one list, at C speed."""
        self.build()
        assert self._array is not None
        return self._array.cast(pa.binary()).take(pa.array(rows)).to_pylist()

    def binary(self) -> pa.Array:
        """Every row's value as one binary array, null for a rejected row (no copy per row)."""
        self.build()
        assert self._array is not None
        arr = self._array.cast(pa.binary())
        if self._ok.all():
            return arr
        return pc.if_else(pa.array(self._ok), arr, pa.scalar(None, pa.binary()))

    def sizes(self) -> np.ndarray:
        """The byte length of every row's value (int64; 0 for a rejected row)."""
        self.build()
        assert self._array is not None
        offsets, _ = buffers(self._array)
        return np.where(self._ok, np.diff(offsets.astype(np.int64)), 0)

    def __len__(self) -> int:
        return len(self._ok)

    @overload
    def __getitem__(self, i: int) -> bytes | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes | None]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes | None] | None:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("item index out of range")
        return self._value(i) if self._ok[i] else None

    def __iter__(self) -> Iterator[bytes | None]:
        self.build()
        for i, ok in enumerate(self._ok.tolist()):
            yield self._value(i) if ok else None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TextList({len(self)} rows, {int(self._ok.sum())} values)"


class LazyList(Sequence[T]):
    """A list built on first use: the mapper's ``keys`` cost nothing until the sender asks for
    a row's (a run that sends nothing never does)."""

    def __init__(self, n: int, build: Callable[[], list[T]]):
        self._n = n
        self._build: Callable[[], list[T]] | None = build
        self._items: list[T] | None = None
        self._released = False

    def build(self) -> None:
        """Build the list now (it is otherwise built on first use)."""
        self._list()

    def release(self) -> None:
        """Forget the values: nothing reads them any more (the run's feed, once every row of
        its batch is in a request). Reading them afterwards raises ``RuntimeError``."""
        self._items, self._build, self._released = None, None, True

    def _list(self) -> list[T]:
        if self._items is None:
            if self._released:
                raise RuntimeError("the values of this list were released")
            assert self._build is not None
            self._items, self._build = self._build(), None
        return self._items

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        return self._list()[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyList({self._list()!r})"
