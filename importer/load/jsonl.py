"""JSON Lines: runs of lines read by Arrow's JSON reader where that gives what reading each
line gives, every other line read one at a time with Python's decoder.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ..errors import LoadError
from .batch import BadRecord, Batch, Source
from .options import InputOptions, ReadStats, Tuning
from .textstream import RawInput, Utf8Stream, ascii_compatible, display_encoding
from .values import fffd_reason, raw_substitute, rows_matching


class _DuplicateKey(ValueError):
    pass


class _Constant(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _Constant(name)


# Numbers arrive as their text (parse_int/parse_float=str): exactly as written. One decoder
# for all lines: json.loads with hooks would build a new one per call.
_JSON = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=str, parse_float=str
)
# The same without the Python hook, for a line that is a flat object: each object is a tuple
# of its pairs. Anything else it reads, or fails to, goes to _JSON again for the exact result.
_SCAN = json.JSONDecoder(
    object_pairs_hook=tuple, parse_constant=_constant, parse_int=str, parse_float=str
).scan_once  # type: ignore[attr-defined]
_BOOL_TEXT = {True: "true", False: "false"}
_PLAIN_TYPES = frozenset({str, type(None)})
_FLAT_TYPES = frozenset({str, type(None), bool})


def _split_blocks(
    read: Callable[[int], bytes], max_line: int, chunk: int
) -> Iterator[tuple[int, bytes | None]]:
    """(number of the first line, lines) for the whole lines of each piece of ``chunk`` bytes
    read: their bytes joined by newlines, without the last newline; or None for a line longer
    than ``max_line``, which is skipped without holding it in memory."""
    carry = b""
    number = 0  # lines handed on so far
    skipping = False
    while piece := read(chunk):
        if skipping:
            i = piece.find(b"\n")
            if i < 0:
                continue
            number += 1
            yield number, None
            piece, skipping = piece[i + 1 :], False
        data = carry + piece if carry else piece
        cut = data.rfind(b"\n")
        if cut >= 0:
            block, carry = data[:cut], data[cut + 1 :]
            parts = block.split(b"\n") if len(block) > max_line else None
            if parts is None or max(map(len, parts)) <= max_line:
                yield number + 1, block
                number += len(parts) if parts is not None else block.count(b"\n") + 1
            else:
                short: list[bytes] = []  # the lines since the last one too long
                for part in parts:
                    if len(part) <= max_line:
                        short.append(part)
                        continue
                    if short:
                        yield number + 1, b"\n".join(short)
                        number += len(short)
                        short = []
                    number += 1
                    yield number, None
                if short:
                    yield number + 1, b"\n".join(short)
                    number += len(short)
        else:
            carry = data
        if len(carry) > max_line:
            carry, skipping = b"", True
    if skipping:
        yield number + 1, None
    elif carry:
        yield number + 1, carry


def iter_jsonl(
    source: Source, options: InputOptions, names: list[str], tuning: Tuning, stats: ReadStats
) -> Iterator[Batch]:
    """A JSON Lines source's batches, with the keys ``names`` as the table's columns."""
    path = source.path
    encoding = source.encoding
    max_line = tuning.max_line(options.max_field_bytes)
    raw = RawInput(
        path, compressed=source.compressed, limit=options.max_decompressed_bytes, stats=stats
    )
    stream: Utf8Stream | None = None
    if ascii_compatible(encoding):
        read = raw.read  # split on b"\n", then decode each line: exact per-line errors
        codec = "utf-8" if encoding == "utf-8-sig" else encoding
    else:
        stream = Utf8Stream(raw, encoding, final_newline=False, chunk=tuning.chunk)
        read, codec = stream.read_bytes, "utf-8"
    if not names:
        raw.close()
        raise LoadError(
            f"{path}: no JSON object in the first lines to take column names from; "
            "name the columns in the config"
        )
    line_reader = _JsonLines(names, codec, stream, options.max_field_bytes)
    fast = _JsonBlocks(names, codec, options.max_field_bytes, tuning.jsonl_engine == "auto")
    out = _JsonBatches(source, names, options.batch_rows)
    blocks = _split_blocks(read, max_line, tuning.chunk)
    try:
        while True:
            try:
                first, block = next(blocks)
            except StopIteration:
                break
            except LoadError:
                # deliver what was read before the file broke, then say so
                if out.count:
                    yield out.batch()
                raise
            if block is None:
                bad = BadRecord(first, f"line longer than {max_line} bytes", None, None)
                if out.add_bad(bad):
                    yield out.batch()
                continue
            parts: list[bytes] | None = None
            for start, end, table, texts in fast.runs(block):
                if table is not None:
                    assert texts is not None
                    stats.arrow_lines += end - start
                    yield from out.add_table(table, first + start, texts)
                    continue
                stats.single_lines += end - start
                if parts is None:
                    parts = block.split(b"\n")
                for i in range(start, end):
                    number = first + i
                    if record := line_reader.read(number, parts[i]):
                        if type(record) is BadRecord:
                            full = out.add_bad(record)
                        else:
                            text, row = record  # type: ignore[misc]
                            full = out.add_row(number, text, row)
                        if full:
                            yield out.batch()
        if out.count:
            yield out.batch()
        if stream is not None and stream.error is not None:
            raise stream.error
    finally:
        stats.failed_reads += fast.failed_reads
        raw.close()


class _JsonBatches:
    """Good rows (runs read by Arrow, and single rows) and bad records of a JSON Lines file, in
    file order, cut into batches of ``limit`` records."""

    def __init__(self, source: Source, names: list[str], limit: int) -> None:
        self.source = source
        self.names = names
        self.limit = limit
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.index = 0
        self.count = 0  # records (rows and bad ones) in the batch being filled
        self.tables: list[pa.Table] = []
        self.lines: list[np.ndarray] = []
        self.rows: list[tuple[str | None, ...]] = []  # single rows not yet in ``tables``
        self.row_lines: list[int] = []
        self.raws: list[str] = []
        self.bad: list[BadRecord] = []

    def add_row(self, number: int, text: str, row: tuple[str | None, ...]) -> bool:
        """Add one row; True when the batch is full."""
        self.rows.append(row)
        self.row_lines.append(number)
        self.raws.append(text)
        self.count += 1
        return self.count >= self.limit

    def add_bad(self, bad: BadRecord) -> bool:
        """Add one bad record; True when the batch is full."""
        self.bad.append(bad)
        self.count += 1
        return self.count >= self.limit

    def add_table(self, table: pa.Table, first: int, texts: list[str]) -> Iterator[Batch]:
        """Rows on consecutive lines from ``first``, and their texts."""
        n = table.num_rows
        done = 0
        while done < n:
            take = min(n - done, self.limit - self.count)
            self._flush_rows()
            piece = table if take == n else table.slice(done, take)
            self.tables.append(piece)
            self.lines.append(np.arange(first + done, first + done + take, dtype=np.int64))
            self.raws.extend(texts if take == n else texts[done : done + take])
            self.count += take
            done += take
            if self.count >= self.limit:
                yield self.batch()

    def _flush_rows(self) -> None:
        if self.rows:
            columns = list(zip(*self.rows, strict=True))
            arrays = [pa.array(c, pa.string()) for c in columns]
            self.tables.append(pa.Table.from_arrays(arrays, schema=self.schema))
            self.lines.append(np.array(self.row_lines, dtype=np.int64))
            self.rows, self.row_lines = [], []

    def batch(self) -> Batch:
        self._flush_rows()
        if not self.tables:
            table = self.schema.empty_table()
            lines = np.zeros(0, dtype=np.int64)
        elif len(self.tables) == 1:
            table, lines = self.tables[0], self.lines[0]
        else:
            table = pa.concat_tables(self.tables)
            lines = np.concatenate(self.lines)
        out = Batch(self.source, self.index, table, lines, self.raws, self.bad)
        self.index += 1
        self.count = 0
        self.tables, self.lines, self.raws, self.bad = [], [], [], []
        return out


_NAN_WORDS = (b"NaN", b"Infinity")  # Arrow reads them as numbers; Python's decoder refuses them
# '{' and '[' on a line beyond which it never goes to Arrow: Arrow's reader crashes the process
# (a C stack overflow) some thousands of levels deep, and Python's decoder refuses a line
# deeper than its recursion limit, which Arrow would accept
_NESTING = 64
#: Arrow may read up to this many times a block's bytes in reads that fail (or are of no use)
#: before the runs that fail go line by line: a failed run is cut in ``_PIECES``, so a bad
#: line among n is found in about log4(n) rounds, reading about n * 4/3 bytes in vain
_ARROW_RETRIES = 2
#: and at most this many of a block's reads may fail: a run cut down to a few lines costs a
#: read per piece, and where bad lines are everywhere (a column holding numbers and strings)
#: the byte bound alone lets thousands of small reads through, costlier than reading lines
#: one at a time (about 64 reads find three bad lines among 100,000)
_ARROW_FAILED_READS = 64
_PIECES = 4
_ARROW_BACKOFF = 16  # most blocks read line by line after blocks Arrow could not read
_Run = tuple[int, int, "pa.Table | None", "list[str] | None"]


class _JsonBlocks:
    """Reads runs of lines of a JSON Lines file with Arrow's JSON reader, many at once.

    The per-line reader (``_JsonLines``) defines the result. A run of lines goes to Arrow only
    where Arrow gives the same, and Arrow's rows are taken only when it reads the whole run:

    - every line of the run is one JSON object on its own: it starts with '{' and ends with
      '}', and Arrow reads as many rows as there are lines (a value cannot go on across a
      newline, as the next line starts with '{'). A blank line, a BOM, surrounding spaces go
      line by line;
    - the requested columns are read as strings while they hold strings. Once one holds a
      number or a boolean, Arrow infers its type: booleans become 'true' and 'false', integers
      their digits (a zero may have been '-0': that line goes line by line); any other type
      (a fraction, whose text Arrow does not keep, a nested value) sends the run line by line;
    - the other keys are read with inferred types, so Arrow checks every key at any depth: a
      duplicate key is an error, and that line goes line by line (where it is a bad record);
    - a line with more than ``_NESTING`` '{' and '[' goes line by line before Arrow sees it:
      Arrow crashes the process on deep enough nesting (a count of the block's brackets
      decides whether a line can hold that many), and Python's decoder refuses it where Arrow
      might not;
    - what Arrow accepts and Python's decoder does not (NaN, Infinity) goes line by line, and
      so does what needs a closer look: undecodable bytes, U+FFFD, a NUL in a requested value,
      a line longer than ``max_bytes``.

    Arrow's error messages are not read (their wording changes between Arrow versions): a run
    Arrow cannot read is first read again with every type inferred, which shows the requested
    columns holding other than strings (from then on read with their inferred types); failing
    that, it is cut in ``_PIECES`` and each piece read again, down to single lines, which go
    line by line, while the failed reads of the block stay under ``_ARROW_RETRIES`` times its
    size and their count under ``_ARROW_FAILED_READS``. After a block Arrow could read nothing
    of, the next few blocks go line by line (more after each such block): Arrow's attempts
    cost little then.
    """

    def __init__(self, names: list[str], codec: str, max_bytes: int, arrow: bool = True) -> None:
        self.names = names
        self.codec = codec
        self.max_bytes = max_bytes
        #: False (``Tuning.jsonl_engine="lines"``, or a column requested twice): every line
        #: one at a time
        self.enabled = arrow and len(set(names)) == len(names)
        self.typed: set[str] = set()  # requested columns found to hold other than strings
        self.parse_options = self._options()
        self.budget = 0  # bytes Arrow may still read in vain in this block
        self.reads_left = 0  # reads that may still fail in this block
        self.failed_reads = 0  # reads that failed, over the whole file
        self.skip = 0  # blocks to read line by line before trying Arrow again
        self.backoff = 0
        self.block = b""
        self.starts = self.ends = np.zeros(0, dtype=np.int64)  # each line's bytes in ``block``

    def _options(self) -> pajson.ParseOptions:
        strings = [(n, pa.string()) for n in self.names if n not in self.typed]
        return pajson.ParseOptions(
            explicit_schema=pa.schema(strings), unexpected_field_behavior="infer"
        )

    def runs(self, block: bytes) -> list[_Run]:
        """The block's lines in order, as (start, end, table, texts): a run of lines Arrow
        read, its table (the requested columns) and the lines' texts; or lines to read one at a
        time (table and texts None)."""
        view = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(view == 10)
        n = len(newlines) + 1
        if not self.enabled or self.skip:
            self.skip = max(0, self.skip - 1)
            return [(0, n, None, None)]
        if b"\r" in block:  # the lines' texts end before a CR
            block = b"\n".join(p[:-1] if p.endswith(b"\r") else p for p in block.split(b"\n"))
            view = np.frombuffer(block, dtype=np.uint8)
            newlines = np.flatnonzero(view == 10)
        self.block = block
        self.starts = np.concatenate(([0], newlines + 1))
        self.ends = np.append(newlines, len(block))
        self.budget = _ARROW_RETRIES * len(block)
        self.reads_left = _ARROW_FAILED_READS
        try:
            runs = self._runs(view, newlines, n)
        finally:
            self.block = b""
        if any(table is not None for _, _, table, _ in runs):
            self.backoff = 0
        else:
            self.backoff = min(2 * self.backoff or 1, _ARROW_BACKOFF)
            self.skip = self.backoff
        return runs

    def _runs(self, view: np.ndarray, newlines: np.ndarray, n: int) -> list[_Run]:
        block = self.block
        # A line's depth is at most its count of '{' and '[', and every line Arrow reads
        # starts with '{': when the block holds fewer than ``_NESTING`` more of them than it
        # has such lines, no line can hold more than ``_NESTING``.
        openings = int(np.count_nonzero(view == 0x7B)) + int(np.count_nonzero(view == 0x5B))
        if (
            block.startswith(b"{")
            and block.endswith(b"}")
            and (view[newlines - 1] == 0x7D).all()
            and (view[newlines + 1] == 0x7B).all()
            and len(block) <= self.max_bytes
            and openings - n < _NESTING
        ):
            return self._read(0, n)
        lengths = self.ends - self.starts
        nonempty = lengths > 0
        plain = nonempty.copy()
        plain[nonempty] = (view[self.starts[nonempty]] == 0x7B) & (
            view[self.ends[nonempty] - 1] == 0x7D
        )
        plain &= lengths <= self.max_bytes
        if openings - int(np.count_nonzero(plain)) >= _NESTING:  # then count them line by line
            counts = np.cumsum((view == 0x7B) | (view == 0x5B), dtype=np.int64)
            counts = np.concatenate(([0], counts))
            plain &= counts[self.ends] - counts[self.starts] <= _NESTING
        out: list[_Run] = []
        start = 0
        for i in np.flatnonzero(~plain).tolist():
            out += self._read(start, i)
            out.append((i, i + 1, None, None))
            start = i + 1
        out += self._read(start, n)
        return out

    def _read(self, start: int, end: int) -> list[_Run]:
        """Lines ``start`` to ``end`` as runs."""
        if start >= end:
            return []
        if self.budget <= 0 or self.reads_left <= 0:
            return [(start, end, None, None)]
        first, last = int(self.starts[start]), int(self.ends[end - 1])
        whole = first == 0 and last == len(self.block)
        data = self.block if whole else self.block[first:last]
        # decoded after Arrow read it when UTF-8: an Arrow error comes first, and cheaply
        text = None if self.codec == "utf-8" else self._decode(data)
        if isinstance(text, int):
            return self._split(start, end, start + text)
        utf8 = data if text is None else text.encode()
        try:
            table = pajson.read_json(
                pa.BufferReader(utf8),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(utf8) + 1),
                parse_options=self.parse_options,
            )
        except pa.ArrowInvalid:
            self.failed_reads += 1
            if self._learn_types(utf8):
                return self._read(start, end)
            self.budget -= len(utf8)
            self.reads_left -= 1
            if end - start == 1:
                return [(start, end, None, None)]
            cuts = np.linspace(start, end, min(_PIECES, end - start) + 1).astype(int).tolist()
            return [r for a, b in itertools.pairwise(cuts) for r in self._read(a, b)]
        if table.num_rows != end - start:
            self.budget -= len(utf8)
            return [(start, end, None, None)]
        if text is None:
            text = self._decode(data)
            if isinstance(text, int):
                return self._split(start, end, start + text)
        texts = text.split("\n")
        odd: set[int] = set()
        columns = _text_columns(table, self.names, self.typed, odd)
        if columns is None:
            self.budget -= len(utf8)
            return [(start, end, None, None)]
        _odd_rows(table, columns, data, text, texts, odd)
        table = pa.Table.from_arrays(columns, names=self.names)
        if not odd:
            return [(start, end, table, texts)]
        out: list[_Run] = []
        at = 0
        for row in sorted(odd):
            if row > at:
                out.append((start + at, start + row, table.slice(at, row - at), texts[at:row]))
            out.append((start + row, start + row + 1, None, None))
            at = row + 1
        if at < end - start:
            out.append((start + at, end, table.slice(at), texts[at:]))
        return out

    def _learn_types(self, utf8: bytes) -> bool:
        """After Arrow failed on lines ``utf8``: read the first of them again with every type
        inferred (a column of numbers has one in its first line; a rarer one is found when the
        run is cut down to its line). The requested columns that hold numbers, booleans or
        nested values there are read with their inferred types from now on: True. False when
        that shows nothing new (the line holds something else Arrow refuses, such as a
        duplicate key, or the failure is further on)."""
        pending = [n for n in self.names if n not in self.typed]
        if not pending:
            return False
        eol = utf8.find(b"\n")
        line = utf8 if eol < 0 else utf8[:eol]
        try:
            table = pajson.read_json(
                pa.BufferReader(line),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(line) + 1),
                parse_options=pajson.ParseOptions(unexpected_field_behavior="infer"),
            )
        except pa.ArrowInvalid:
            return False
        schema = table.schema
        found = {n for n in pending if n in schema.names and not _text_like(schema.field(n).type)}
        if not found:
            return False
        self.typed |= found
        self.parse_options = self._options()
        return True

    def _decode(self, data: bytes) -> str | int:
        """The text, or the line (counted from 0) of the first undecodable bytes."""
        try:
            return data.decode(self.codec)
        except UnicodeDecodeError as exc:
            return data.count(b"\n", 0, exc.start)

    def _split(self, start: int, end: int, at: int) -> list[_Run]:
        """Line ``at`` one at a time, the lines around it with Arrow again."""
        self.budget -= int(self.ends[end - 1] - self.starts[start])
        return [*self._read(start, at), (at, at + 1, None, None), *self._read(at + 1, end)]


def _text_columns(
    table: pa.Table, names: list[str], typed: set[str], odd: set[int]
) -> list[pa.ChunkedArray] | None:
    """The requested columns ``names`` (``typed``: those read with inferred types) as text,
    or None if one cannot be: adds to ``odd`` the rows whose text may differ (a zero that may
    have been '-0')."""
    columns = []
    for name in names:
        if name not in typed:
            columns.append(table.column(name))
            continue
        if name not in table.column_names:  # in no line of the run
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, pa.string())]))
            continue
        column = table.column(name)
        t = column.type
        if pa.types.is_string(t):
            pass
        elif pa.types.is_null(t):
            column = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        elif pa.types.is_boolean(t):
            column = pc.if_else(column, "true", "false")
        elif pa.types.is_int64(t):
            zero = pc.fill_null(pc.equal(column, 0), False).to_numpy(zero_copy_only=False)
            odd.update(np.flatnonzero(zero).tolist())
            column = pc.cast(column, pa.string())
        else:
            return None
        columns.append(column)
    return columns


def _odd_rows(
    table: pa.Table,
    columns: list[pa.ChunkedArray],
    data: bytes,
    text: str,
    texts: list[str],
    odd: set[int],
) -> None:
    """Add the rows of a run Arrow read that must go line by line after all."""
    if "\ufffd" in text:
        odd.update(i for i, t in enumerate(texts) if "\ufffd" in t)
    if _has_float(table.schema) and any(word in data for word in _NAN_WORDS):
        odd.update(i for i, t in enumerate(texts) if "NaN" in t or "Infinity" in t)
    for column in columns:
        for chunk in column.chunks:
            buf = chunk.buffers()[2]
            if buf is not None and buf.size and not np.frombuffer(buf, np.uint8).all():
                odd.update(rows_matching(column.combine_chunks(), "\x00").tolist())
                break


def _text_like(t: pa.DataType) -> bool:
    """A type Arrow infers for JSON strings (timestamps from strings that look like them) or
    for nulls alone."""
    return pa.types.is_string(t) or pa.types.is_timestamp(t) or pa.types.is_null(t)


def _has_float(schema: pa.Schema) -> bool:
    """True if the schema has a floating-point type, at any depth."""
    todo = [f.type for f in schema]
    while todo:
        t = todo.pop()
        if pa.types.is_floating(t):
            return True
        if pa.types.is_struct(t):
            todo.extend(t.field(i).type for i in range(t.num_fields))
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            todo.append(t.value_type)
    return False


class _JsonLines:
    """Turns one line of a JSON Lines file into the requested columns' text, or a bad record."""

    def __init__(
        self, names: list[str], codec: str, stream: Utf8Stream | None, max_bytes: int
    ) -> None:
        self.names = names
        self.codec = codec
        self.encoding = display_encoding(stream.encoding if stream else codec)
        self.stream = stream
        self.max_bytes = max_bytes
        self.raw_sub = raw_substitute(stream.encoding if stream else codec)

    def read(
        self, number: int, data: bytes
    ) -> BadRecord | tuple[str, tuple[str | None, ...]] | None:
        """None for a blank line, a BadRecord, or (the line's text, the values)."""
        if data.endswith(b"\r"):
            data = data[:-1]
        undecodable = False
        try:
            text = data.decode(self.codec)
        except UnicodeDecodeError:
            text = data.decode(self.codec, "replace")
            undecodable = True
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip(" \t"):
            return None
        try:
            obj = _flat_object(text) or _JSON.decode(text)
        except _DuplicateKey as exc:
            return self.bad(number, text, f'duplicate key "{exc.args[0]}"', exc.args[0])
        except _Constant as exc:
            return self.bad(number, text, f"invalid JSON: {exc.args[0]} is not a JSON value")
        except json.JSONDecodeError as exc:
            if undecodable:
                return self.bad(number, text, f"undecodable bytes (not valid {self.encoding})")
            where = "column" if exc.msg.endswith(" at") else "at column"
            return self.bad(number, text, f"invalid JSON: {exc.msg} {where} {exc.colno}")
        except RecursionError:
            return self.bad(number, text, "invalid JSON: nested too deeply")
        if type(obj) is not dict:
            return self.bad(number, text, "line is not a JSON object")
        if undecodable or "\ufffd" in text:
            column = next(
                (n for n in self.names if isinstance(obj.get(n), str) and "\ufffd" in obj[n]), None
            )
            if undecodable:
                where = f' in column "{column}"' if column else ""
                reason = f"undecodable bytes (not valid {self.encoding}){where}"
            else:
                reason = fffd_reason(self.stream, column)
            return self.bad(number, text, reason, column)
        row = tuple(map(obj.get, self.names))
        if not _PLAIN_TYPES.issuperset(map(type, row)):
            return self._convert(number, text, obj)  # booleans, or a nested value
        if "\\u" in text or len(data) > self.max_bytes:  # \u0000, or a lone surrogate
            for name, value in zip(self.names, row, strict=True):
                problem = _text_problem(value, name, self.max_bytes)
                if problem:
                    return self.bad(number, text, problem, name)
        return text, row

    def _convert(
        self, number: int, text: str, obj: dict[str, Any]
    ) -> BadRecord | tuple[str, tuple[str | None, ...]]:
        row: list[str | None] = []
        for name in self.names:
            value = obj.get(name)
            if type(value) is bool:
                value = _BOOL_TEXT[value]
            elif value is not None and type(value) is not str:
                return self.bad(
                    number, text, f'nested value in column "{name}" is not supported', name
                )
            problem = _text_problem(value, name, self.max_bytes)
            if problem:
                return self.bad(number, text, problem, name)
            row.append(value)
        return text, tuple(row)

    def bad(self, number: int, text: str, reason: str, column: str | None = None) -> BadRecord:
        if self.raw_sub != "\ufffd":
            text = text.replace("\ufffd", self.raw_sub)
        return BadRecord(number, reason, column, text)


def _flat_object(text: str) -> dict[str, Any] | None:
    """The object on a line that holds just a flat JSON object without duplicate keys (what
    ``_JSON.decode`` returns for it), read without its Python hook; None for any other line."""
    if not text.startswith("{"):
        return None
    try:
        pairs, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):  # JSONDecodeError, _Constant
        return None
    if end != len(text) or type(pairs) is not tuple:
        return None
    obj = dict(pairs)
    if len(obj) != len(pairs) or not _FLAT_TYPES.issuperset(map(type, obj.values())):
        return None  # a duplicate key, or a nested value (which may hold one)
    return obj


def _text_problem(value: str | None, name: str, max_bytes: int) -> str | None:
    if value is None:
        return None
    if "\x00" in value:
        return f'NUL byte in column "{name}"'
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # an escaped surrogate without its pair: not text
            return f'unpaired surrogate (\\ud800-\\udfff escape) in column "{name}"'
    if len(value) * 4 > max_bytes and (size := len(value.encode())) > max_bytes:
        return (
            f'value in column "{name}" is {size} bytes, over the {max_bytes}-byte limit '
            "(input.max_field_bytes)"
        )
    return None
