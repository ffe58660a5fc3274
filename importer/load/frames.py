"""In-memory sources: a pandas DataFrame, a ``pyarrow.Table`` or an iterable of
``pyarrow.RecordBatch``, read as a Parquet file with the same columns would be.

``frame_source`` makes the ``Source`` (``importer.source`` is the public name); ``iter_frame``
streams it as ``Batch``es through Parquet's own conversion (``parquet.text_batch``), so a typed
column gives the text docs/input-files.md ("Parquet") says. A row's line is its positional row
number plus one (row 0 of a DataFrame is line 1, as row 1 of a Parquet file), so
``df.iloc[line - 1]`` is the row a result names.

A one-shot iterator (a generator) is pulled lazily, one batch at a time, and only once: a run
reads its input twice (the pre-pass of ``job.duplicates`` and the daily quota's plan, then the
send), so each batch pulled is also written to a spill file (Arrow IPC, in the temporary folder)
that the second read reads: memory stays bounded by a batch, disk holds the rows once. A Table,
a DataFrame or a list of batches is read again from memory.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import LoadError, UsageError
from .batch import Batch, Source
from .options import InputOptions
from .parquet import text_batch, unsupported_columns
from .values import quote_names


class Frame:
    """The rows of an in-memory source: its schema, its row count when known, and its batches."""

    def __init__(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch], rows: int | None):
        self.schema = schema
        self.rows = rows
        self._batches = batches
        self.once = iter(batches) is batches  # a generator or iterator: read it once
        self._spill: _Spill | None = None

    def fingerprint(self, name: str) -> dict[str, Any]:
        """What the ledger records for this source: its name and a one-off token, so that a
        run of an in-memory source is never resumed (it has no file to compare)."""
        return {"path": name, "in_memory": True, "token": os.urandom(8).hex()}

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The batches, from the first. A one-shot iterator is pulled lazily, each batch also
        written to a spill file (Arrow IPC, in the temporary folder, removed when the source
        is dropped), so a second read (a run's pre-pass, then its send) reads the spill file
        and then the rest of the iterator: memory stays bounded by a batch."""
        if not self.once:
            return iter(self._batches)
        if self._spill is None:
            self._spill = _Spill(self.schema)
            weakref.finalize(self, self._spill.close)
        return self._spill.read(iter(self._batches))


