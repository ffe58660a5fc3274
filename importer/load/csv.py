"""CSV and TSV through Arrow's streaming CSV reader, with a block restart for long records.

Every record ends up exactly once, in file order: a row of a batch's table (with its physical
line) or a ``BadRecord`` saying why not.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import LoadError
from .batch import BadRecord, Batch, Source
from .options import InputOptions, ReadStats, Tuning
from .quotes import Quotes
from .sniff import SAMPLE, parse_header
from .textstream import RawInput, Utf8Stream
from .values import raw_substitute, value_problems

_RELEASE_WAIT = 30.0  # seconds to wait for Arrow's reader thread to stop (it takes ms)


log = logging.getLogger("importer")


class _Assembler:
    """Collects good rows and bad records in file order; cuts batches of at most ``limit``
    records, each bad record in the batch whose stretch of the file holds it. It always keeps
    the last record back until ``finish``, so the end of the file can still be inspected."""

    def __init__(self, source: Source, limit: int, names: Sequence[str]) -> None:
        self.source = source
        self.limit = limit
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.tables: list[pa.Table] = []
        self.lines: list[np.ndarray] = []
        self.bad: list[BadRecord] = []
        self.rows = 0
        self.index = 0

    def add(self, table: pa.Table, lines: np.ndarray, bad: list[BadRecord]) -> None:
        if len(lines):
            self.tables.append(table)
            self.lines.append(lines)
            self.rows += len(lines)
        self.bad.extend(bad)

    def ready(self) -> Iterator[Batch]:
        while self.rows + len(self.bad) > self.limit:
            yield self._emit()

    def finish(self) -> Iterator[Batch]:
        while self.rows + len(self.bad) > 0:
            yield self._emit()

    def last_row(self) -> tuple[dict[str, Any], int] | None:
        """The last pending row and its line, when it is the last record."""
        if not self.lines:
            return None
        line = int(self.lines[-1][-1])
        if self.bad and self.bad[-1].line > line:
            return None
        table = self.tables[-1]
        return table.slice(table.num_rows - 1).to_pylist()[0], line

    def drop_last_row(self) -> None:
        table, lines = self.tables[-1], self.lines[-1]
        if len(lines) == 1:
            self.tables.pop()
            self.lines.pop()
        else:
            self.tables[-1] = table.slice(0, table.num_rows - 1)
            self.lines[-1] = lines[:-1]
        self.rows -= 1

    def _emit(self) -> Batch:
        if len(self.lines) == 1:
            lines = self.lines[0]
        elif self.lines:
            lines = np.concatenate(self.lines)
        else:
            lines = np.zeros(0, dtype=np.int64)
        total = self.rows + len(self.bad)
        r, b = self.rows, len(self.bad)
        if total > self.limit:
            if self.bad:
                bad_lines = np.fromiter((x.line for x in self.bad), np.int64, len(self.bad))
                cutoff = np.sort(np.concatenate([lines, bad_lines]))[self.limit]
                r = int(np.searchsorted(lines, cutoff))
                b = int(np.searchsorted(bad_lines, cutoff))
            else:
                r = self.limit
        if self.tables:
            table = self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)
        else:
            table = self.schema.empty_table()
        out, rest = table.slice(0, r), table.slice(r)
        self.tables = [rest] if rest.num_rows else []
        self.lines = [lines[r:]] if r < len(lines) else []
        bad, self.bad = self.bad[:b], self.bad[b:]
        self.rows -= r
        batch = Batch(self.source, self.index, out, lines[:r], None, bad)
        self.index += 1
        return batch


def iter_csv(
    source: Source, options: InputOptions, tuning: Tuning, stats: ReadStats
) -> Iterator[Batch]:
    """A CSV or TSV source's batches (``load.iter_batches`` for that format)."""
    csv_in = _CsvInput(source, options, tuning, stats)
    try:
        csv_in.open(tuning.block)
        yield from _csv_records(source, options, csv_in)
    finally:
        csv_in.close()


