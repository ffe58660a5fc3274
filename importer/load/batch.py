"""What the loader hands on: a checked ``Source``, its ``Batch``es, and ``BadRecord``s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