class _Spill:
    """The batches of a one-shot iterator pulled so far, in an Arrow IPC stream file."""

    def __init__(self, schema: pa.Schema) -> None:
        fd, name = tempfile.mkstemp(prefix="dmimport-frame-", suffix=".arrows")
        os.close(fd)
        self.path = name
        self._sink = pa.OSFile(name, "wb")
        self._writer = pa.ipc.new_stream(self._sink, schema)
        self._count = 0

    def read(self, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        if self._count:
            with pa.memory_map(self.path) as src:
                reader = pa.ipc.open_stream(src)
                for _ in range(self._count):
                    yield reader.read_next_batch()
        for rb in rest:
            if isinstance(rb, pa.RecordBatch):
                self._writer.write_batch(rb)
                self._count += 1
            yield rb

    def close(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            self._writer.close()
            self._sink.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def frame_source(data: Any, name: str | None = None) -> Source:
    """The ``Source`` of ``data``: a pandas DataFrame (its index is not a column), a
    ``pyarrow.Table``, or an iterable of ``pyarrow.RecordBatch`` sharing one schema.
    ``name`` (default ``<DataFrame>``, ``<Table>``, ``<RecordBatches>``) names it in results,
    rejects and messages. A one-shot iterator is not read here, but for its first batch."""
    if isinstance(data, Source):
        return data
    frame = _frame(data)
    label = name or _default_name(data)
    if not label.strip() or "/" in label or "\x00" in label:
        raise UsageError(f"a source name must be non-empty text without '/': {label!r}")
    names = frame.schema.names
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise LoadError(f"{label}: duplicate column names: {quote_names(dups)}")
    unsupported = unsupported_columns(frame.schema)
    return Source(
        Path(label), "parquet", "binary", None, False, names, True, unsupported, frame=frame
    )


def _default_name(data: Any) -> str:
    if isinstance(data, pa.Table):
        return "<Table>"
    if isinstance(data, pa.RecordBatch):
        return "<RecordBatch>"
    if type(data).__name__ == "DataFrame":
        return "<DataFrame>"
    return "<RecordBatches>"


def _frame(data: Any) -> Frame:
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table) and type(data).__name__ == "DataFrame":
        try:
            data = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise LoadError(f"<DataFrame>: cannot be read as Arrow columns: {exc}") from None
    if isinstance(data, pa.Table):
        return Frame(data.schema, _TableBatches(data), data.num_rows)
    if isinstance(data, (str, bytes, Path)) or not isinstance(data, Iterable):
        raise UsageError(
            "an in-memory source is a pandas DataFrame, a pyarrow.Table or an iterable of "
            f"pyarrow.RecordBatch, not {type(data).__name__}"
        )
    if isinstance(data, (list, tuple)):
        batches = list(data)
        if not batches:
            raise UsageError("an empty list of record batches has no columns: pass a Table")
        return Frame(batches[0].schema, batches, sum(b.num_rows for b in batches))
    it = iter(data)
    first = next(it, None)  # the schema: the first batch only
    if first is None:
        raise UsageError("the iterator of record batches is empty: it has no columns")
    return Frame(first.schema, _Chain(first, it), None)


class _TableBatches:
    """A Table's batches, as often as asked (a Table is already in memory)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return iter(self.table.to_batches())


class _Chain:
    """The first batch, then the rest of a one-shot iterator: itself an iterator."""

    def __init__(self, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> None:
        self._first: pa.RecordBatch | None = first
        self._rest = rest

    def __iter__(self) -> _Chain:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._rest)


def iter_frame(source: Source, options: InputOptions, read: list[str]) -> Iterator[Batch]:
    """Batches of at most ``options.batch_rows`` rows, as ``parquet.iter_parquet`` gives them;
    the batches are pulled one at a time (a big one is sliced, small ones are not merged)."""
    frame: Frame = source.frame
    wanted = set(read)
    names = source.columns
    kept = [c for c in names if c in wanted]
    row = 0
    index = 0
    step = max(1, options.batch_rows)
    for rb in frame.batches():
        if not isinstance(rb, pa.RecordBatch):
            raise LoadError(
                f"{source.path}: after row {row}: not a pyarrow.RecordBatch: {rb!r:.80}"
            )
        if rb.schema.names != names:
            raise LoadError(
                f"{source.path}: after row {row}: a batch's columns differ from the first's: "
                f"{quote_names(rb.schema.names)}"
            )
        for start in range(0, rb.num_rows, step):
            part = rb.slice(start, step)
            yield text_batch(source, part, row, index, kept, options)
            row += part.num_rows
            index += 1


def as_inputs(files: Any) -> list[str | Source]:
    """A run's inputs as paths (``os.fspath``) and in-memory ``Source``s: ``files`` is a path,
    a ``Source`` (``importer.source``), a DataFrame, a Table, a RecordBatch, an iterable of
    record batches (one source), or a list of paths, sources, DataFrames and Tables."""
    if isinstance(files, str | os.PathLike):
        return [os.fspath(files)]
    if isinstance(files, Source) or _is_data(files):
        return [frame_source(files)]
    if not isinstance(files, list | tuple):  # an iterator: of batches, or of paths
        it = iter(files)
        first = next(it, None)
        if first is None:
            return []
        files = itertools.chain([first], it)
        if isinstance(first, pa.RecordBatch):
            return [frame_source(files)]
        files = list(files)
    elif files and all(isinstance(f, pa.RecordBatch) for f in files):
        return [frame_source(list(files))]
    return [
        frame_source(f) if isinstance(f, Source) or _is_data(f) else os.fspath(f) for f in files
    ]


def _is_data(obj: Any) -> bool:
    return isinstance(obj, pa.Table | pa.RecordBatch) or type(obj).__name__ == "DataFrame"