class _CsvInput:
    """Arrow's streaming CSV reader over one file, and what reading it again takes.

    Arrow fails on a record that does not fit in a block, and it holds a few blocks at a time
    (read ahead, decoded, parsed), so the block size sets the memory used. Reading starts with
    blocks of ``tuning.block``. A record too long for them makes ``restart`` read the file again
    from the start with ``large`` blocks, which hold two maximal fields: a too-long field is a
    bad record of its own, and a runaway quote a clear error. The file's rest is read with the
    larger blocks (a file with one huge field tends to have more), so it is read again at most
    once.
    """

    def __init__(
        self, source: Source, options: InputOptions, tuning: Tuning, stats: ReadStats
    ) -> None:
        self.source = source
        self.options = options
        self.tuning = tuning
        self.stats = stats
        self.large = tuning.large_block(options.max_field_bytes)
        self.block = 0
        self.raw: RawInput | None = None
        self.stream: Utf8Stream | None = None
        self.reader: Any = None
        #: Arrow's invalid rows (wrong width, or marked by ``Quotes``): record, text, reason,
        #: column
        self.invalid: list[tuple[int, str, str, str | None]] = []
        self.header_lines = 0

    def open(self, block: int) -> None:
        """Open the file (again) with blocks of ``block`` bytes, up to its first batch."""
        self.close()
        source = self.source
        path = source.path
        delimiter = source.delimiter or ","
        self.block = self.stats.block = block
        self.raw = RawInput(
            path,
            compressed=source.compressed,
            limit=self.options.max_decompressed_bytes,
            stats=self.stats,
        )
        quotes = Quotes(delimiter, source.escape_char, len(source.columns))
        self.stream = stream = Utf8Stream(
            self.raw,
            source.encoding,
            final_newline=True,
            throttle=True,
            quotes=quotes,
            chunk=self.tuning.chunk,
        )
        head = stream.peek(SAMPLE + 1)
        text = head[:SAMPLE].decode("utf-8", "replace")
        names, self.header_lines = parse_header(
            path, text, delimiter, len(head) <= SAMPLE, source.encoding, source.escape_char
        )
        if names != source.columns:
            raise LoadError(f"{path}: the header changed since the file was opened")
        self.invalid = invalid = []
        width = len(names)

        def on_invalid(row: Any) -> str:
            text = row.text
            marked = quotes.malformed_reason(text, names, delimiter, source.escape_char)
            if marked is not None:
                invalid.append((row.number, *marked))
            else:
                invalid.append((row.number, text, f"expected {width} fields, found "
                                f"{row.actual_columns}", None))  # fmt: skip
            return "skip"

        try:
            # Arrow reads its first blocks now, as many as the first record needs
            with stream.wanted():
                self.reader = pacsv.open_csv(
                    _ArrowFile(stream),
                    read_options=pacsv.ReadOptions(use_threads=False, block_size=block),
                    parse_options=pacsv.ParseOptions(
                        delimiter=delimiter,
                        quote_char='"',
                        double_quote=True,
                        escape_char=source.escape_char or False,
                        newlines_in_values=True,
                        ignore_empty_lines=False,
                        invalid_row_handler=on_invalid,
                    ),
                    convert_options=pacsv.ConvertOptions(
                        column_types={n: pa.string() for n in names},
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                        check_utf8=False,  # the stream hands on valid UTF-8 only
                    ),
                )
        except pa.ArrowInvalid as exc:
            if self.can_grow(exc):
                self.open(self.large)
                return
            raise _csv_failure(path, self.header_lines + 1, exc) from None
        if self.reader.schema.names != names:
            raise LoadError(f"{path}: cannot read the header as CSV")

    def can_grow(self, exc: Exception) -> bool:
        """Whether ``exc`` is Arrow failing on a record longer than a block smaller than
        ``large``."""
        return self.block < self.large and "straddl" in str(exc)

    def next_batch(self) -> pa.RecordBatch:
        assert self.stream is not None
        with self.stream.wanted():
            return self.reader.read_next_batch()

    def restart(self, record: int) -> pa.RecordBatch:
        """Read the file again with the larger block, up to ``record`` (Arrow's numbering:
        the header is 1). Returns the rest of the batch that holds it, which starts with its
        first good row from ``record`` on; ``invalid`` holds the bad ones from ``record`` on.
        Raises what reading from ``record`` on raises (StopIteration at the end).
        """
        self.stats.restarts.append(record)
        self.open(self.large)
        at = 2
        while True:
            try:
                rb = self.next_batch()
            except (StopIteration, pa.ArrowException, OSError) as exc:
                if at < record:  # records read before cannot fail now
                    raise LoadError(
                        f"{self.source.path}: the file changed while it was read ({exc})"
                    ) from None
                raise
            m = rb.num_rows
            invalid = self.invalid
            # the bad records before this batch's last row are in its stretch (as in
            # _csv_records)
            c = 0
            while c < len(invalid) and invalid[c][0] < at + m + c:
                c += 1
            if at + m + c <= record:
                del invalid[:c]
                at += m + c
                continue
            before = sum(1 for n, _, _, _ in invalid[:c] if n < record)
            del invalid[:before]
            rest: pa.RecordBatch = rb.slice(record - at - before)
            return rest

    def close(self) -> None:
        """Stop Arrow's reader and wait until its background thread has let go of the stream.

        Arrow's streaming reader reads ahead on a thread of its own, which calls the stream's
        ``read`` and holds a reference to it. Left running (the file failed, or the caller
        stopped early, as ``preview`` does), that thread may call into Python, or drop its
        reference, while the interpreter is shutting down: the process then aborts
        ("PyGILState_Release") or hangs at exit. So the stream is closed (every ``read``
        returns at once with the end of the file), the reader dropped, and this waits until
        Arrow has released the stream and every block it read (see ``Utf8Stream.lend``).
        """
        reader, self.reader = self.reader, None
        if self.stream is not None:
            self.stream.close()
            if reader is not None:
                reader.close()
                del reader
            if not self.stream.wait_returned(_RELEASE_WAIT):
                log.warning("%s: Arrow's CSV reader did not stop in time", self.source.path)
        if self.raw is not None:
            self.raw.close()


