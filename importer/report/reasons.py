"""``rejects.reasons.csv``: why each row of the rejects files did not get through, next to
the row itself, for a person to read (``ReasonsWriter``).

The rejects files (``rejects.<ext>``) hold the undelivered rows exactly as they were read, to
fix and import again; they cannot also say why without stopping being importable. This side
file, one per run whatever the inputs, has one line per row of them:

    file, line, column, errcode, reason, <the row's fields under their header names>

``file`` and ``line`` as in ``results.csv``; ``column`` the failing column(s), ``errcode`` the
platform's error code (empty for a row refused before sending), ``reason`` the results'
``errmsg``. The fields that follow are the input's header names, in order (one named like a
reason column is shown as ``line (in the file)``; several inputs:
every name once, in the order met; a row fills its own file's); a JSON Lines row is its line
as read, under ``record``. A record the reader could not split as the header says (a wrong
number of fields) shows the fields it has, positionally (any past the header's last left
out); its full text is in the rejects file. Written column-wise, a batch at a time, with
Arrow's CSV writer (as ``results.csv``): no per-row Python but splitting refused records.

It is written in ``report.encoding`` (UTF-8 with a byte-order mark by default, which Excel
needs), and, being for reading and not for import, like ``results.csv``: a cell that starts
with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading apostrophe.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..atomic import finish_atomic, private_opener, temp_path
from .files import writing
from .results import DEFAULT_REPORT_ENCODING, ResultRows, Transcoder, neutralize

#: the side file's name, in the run's report folder
REASONS_NAME = "rejects.reasons.csv"
#: its first columns; the rows' own fields follow
REASON_COLUMNS = ("file", "line", "column", "errcode", "reason")
#: the one field of a JSON Lines row: its line as read
RECORD_COLUMN = "record"


def field_names(source: Any) -> list[str]:
    """The names a row of ``source`` gives its fields under in the side file."""
    return [RECORD_COLUMN] if source.format == "jsonl" else list(source.columns)


def shown_name(name: str) -> str:
    """The side file's header name of an input field: its own, or, when the input has a field
    named like one of the reason columns (``line``, ``reason``, ...), that name marked, so a
    reader keyed by name finds the reason's ``line`` under ``line``, the file's under
    ``line (in the file)``."""
    return f"{name} (in the file)" if name in REASON_COLUMNS else name


def as_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as text: Parquet's numbers, booleans and dates as Arrow writes them, anything
    it cannot cast one value at a time."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_string(column.type):
        return column
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


def records_table(names: Sequence[str], records: Sequence[Sequence[str]]) -> pa.Table:
    """Rows given as lists of fields (a record the reader refused: as many fields as it has)
    as a table of ``names``: missing fields empty, fields past the last name left out."""
    width = len(names)
    cols: list[list[str | None]] = [[] for _ in names]
    for fields in records:
        for i in range(width):
            cols[i].append(fields[i] if i < len(fields) else None)
    return pa.table([pa.array(c, pa.string()) for c in cols], names=list(names))


class ReasonsWriter:
    """``rejects.reasons.csv`` of one run over ``sources`` (opened on its first row), a batch
    at a time, column-wise."""

    def __init__(
        self, path: Path, sources: Sequence[Any], encoding: str = DEFAULT_REPORT_ENCODING
    ) -> None:
        self.path = path
        self.sources = sources
        self.encoding = encoding
        self.rows = 0
        self._tmp = temp_path(path)
        self._fh: IO[bytes] | None = None
        self._csv: pacsv.CSVWriter | None = None
        header: list[str] = []
        for source in sources:
            header += [n for n in field_names(source) if n not in header]
        self.fields = header
        fields = [pa.field(shown_name(n), pa.string()) for n in header]
        self.schema = pa.schema(
            [
                pa.field("file", pa.string()),
                pa.field("line", pa.int64()),
                pa.field("column", pa.string()),
                pa.field("errcode", pa.int32()),
                pa.field("reason", pa.string()),
                *fields,
            ]
        )

    def write(self, index: int, lines: pa.Array, fields: pa.Table, why: ResultRows) -> None:
        """Append the rows on ``lines`` of ``sources[index]``, their ``fields`` as read (text
        columns named as ``field_names`` gives), with their reasons from ``why`` (the batch's
        report lines, in line order); DiskFullError when the disk is full."""
        if len(lines) == 0:
            return
        with writing(self.path):
            self._write(index, lines, fields, why)

    def _write(self, index: int, lines: pa.Array, fields: pa.Table, why: ResultRows) -> None:
        order = pc.sort_indices(lines)
        lines, fields = lines.take(order), fields.take(order)
        n = len(lines)
        # each row's report line: the report lines are in line order
        known = np.asarray(why.line, dtype=np.int64)
        wanted = lines.to_numpy(zero_copy_only=False)
        at = np.searchsorted(known, wanted).clip(max=max(len(known) - 1, 0))
        found = known[at] == wanted if len(known) else np.zeros(n, dtype=bool)
        pick = pa.array(at, pa.int64(), mask=~found)  # null: no report line
        name = str(self.sources[index].path)
        columns: list[pa.Array] = [
            neutralize(pa.array([name] * n, pa.string())),
            lines,
            neutralize(pa.array(why.column, pa.string()).take(pick)),
            pa.array(why.errcode, pa.int32()).take(pick),
            neutralize(pa.array(why.errmsg, pa.string()).take(pick)),
        ]
        have = set(fields.column_names)
        for field in self.fields:
            if field in have:
                columns.append(neutralize(as_text(fields.column(field))))
            else:
                columns.append(pa.nulls(n, pa.string()))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if self._csv is None:
            self._fh = open(self._tmp, "wb", opener=private_opener)  # noqa: SIM115
            self._csv = pacsv.CSVWriter(
                Transcoder(self._fh, self.encoding),
                self.schema,
                write_options=pacsv.WriteOptions(quoting_style="needed"),
            )
        self._csv.write_table(table)
        self.rows += n

    def close(self) -> Path | None:
        """Finish the file; its path, or None when no row was rejected."""
        if self._fh is None:
            return None
        with writing(self.path):
            if self._csv is not None:
                self._csv.close()
            self._fh.close()
            finish_atomic(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        """Drop the unfinished file."""
        with contextlib.suppress(OSError):
            if self._fh is not None:
                self._fh.close()
        self._tmp.unlink(missing_ok=True)


def split_record(text: str | None, source: Any) -> list[str]:
    """The fields of a record's text as the source's dialect splits them (a CSV record the
    reader refused: its fields as they are, perhaps more or fewer than the header's; a JSON
    Lines record: its line)."""
    if text is None:
        return []
    if source.format != "csv":
        return [text.rstrip("\r\n")]
    try:
        rows = list(
            csv.reader(
                io.StringIO(text, newline=""),
                delimiter=source.delimiter or ",",
                escapechar=getattr(source, "escape_char", None),
            )
        )
    except csv.Error:
        return [text.rstrip("\r\n")]
    return [v for row in rows for v in row]
