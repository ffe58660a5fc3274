"""What the end of a file says: whether its last record is cut (no final line break and a
short record), and how many data rows it holds (``input.min_rows``, a manifest's rows)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from ..load import InputOptions, Source, iter_batches

#: bytes of a file's end read to find its last line; a longer last line is judged by the loader
TAIL = 1 << 20
_CHUNK = 1 << 20
_CUT = "and the file does not end with a line break: the export looks cut off"


def _ascii_compatible(encoding: str) -> bool:
    """Whether ``encoding`` writes line breaks, quotes and delimiters as ASCII bytes (UTF-8,
    GB18030, Latin-1 ...; not UTF-16 or UTF-32)."""
    try:
        return '\n\r",{}\t'.encode(encoding) == b'\n\r",{}\t'
    except (LookupError, UnicodeError):
        return False


def read_tail(source: Source) -> tuple[bytes, bool]:
    """The last ``TAIL`` bytes of ``source`` (decompressed for a ``.gz``: that reads it all),
    and whether they are the whole file."""
    if source.compressed:
        tail, whole = b"", True
        with gzip.open(source.path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                tail += chunk
                if len(tail) > 2 * TAIL:
                    tail, whole = tail[-TAIL:], False
        return (tail[-TAIL:], whole and len(tail) <= TAIL)
    size = source.path.stat().st_size
    with open(source.path, "rb") as fh:
        fh.seek(max(0, size - TAIL))
        return fh.read(), size <= TAIL


def _read_tail_text(source: Source) -> tuple[str, bool]:
    """The last ``TAIL`` characters of a file in an encoding that is not ASCII-compatible
    (UTF-16, UTF-32), decoded from its start (its byte-order mark decides), and whether they
    are the whole file."""
    tail, whole = "", True
    opener = gzip.open if source.compressed else open
    with opener(source.path, "rt", encoding=source.encoding, errors="replace", newline="") as fh:
        while chunk := fh.read(_CHUNK):
            tail += chunk
            if len(tail) > 2 * TAIL:
                tail, whole = tail[-TAIL:], False
    return tail[-TAIL:], whole and len(tail) <= TAIL


def cut_record(source: Source, options: InputOptions) -> str | None:
    """Why ``source``'s last record looks cut off, or None: the file does not end with a line
    break, and its last record is short (CSV: fewer fields than the header) or not valid JSON
    (JSON Lines). Parquet and in-memory sources: None (a cut Parquet file does not open)."""
    if source.frame is not None or source.format not in ("csv", "jsonl"):
        return None
    encoding = "utf-8" if source.encoding in ("utf-8-sig", "binary") else source.encoding
    if _ascii_compatible(encoding):
        tail, whole = read_tail(source)
        if not tail or tail.endswith((b"\n", b"\r")):
            return None
        text = tail.decode(encoding, errors="replace")
    else:  # UTF-16 and the like: decoded from the start, where the byte-order mark is
        encoding = source.encoding
        text, whole = _read_tail_text(source)
        if not text or text.endswith(("\n", "\r")):
            return None
    cut = text.rfind("\n")
    if cut < 0 and not whole:  # a last line longer than TAIL: the loader judges it
        return _cut_by_loader(source, options)
    last = text[cut + 1 :]
    if source.format == "jsonl":
        if not last.strip():
            return None
        try:
            json.loads(last)
        except ValueError:
            size = len(last.encode("utf-8", errors="replace"))
            return _cut_off(f"line ({size:,} bytes) is not valid JSON")
        return None
    if cut < 0:  # the header alone, without a line break: nothing cut that can be told
        return None
    if last.count('"') % 2:  # a quoted field may have started on an earlier line
        return _cut_by_loader(source, options)
    fields = _fields(last, source)
    return _short(fields, len(source.columns))


def _fields(text: str, source: Source) -> int:
    """How many fields one line of CSV text holds."""
    delimiter = source.delimiter or ","
    reader = csv.reader([text], delimiter=delimiter, escapechar=source.escape_char, strict=False)
    return max((len(row) for row in reader), default=0)


def _short(fields: int, width: int) -> str | None:
    if fields >= width:
        return None
    return _cut_off(f"record has {fields} of the header's {width} fields")


def _cut_off(last: str) -> str:
    """What is said of a file whose last record (``last``: what is wrong with it) is cut."""
    return f"its last {last} {_CUT}"


def _cut_by_loader(source: Source, options: InputOptions) -> str | None:
    """``cut_record`` by reading the file: its last record as the loader sees it (a bad record
    after the last good row: its fields counted; CSV only, JSON Lines lines are short)."""
    last_good, last_bad = 0, None
    for batch in iter_batches(source, options):
        if len(batch.lines):
            last_good = max(last_good, int(batch.lines[-1]))
        for bad in batch.bad:
            if last_bad is None or bad.line >= last_bad.line:
                last_bad = bad
    if last_bad is None or last_bad.line < last_good:
        return None
    if source.format == "jsonl":
        return _cut_off("line is not valid JSON")
    if last_bad.raw is None:
        return None
    if last_bad.raw.count('"') % 2:
        return _cut_off("record ends inside a quoted field")
    return _short(_fields(last_bad.raw.replace("\r", " ").replace("\n", " "), source),
                  len(source.columns))  # fmt: skip


def count_rows(source: Source, options: InputOptions, at_least: int | None = None) -> int:
    """The data rows of ``source`` (its records, the header not counted; a record the loader
    cannot read counts too): a Parquet file's from its footer, else by reading the file --
    only until ``at_least`` rows were counted, when given (then the count may be short of
    the file's)."""
    if source.frame is None and source.format == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(Path(source.path)).metadata.num_rows)
    rows = 0
    batches = iter_batches(source, options, list(source.columns)[:1] or None)
    try:
        for batch in batches:
            rows += batch.table.num_rows + len(batch.bad)
            if at_least is not None and rows >= at_least:
                break
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # the reader's threads stop here, also when this stopped early
    return rows