class _ArrowFile:
    """The file object Arrow's CSV reader gets: the stream's reading side, in an object only
    Arrow holds, counted by the stream among what Arrow holds (``Utf8Stream.lend``)."""

    def __init__(self, stream: Utf8Stream) -> None:
        self._stream = stream
        stream.lend(self)

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int | None = -1) -> Any:
        return self._stream.lend(memoryview(self._stream.read(n)))

    def close(self) -> None:
        self._stream.close()


def _csv_records(source: Source, options: InputOptions, csv_in: _CsvInput) -> Iterator[Batch]:
    names = source.columns
    delimiter = source.delimiter or ","
    asm = _Assembler(source, options.batch_rows, names)
    raw_sub = raw_substitute(source.encoding)
    record = 2  # logical record number of the next record (Arrow's numbering: header = 1)
    line = csv_in.header_lines + 1  # physical line where the next record starts
    last_kind = None  # 'row', 'bad' or 'empty': what the last record was
    failure: LoadError | None = None
    while True:
        try:
            try:
                rb = csv_in.next_batch()
            except (pa.ArrowException, OSError) as exc:
                if not csv_in.can_grow(exc):
                    raise
                # a record too long for the block: read again from it with larger blocks
                rb = csv_in.restart(record)
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as exc:
            failure = _csv_failure(source.path, line, exc)
            break
        stream = csv_in.stream
        assert stream is not None
        invalid = csv_in.invalid
        m = rb.num_rows
        if m == 0:
            continue
        # Invalid records that come before this batch's last row belong to its stretch: the
        # next one, numbered n, has n - record - c good rows before it; fewer than m -> here.
        c = 0
        while c < len(invalid) and invalid[c][0] < record + m + c:
            c += 1
        here, invalid[:c] = invalid[:c], []
        seg = m + c
        newlines = np.zeros(seg, dtype=np.int64)
        counts = _newline_counts(rb)
        if c:
            at = np.array([n - record for n, _, _, _ in here], dtype=np.int64)
            is_bad = np.zeros(seg, dtype=bool)
            is_bad[at] = True
            if counts is not None:
                newlines[~is_bad] = counts
            newlines[at] = [t.count("\n") for _, t, _, _ in here]
        elif counts is not None:
            newlines[:] = counts
        starts = line + np.arange(seg, dtype=np.int64) + np.cumsum(newlines) - newlines
        row_lines = starts[~is_bad] if c else starts
        record += seg
        line += seg + int(newlines.sum())
        bad = (
            [
                BadRecord(int(starts[i]), reason, column, text)
                for i, (_, text, reason, column) in zip(at.tolist(), here, strict=True)
                if not _blank_text(text, delimiter)
            ]
            if c
            else []
        )
        table, row_lines, row_bad, last_empty = _screen(
            rb,
            row_lines,
            names,
            delimiter,
            stream,
            options.max_field_bytes,
            raw_sub,
            source.escape_char,
        )
        if row_bad:
            bad = sorted(bad + row_bad, key=lambda b: b.line)
        if c and at[-1] == seg - 1:
            last_kind = "empty" if _blank_text(here[-1][1], delimiter) else "bad"
        else:
            last_kind = "empty" if last_empty else "row"
        if raw_sub != "\ufffd":
            for b in bad:
                b.raw = b.raw and b.raw.replace("\ufffd", raw_sub)
        asm.add(table, row_lines, bad)
        yield from asm.ready()

    stream = csv_in.stream
    assert stream is not None
    if failure is None:
        # invalid records after the last good row
        trailing = []
        for _, text, reason, column in csv_in.invalid:
            if _blank_text(text, delimiter):
                last_kind = "empty"
            else:
                last_kind = "bad"
                trailing.append(BadRecord(line, reason, column, text))
            line += 1 + text.count("\n")
        asm.add(asm.schema.empty_table(), np.zeros(0, dtype=np.int64), trailing)
        if stream.error is not None:
            _cut_off(asm, last_kind, delimiter)
            failure = stream.error
        else:
            _check_end(asm, last_kind, stream, delimiter)
    yield from asm.finish()
    if failure is not None:
        raise failure


