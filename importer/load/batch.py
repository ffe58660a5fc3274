"""What the loader hands on: a checked ``Source``, its ``Batch``es, and ``BadRecord``s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import LoadError


@dataclass(frozen=True)
class Source:
    """One input file, checked and ready to read."""

    path: Path
    format: str  # csv | jsonl | parquet (TSV is csv with delimiter '\t')
    encoding: str  # the encoding used, e.g. 'utf-8', 'utf-8-sig', 'gb18030'; 'binary' for parquet
    delimiter: str | None
    compressed: bool
    columns: list[str]  # CSV header / Parquet schema; JSONL: keys of the first object
    has_header_columns: bool  # False for JSONL: a missing key is an empty value
    #: Parquet columns that cannot be read as text (nested, or of another unsupported type),
    #: as "name (type)" by name: fine while the job does not read them
    unsupported: dict[str, str] = field(default_factory=dict)
    #: why this encoding: 'declared (input.encoding)', 'detected: valid UTF-8', ...
    encoding_reason: str = ""
    escape_char: str | None = None  # CSV: ``input.escape_char``
    #: an in-memory source (``importer.source``): its ``load.frames.Frame``; None for a file
    frame: Any = field(default=None, compare=False, repr=False)

    def refuse_unsupported(self, columns: Sequence[str]) -> None:
        """LoadError when the job reads a column this file cannot give as text."""
        read = [self.unsupported[c] for c in columns if c in self.unsupported]
        if not read:
            return
        nested = [c for c in read if "<" in c]
        what = "nested Parquet columns are" if nested else "Parquet column types"
        raise LoadError(
            f"{self.path}: {what} not supported: {', '.join(read)}; the config reads "
            + ("them" if len(read) > 1 else "it")
            + ": export flat columns of text, numbers, booleans or dates"
        )


@dataclass
class BadRecord:
    """A record that cannot be delivered, and why."""

    line: int  # CSV: line where the record starts (header = 1); JSONL: line; Parquet: row
    reason: str
    column: str | None
    raw: str | None  # the record's text, for the rejects file; None when unknowable


@dataclass
class Batch:
    """Up to ``batch_rows`` good rows of one source, and the bad records among them."""

    source: Source
    index: int
    table: pa.Table  # every column pa.string()
    lines: np.ndarray  # int64, the physical line of each table row
    raw: list[str] | None  # JSONL only: the original line of each table row
    bad: list[BadRecord]
    #: Parquet only: the rows as read, original types, good and bad; row i is line first+i
    original: pa.RecordBatch | None = None

    @classmethod
    def failure(cls, source: Source, message: str) -> Batch:
        """A batch holding only ``message``: the file broke mid-way (e.g. a truncated gzip),
        and the failure becomes one bad record, on line 0, after the rows read."""
        return cls(
            source=source,
            index=-1,
            table=pa.table({}),
            lines=np.zeros(0, dtype=np.int64),
            raw=None,
            bad=[BadRecord(line=0, reason=message, column=None, raw=None)],
        )

    def original_rows(self, lines: Sequence[int]) -> np.ndarray:
        """Where the rows on ``lines`` are in a Parquet batch's ``original`` rows: they hold
        every row of the batch, good and bad, in line order."""
        bad = np.array([b.line for b in self.bad], dtype=np.int64)
        every = np.sort(np.concatenate((self.lines, bad)))
        return np.searchsorted(every, np.asarray(lines, dtype=np.int64))

    def only(self, lines: set[int]) -> Batch:
        """The rows on ``lines`` alone, good and bad (``dmimport retry``, held rows)."""
        keep = np.flatnonzero(np.isin(self.lines, np.fromiter(lines, dtype=np.int64)))
        bad = [b for b in self.bad if b.line in lines]
        original = None
        if self.original is not None:  # Parquet: the columns the job does not read are only here
            kept = sorted([*self.lines[keep].tolist(), *(b.line for b in bad)])
            original = self.original.take(pa.array(self.original_rows(kept), pa.int64()))
        return Batch(
            source=self.source,
            index=self.index,
            table=self.table.take(keep),
            lines=self.lines[keep],
            raw=[self.raw[i] for i in keep] if self.raw is not None else None,
            bad=bad,
            original=original,
        )
