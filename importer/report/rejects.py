"""``rejects.<ext>``: the original rows that did not get through (rejected, failed, not_sent),
in their input's own format, delimiter, encoding and header, ready to re-import as they are.

One file per input file when a run reads several (``rejects-<name>.<ext>``, unique within the
run: ``rejects_names``). Values are kept byte for byte (no formula protection), so a phone like
``+8613800138000`` can be re-imported from them. Why each row is there, with its line, is in
the side file ``rejects.reasons.csv`` (``importer.report.reasons``), written alongside.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import finish_atomic, private_opener, temp_path
from .files import writing
from .reasons import (
    REASONS_NAME,
    RECORD_COLUMN,
    ReasonsWriter,
    as_text,
    field_names,
    records_table,
    split_record,
)
from .results import DEFAULT_REPORT_ENCODING, ResultRows

#: importer.lake.columns.CHANGE_SET_KEY (the report does not import the lake)
_CHANGE_SET_KEY = b"dmimport.change_set"

if TYPE_CHECKING:
    from ..load import Batch


@dataclass
class RejectRows:
    """Original rows of one source that did not get through, ordered by line."""

    table: pa.Table | None  # whole original rows (CSV/Parquet), aligned with table_lines
    table_lines: list[int]
    raw: list[tuple[int, str]] = field(default_factory=list)  # (line, original text)


class RejectsWriter:
    """``rejects.<ext>`` for one source, in that source's format, delimiter, encoding, header."""

    def __init__(self, path: Path, source: Any) -> None:
        self.path = path
        self.source = source
        self.fmt = source.format
        self._tmp = temp_path(path)
        self.rows = 0
        self._pq: pq.ParquetWriter | None = None
        self._text: IO[str] | None = None
        self._csv: Any = None
        if self.fmt in ("csv", "jsonl"):
            encoding = source.encoding if source.encoding not in ("auto", "binary") else "utf-8"
            with writing(path):
                self._text = open(  # noqa: SIM115
                    self._tmp, "w", encoding=encoding, newline="", opener=private_opener
                )
                if self.fmt == "csv":
                    self._csv = csv.writer(
                        self._text,
                        delimiter=source.delimiter or ",",
                        escapechar=getattr(source, "escape_char", None),
                        lineterminator="\n",
                    )
                    self._csv.writerow(source.columns)

    def write(self, rows: RejectRows) -> None:
        """Append ``rows``; DiskFullError when the disk is full."""
        with writing(self.path):
            self._write(rows)

    def _write(self, rows: RejectRows) -> None:
        if self.fmt == "parquet":
            if rows.table is not None and rows.table.num_rows:
                if self._pq is None:
                    self._pq_file = open(self._tmp, "wb", opener=private_opener)  # noqa: SIM115
                    schema = rows.table.schema
                    # a change set's rejects are rows to fix and import as a plain file: not
                    # a change set (whose rows must keep the plan's bodies), nor committable
                    kept = {
                        k: v for k, v in (schema.metadata or {}).items() if k != _CHANGE_SET_KEY
                    }
                    self._pq = pq.ParquetWriter(self._pq_file, schema.with_metadata(kept))
                self._pq.write_table(rows.table)
                self.rows += rows.table.num_rows
            return
        assert self._text is not None
        items: list[tuple[int, int, Any]] = []
        if rows.table is not None and rows.table.num_rows:
            names = rows.table.column_names
            cols = [rows.table.column(c).to_pylist() for c in names]
            for j, line in enumerate(rows.table_lines):
                items.append((line, 0, [c[j] for c in cols]))
        items.extend((line, 1, text) for line, text in rows.raw)
        items.sort(key=lambda t: t[0])
        for _, is_raw, value in items:
            if is_raw:
                self._text.write(value if value.endswith("\n") else value + "\n")
            elif self.fmt == "csv":
                self._csv.writerow(["" if v is None else v for v in value])
            self.rows += 1

    def close(self) -> Path | None:
        with writing(self.path):
            if self._pq is not None:
                self._pq.close()
                self._pq_file.close()
            if self._text is not None:
                self._text.close()
            if self.rows == 0:
                self._tmp.unlink(missing_ok=True)
                return None
            finish_atomic(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        """Drop the unfinished file (also after a full disk made writing it fail)."""
        with contextlib.suppress(OSError):  # what is still buffered cannot matter now
            if self._pq is not None:
                self._pq.close()
        with contextlib.suppress(OSError):
            if self._pq is not None:
                self._pq_file.close()
            if self._text is not None:
                self._text.close()
        self._tmp.unlink(missing_ok=True)


#: input name endings left out of a rejects file's name (its own extension replaces them)
_INPUT_SUFFIXES = (".gz", ".csv", ".txt", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")
#: bytes of an input's name kept in its rejects file's name (a file name holds 255)
_NAME_BYTES = 120


def rejects_names(sources: Sequence[Any]) -> list[str]:
    """The rejects file name of each source, in order: ``rejects.<ext>`` for a single input,
    else ``rejects-<input name>.<ext>``, unique within the run whatever the inputs are called.

    The input's name loses its format and ``.gz`` endings and every character but letters,
    digits, ``.``, ``-`` and ``_`` (made ``_``); names that then meet, compared without case
    (a case-insensitive file system), get ``-2``, ``-3`` ... in input order.
    """
    exts = [_rejects_ext(s) for s in sources]
    if len(sources) == 1:
        return [f"rejects.{exts[0]}"]
    names: list[str] = []
    taken: set[str] = set()
    for source, ext in zip(sources, exts, strict=True):
        stem = source.path.name
        while stem.lower().endswith(_INPUT_SUFFIXES):
            stem = stem[: stem.rindex(".")]
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem)
        stem = stem.encode()[:_NAME_BYTES].decode(errors="ignore") or "input"
        name = f"rejects-{stem}.{ext}"
        n = 1
        while name.casefold() in taken:
            n += 1
            name = f"rejects-{stem}-{n}.{ext}"
        taken.add(name.casefold())
        names.append(name)
    return names


def _rejects_ext(source: Any) -> str:
    if source.format == "csv":
        return "tsv" if source.delimiter == "\t" else "csv"
    return str(source.format)


class RejectFiles:
    """The rejects files of one run: one ``RejectsWriter`` per input, opened on its first row
    and named by ``rejects_names``; and their side file ``rejects.reasons.csv`` (in
    ``reasons_encoding``, ``report.encoding``), when ``write_batch`` is given the reasons."""

    def __init__(
        self,
        run_dir: Path,
        sources: Sequence[Any],
        *,
        reasons_encoding: str = DEFAULT_REPORT_ENCODING,
    ) -> None:
        self.run_dir = run_dir
        self.sources = sources
        self._names: list[str] = []
        self._writers: dict[int, RejectsWriter] = {}
        self.reasons = ReasonsWriter(run_dir / REASONS_NAME, sources, reasons_encoding)
        #: the side file, once ``close`` found it holds rows
        self.reasons_path: Path | None = None

    def write(self, index: int, rows: RejectRows) -> None:
        """Append ``rows`` of the input ``sources[index]``; DiskFullError when the disk is full."""
        writer = self._writers.get(index)
        if writer is None:
            if not self._names:
                self._names = rejects_names(self.sources)
            writer = RejectsWriter(self.run_dir / self._names[index], self.sources[index])
            self._writers[index] = writer
        writer.write(rows)

    def write_batch(
        self, index: int, batch: Batch, rows: np.ndarray, why: ResultRows | None = None
    ) -> None:
        """Append the original rows of ``batch`` (of ``sources[index]``) at the positions
        ``rows`` of its table, and its bad records, in line order: whole rows as read for
        Parquet, the original text for JSON Lines, the columns read for CSV. ``why``: the
        batch's report lines, for ``rejects.reasons.csv``."""
        if len(rows) == 0 and not batch.bad:
            return
        lines = batch.lines
        if batch.original is not None:
            # Parquet: the original rows, original types, bad records included
            wanted = sorted({int(lines[i]) for i in rows} | {b.line for b in batch.bad})
            kept = batch.original.take(pa.array(batch.original_rows(wanted), pa.int64()))
            self.write(index, RejectRows(pa.Table.from_batches([kept]), wanted, []))
            if why is not None:
                cols = [as_text(c) for c in kept.columns]
                fields = pa.Table.from_arrays(cols, names=kept.schema.names)
                self.reasons.write(index, pa.array(wanted, pa.int64()), fields, why)
            return
        raw: list[tuple[int, str]] = [(b.line, b.raw) for b in batch.bad if b.raw is not None]
        table = None
        table_lines: list[int] = []
        if batch.raw is not None:
            raw.extend((int(lines[i]), batch.raw[i]) for i in rows)
        elif len(rows):
            table = batch.table.take(rows)
            table_lines = [int(lines[i]) for i in rows]
        self.write(index, RejectRows(table, table_lines, raw))
        if why is not None:
            self._write_reasons(index, batch, rows, table, why)

    def _write_reasons(
        self,
        index: int,
        batch: Batch,
        rows: np.ndarray,
        table: pa.Table | None,
        why: ResultRows,
    ) -> None:
        """The batch's undelivered rows with their reasons, column-wise: the CSV rows read
        as they are, a JSON Lines row's line, a refused record's fields as it splits."""
        source = self.sources[index]
        names = field_names(source)
        parts: list[pa.Table] = []
        lines: list[pa.Array] = []
        if table is not None:
            parts.append(table.select([n for n in names if n in table.column_names]))
            lines.append(pa.array(batch.lines[rows], pa.int64()))
        elif batch.raw is not None and len(rows):  # JSON Lines: the line as read
            texts = [batch.raw[i].rstrip("\r\n") for i in rows.tolist()]
            parts.append(pa.table({RECORD_COLUMN: pa.array(texts, pa.string())}))
            lines.append(pa.array(batch.lines[rows], pa.int64()))
        if batch.bad:
            parts.append(records_table(names, [split_record(b.raw, source) for b in batch.bad]))
            lines.append(pa.array([b.line for b in batch.bad], pa.int64()))
        if not parts:
            return
        fields = pa.concat_tables(parts, promote_options="default")
        self.reasons.write(index, pa.concat_arrays(lines), fields, why)

    def close(self) -> list[Path]:
        """Finish every file; the paths of those that hold rows (not the side file's:
        ``reasons_path``)."""
        paths = [p for w in self._writers.values() if (p := w.close()) is not None]
        self.reasons_path = self.reasons.close()
        return paths

    def abandon(self) -> None:
        """Drop every unfinished file."""
        for w in self._writers.values():
            w.abandon()
        self.reasons.abandon()