def _blank_text(text: str, delimiter: str) -> bool:
    """A record of nothing but delimiters (and empty quotes): no data, not a record."""
    return not text.strip(delimiter + '"\r\n')


def _csv_failure(path: Path, line: int, exc: Exception) -> LoadError:
    text = str(exc)
    if "straddl" in text:
        return LoadError(
            f"{path}: line {line}: a record is too long to read (an unbalanced quote?); "
            f"nothing from line {line} on was read"
        )
    return LoadError(
        f"{path}: line {line}: cannot read CSV ({text}); nothing from line {line} on was read"
    )


def _cut_off(asm: _Assembler, last_kind: str | None, delimiter: str) -> None:
    """The file broke off: its last record may be cut short, so it is not delivered."""
    reason = "incomplete record: the file breaks off here"
    if last_kind == "bad":
        asm.bad[-1].reason = f"{reason} ({asm.bad[-1].reason})"
    elif last_kind == "row" and (found := asm.last_row()) is not None:
        row, line = found
        asm.drop_last_row()
        text = _csv_text(list(row.values()), delimiter, asm.source.escape_char)
        asm.bad.append(BadRecord(line, reason, None, text))


def _check_end(asm: _Assembler, last_kind: str | None, stream: Utf8Stream, delim: str) -> None:
    """A quote opened in the last record and never closed swallows the rest of the file into
    one value, which Arrow accepts: find that case and make the record a bad one."""
    if last_kind == "bad":
        bad = asm.bad[-1]
        if stream.quotes is not None and stream.quotes.inside:  # the file ends inside quotes
            bad.reason = f"unterminated quoted field at the end of the file ({bad.reason})"
        return
    if last_kind != "row":
        return
    found = asm.last_row()
    if found is None:
        return
    row, line = found
    values = list(row.values())
    last = values[-1]
    if not last.endswith(("\n", "\r")):
        return  # an unterminated value runs to the end of the file, newline included
    tail = stream.last_bytes
    for eol in (b"\r\n", b"\n", b"\r"):
        if tail.endswith(eol):
            tail = tail[: -len(eol)]
            break
    if tail.endswith((b'\n"', b'\r"')):
        return  # closed after its final newline
    asm.drop_last_row()
    escape = asm.source.escape_char
    raw = _csv_text(values[:-1], delim, escape) + delim if len(values) > 1 else ""
    raw += '"' + last.removesuffix("\n").replace('"', '""')
    asm.bad.append(
        BadRecord(
            line,
            "unterminated quoted field: the file ends inside quotes",
            asm.schema.names[-1],
            raw,
        )
    )


