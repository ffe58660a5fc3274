"""Parquet: the schema checked on opening, and row groups read as text columns."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import LoadError
from .batch import BadRecord, Batch, Source
from .options import InputOptions, ReadStats
from .values import quote_names, value_problems

_Data = TypeVar("_Data", pa.RecordBatch, pa.Table)

#: what follows the footer of an encrypted file whose footer is plaintext: its signature, an
#: AES-GCM nonce (12 bytes) and tag (16)
_SIGNATURE_BYTES = 28
_ENCRYPTED = (
    "this is an encrypted Parquet file (Parquet modular encryption), which is not supported: "
    "export it unencrypted"
)


def open_parquet(path: Path, head: bytes) -> Source:
    """The checked ``Source`` of a Parquet file whose first bytes are ``head``; LoadError for
    a file that is not Parquet or is encrypted, or for duplicate column names. Columns that
    cannot be read as text are the source's ``unsupported`` ones."""
    if head.startswith(b"PARE"):  # the footer is encrypted too: not even the schema is readable
        raise LoadError(f"{path}: {_ENCRYPTED}")
    if not head.startswith(b"PAR1"):
        raise LoadError(f"{path}: not a Parquet file (it does not start with PAR1)")
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        signed = _footer_length(path) - pf.metadata.serialized_size == _SIGNATURE_BYTES
    except (pa.ArrowException, OSError) as exc:
        raise LoadError(f"{path}: not a readable Parquet file: {exc}") from None
    if signed:
        # An encrypted file with a plaintext footer: the schema reads, and its encrypted
        # columns fail only when read. Read the first rows now, before anything is sent.
        try:
            next(pf.iter_batches(batch_size=1, use_threads=False), None)
        except (pa.ArrowException, OSError) as exc:
            if "crypt" in str(exc):
                raise LoadError(f"{path}: {_ENCRYPTED}") from None
            # any other fault is reported where the rows are read, after the rows before it
    unsupported = unsupported_columns(schema)
    names = schema.names
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise LoadError(f"{path}: duplicate column names in the schema: {quote_names(dups)}")
    return Source(path, "parquet", "binary", None, False, names, True, unsupported)


def _footer_length(path: Path) -> int:
    """The footer length a Parquet file states in its last 8 bytes."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _castable(t: pa.DataType) -> bool:
    try:
        _to_text(pa.array([], t), "", 0)
    except (pa.ArrowException, ValueError):
        return False
    return True


def iter_parquet(
    source: Source, options: InputOptions, read: list[str], stats: ReadStats | None = None
) -> Iterator[Batch]:
    """Batches whose table holds the columns in ``read`` as text, checked. The other columns
    are neither converted nor checked, so they decide nothing; a batch's ``original`` keeps
    every column for the rejects file. ``stats.position``: the file's size times the share of
    its rows read."""
    path = source.path
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LoadError(f"{path}: not a readable Parquet file: {exc}") from None
    names = source.columns
    if pf.schema_arrow.names != names:
        raise LoadError(f"{path}: the schema changed since the file was opened")
    wanted = set(read)
    kept = [c for c in names if c in wanted]
    row = 0
    index = 0
    every = max(1, pf.metadata.num_rows)
    size = path.stat().st_size if stats is not None else 0
    try:
        int96 = int96_columns(pf)
        for rb in pf.iter_batches(batch_size=options.batch_rows, use_threads=False):
            rb = int96_as_utc(rb, int96)
            batch = text_batch(source, rb, row, index, kept, options)
            row += rb.num_rows
            if stats is not None:
                stats.position = size * min(row, every) // every
            yield batch
            index += 1
    except (pa.ArrowException, OSError) as exc:
        raise LoadError(
            f"{path}: cannot read Parquet after row {row}: {exc}; nothing after row {row} was read"
        ) from None


def int96_columns(pf: pq.ParquetFile) -> frozenset[str]:
    """The top-level columns of ``pf`` stored as INT96 timestamps."""
    schema = pf.schema
    found = (schema.column(i) for i in range(len(schema)))
    return frozenset(c.path for c in found if c.physical_type == "INT96" and "." not in c.path)


def int96_as_utc(data: _Data, int96: frozenset[str]) -> _Data:
    """``data`` with its INT96 timestamp columns (named in ``int96``) marked UTC. Spark (its
    default ``outputTimestampType``) and Hive write a TIMESTAMP as INT96 holding the UTC
    instant, and Spark reads it back as that instant; Arrow reads it without a zone, which would
    make a zoned column naive (read in ``timezone``, hours off). Nothing else changes."""
    if not int96:
        return data
    fields = []
    for f in data.schema:
        if f.name in int96 and pa.types.is_timestamp(f.type) and f.type.tz is None:
            f = f.with_type(pa.timestamp(f.type.unit, "UTC"))
        fields.append(f)
    schema = pa.schema(fields, metadata=data.schema.metadata)
    return data if schema.equals(data.schema) else data.cast(schema)


def column_text(arr: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, list[int]]:
    """A typed Arrow column as the text the loader gives for the same Parquet column
    (docs/input-files.md), and the rows whose bytes are not UTF-8 (their text is null)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], arr.type)
    return _to_text(arr, "", len(arr))