def _newline_counts(rb: pa.RecordBatch) -> np.ndarray | None:
    """Newlines inside each row's values (quoted newlines), or None if there are none."""
    total = None
    for col in rb.columns:
        data = col.buffers()[2]
        if data is None or data.to_pybytes().find(b"\n") < 0:
            continue
        counts = pc.count_substring(col, "\n").to_numpy(zero_copy_only=False)
        total = counts.astype(np.int64) if total is None else total + counts
    return total


def _screen(
    rb: pa.RecordBatch,
    lines: np.ndarray,
    names: list[str],
    delimiter: str,
    stream: Utf8Stream,
    max_bytes: int,
    raw_sub: str,
    escape: str | None = None,
) -> tuple[pa.Table, np.ndarray, list[BadRecord], bool]:
    """Drop empty records (blank lines) and take out rows with bad values."""
    n = rb.num_rows
    keep = None
    empty = _empty_rows(rb)
    if empty is not None:
        keep = ~empty
    last_empty = bool(empty is not None and empty[-1])
    problems = value_problems(rb.columns, names, stream, max_bytes)
    bad: list[BadRecord] = []
    if problems:
        if keep is None:
            keep = np.ones(n, dtype=bool)
        rows = sorted(problems)
        keep[rows] = False
        picked = rb.take(pa.array(rows, pa.int64())).to_pylist()
        for i, values in zip(rows, picked, strict=True):
            reason, column = problems[i]
            text = _csv_text(list(values.values()), delimiter, escape).replace("\ufffd", raw_sub)
            bad.append(BadRecord(int(lines[i]), reason, column, text))
    table = pa.Table.from_batches([rb])
    if keep is not None and not keep.all():
        table = table.filter(pa.array(keep))
        lines = lines[keep]
    return table, lines, bad, last_empty


def _lengths(arr: pa.Array) -> np.ndarray:
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    return np.diff(offsets)


def _empty_rows(rb: pa.RecordBatch) -> np.ndarray | None:
    """Rows whose every value is empty (blank lines, or only delimiters), or None."""
    empty = None
    for col in rb.columns:
        zero = _lengths(col) == 0
        empty = zero if empty is None else empty & zero
        if not empty.any():
            return None
    return empty


def _csv_text(values: Sequence[str | None], delimiter: str, escape: str | None = None) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, escapechar=escape, lineterminator="\n").writerow(values)
    return buf.getvalue()[:-1]