def text_batch(
    source: Source, rb: pa.RecordBatch, row: int, index: int, kept: list[str], options: InputOptions
) -> Batch:
    """The ``Batch`` of the Arrow rows ``rb`` (rows ``row + 1`` onwards, 1-based): the
    columns in ``kept`` as text, checked; ``original`` keeps every column, original types.
    Shared by Parquet files and in-memory sources (``load.frames``)."""
    n = rb.num_rows
    lines = np.arange(row + 1, row + n + 1, dtype=np.int64)
    wanted = set(kept)
    arrays: list[pa.Array] = []
    problems: dict[int, tuple[str, str]] = {}
    for name, col in zip(rb.schema.names, rb.columns, strict=True):
        if name not in wanted:  # not read by the job: kept in ``original``
            continue
        text, undecodable = _to_text(col, name, n)
        arrays.append(text)
        for i in undecodable:
            problems.setdefault(
                i, (f'undecodable bytes (not valid utf-8) in column "{name}"', name)
            )
    for i, found in value_problems(arrays, kept, None, options.max_field_bytes).items():
        problems.setdefault(i, found)
    table = pa.Table.from_arrays(arrays, names=kept)
    bad = [BadRecord(int(lines[i]), r, c, None) for i, (r, c) in sorted(problems.items())]
    if problems:
        keep = np.ones(n, dtype=bool)
        keep[sorted(problems)] = False
        table, lines = table.filter(pa.array(keep)), lines[keep]
    return Batch(source, index, table, lines, None, bad, original=rb)


def unsupported_columns(schema: pa.Schema) -> dict[str, str]:
    """The columns of ``schema`` that cannot be read as text, as "name (type)" by name."""
    return {
        f.name: f"{f.name} ({f.type})"
        for f in schema
        if pa.types.is_nested(_value_type(f.type)) or not _castable(f.type)
    }


def _to_text(arr: pa.Array, name: str, n: int) -> tuple[pa.Array, list[int]]:
    """A Parquet column as strings, and the rows whose bytes are not UTF-8."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _to_text(arr.dictionary_decode(), name, n)
    if pa.types.is_string(t):
        return arr, []
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string()), []
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return pc.cast(arr, pa.string()), []
        except pa.ArrowInvalid:
            out: list[str | None] = []
            bad: list[int] = []
            for i, v in enumerate(arr.to_pylist()):
                try:
                    out.append(None if v is None else v.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append(None)
                    bad.append(i)
            return pa.array(out, pa.string()), bad
    if pa.types.is_floating(t):
        # NaN is pandas' missing value: null, like a missing cell
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)
        if pa.types.is_float16(t):
            return _float16_text(arr), []
        return _float_text(arr), []
    if pa.types.is_timestamp(t):
        return _timestamp_text(arr), []
    if pa.types.is_time(t):  # '09:15:00.005000' in us: as a timestamp's time of day
        text = pc.replace_substring_regex(pc.cast(arr, pa.string()), r"\.0+$", "")
        return pc.replace_substring_regex(text, r"(\.\d*[1-9])0+$", r"\1"), []
    return pc.cast(arr, pa.string()), []


#: below these magnitudes a whole float is exactly the integer it was written from
_EXACT_WHOLE = {32: float(2**24), 64: float(2**53)}


def _float_text(arr: pa.Array) -> pa.Array:
    """A float column in shortest form, but a whole number in its digits: Arrow writes
    13800138000.0 as ``1.3800138e+10`` (a phone column pandas wrote as floats because of a
    missing value), which is no phone number, no integer and no id as text. A float32 past
    2**24 keeps Arrow's form: its digits are already rounded (13800137728)."""
    text = pc.cast(arr, pa.string())
    whole = pc.and_(
        pc.match_substring(text, "e"),
        pc.and_(
            pc.equal(pc.floor(arr), arr), pc.less(pc.abs(arr), _EXACT_WHOLE[arr.type.bit_width])
        ),
    )
    if not pc.any(whole).as_py():
        return text
    digits = pc.cast(pc.cast(pc.if_else(whole, arr, 0.0), pa.int64()), pa.string())
    return pc.if_else(whole, digits, text)


@functools.cache
def _float16_texts() -> pa.Array:
    """The text of each of the 65,536 float16 values, by bit pattern: the shortest decimal that
    reads back as the same float16 (10.3, where its exact value is 10.296875), written as a
    float64 of that value is (``1e-7``, ``65500``)."""
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    shortest = [float(np.format_float_scientific(v, unique=True)) for v in values]
    return pc.cast(pa.array(shortest, pa.float64()), pa.string())


def _float16_text(arr: pa.Array) -> pa.Array:
    """A float16 column in shortest form: Arrow writes a float16 as the float32 it widens to
    (``10.296875`` for 10.3)."""
    bits = pc.cast(arr.view(pa.uint16()), pa.int32())  # nulls stay null
    return _float16_texts().take(bits)


def _timestamp_text(arr: pa.Array) -> pa.Array:
    """'YYYY-MM-DD HH:MM:SS' (+ '+0800' when zoned), fractions only when there are some, and
    without trailing zeros (``.005`` whether the unit is ms, us or ns)."""
    t = arr.type
    fmt = "%Y-%m-%d %H:%M:%S" + ("%z" if t.tz else "")
    seconds = pc.cast(arr, pa.timestamp("s", t.tz), safe=False)
    whole = pc.strftime(seconds, format=fmt)
    if t.unit == "s":
        return whole
    exact = pc.equal(pc.cast(seconds, t), arr)
    fraction = pc.replace_substring_regex(
        pc.strftime(arr, format=fmt), pattern=r"(\.\d*[1-9])0+([+-]\d{4})?$", replacement=r"\1\2"
    )
    return pc.if_else(pc.fill_null(exact, True), whole, fraction)
