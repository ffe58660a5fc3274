"""``importer.spark``: the lake-side plan and commit on Spark (issue 15; extra ``dmimport[spark]``).

``plan(config, data, state=STATE, out=OUT)`` reads a Spark DataFrame (a table or a Parquet
directory, or the path of one), maps and checks every row next to the data (``mapInArrow``
calling ``importer.outcomes_of`` per Arrow batch), compares the valid rows with the state table
(a Spark join by identity hash and SQL windows implementing ``importer.lake.select_changes``)
and writes, through Spark's writer and its commit protocol, ``OUT/changes/`` (the new and
changed rows, globally ordered by (``dm_source``, ``dm_row``)), ``OUT/rejects/`` and
``OUT/plan.json``. Nothing that grows with the data reaches the driver: the summary comes from
one aggregation. ``dmimport run CONFIG OUT/changes/`` then sends the change set, and
``commit(results, STATE)`` merges what the platform accepted into a new state version (an
anti-join and a union in Spark).

Decisions:

- Each row is named by its file and position, ``_metadata.file_path`` and
  ``_metadata.row_index`` of Spark's file source (``dm_source`` is the local path for a
  ``file:`` URI, else the URI; ``dm_row`` = ``row_index + 1``, as results.csv numbers Parquet
  rows). A DataFrame without file metadata (built in memory, or from a query that lost it) is
  refused with a ``UsageError``: numbering its rows would depend on its partitioning, so a
  retried task or the next night's plan could number them differently, and the state's order
  rules (a customer's rows in file order) would not hold. Write it to Parquet first.
- ``OUT`` and ``STATE`` are folders of the driver's file system (local or mounted); the data
  may be anywhere Spark reads. A plan replaces what a previous plan left in ``OUT``: ``plan.json``
  is removed first and written last, so a plan that stops half-way leaves no ``plan.json``.
- Spark's Parquet writer drops Arrow schema metadata, so the change set's metadata
  (``dmimport.change_set``) is added to each committed file's footer afterwards: only the
  footer is rewritten (the data pages are not touched), in a staging folder that then replaces
  ``OUT/changes/``.

pyspark is imported only here (never by ``import importer``).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import Config, check_columns
from .errors import UsageError
from .lake import (
    PLAN_COLUMNS,
    PLAN_FILE,
    REJECT_SCHEMA,
    CommitSummary,
    PlanSummary,
    by_last_for,
    change_schema,
    change_set_metadata,
    check_plan_config,
    plan_summary,
)
from .lake import state as states
from .lake.table import CHANGES, REJECTS, as_config, checked_delivery, replace_folder
from .plan import outcomes_of

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from .report import RunSummary

__all__ = ["add_footer_metadata", "commit", "plan"]

_FILE = "dm_file"
_INDEX = "dm_index"
_VALID = "dm_valid"
_SELECTED = "dm_selected"


def _session(spark: SparkSession | None) -> SparkSession:
    from pyspark.sql import SparkSession

    if spark is not None:
        return spark
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # a session of our own: its Python workers run this interpreter (they import importer)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return SparkSession.builder.appName("dmimport").getOrCreate()


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _local_path(uri: str) -> str:
    """A ``file:`` URI as a local path; any other URI unchanged."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return unquote(parts.path)
    return uri


# ---------------------------------------------------------------------------------------------
# the executor side: one Arrow batch of source columns + file/row -> outcome rows


def _outcome_schema(names: list[str]) -> Any:
    from pyspark.sql.types import (
        BinaryType,
        BooleanType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    fields = [StructField(n, StringType()) for n in names]
    fields += [
        StructField("dm_source", StringType()),
        StructField("dm_row", LongType()),
        StructField("dm_identity", StringType()),
        StructField("dm_identity_hash", LongType()),
        StructField("dm_body_hash", LongType()),
        StructField("dm_event", StringType()),
        StructField("dm_body", BinaryType()),
        StructField(_VALID, BooleanType()),
        StructField("dm_errcode", IntegerType()),
        StructField("dm_column", StringType()),
        StructField("dm_reason", StringType()),
    ]
    return StructType(fields)


def _outcome_batch(
    config: Config, names: list[str], zones: dict[str, str], batch: pa.RecordBatch
) -> pa.RecordBatch:
    """Map and check one batch (the job's columns, ``dm_file``, ``dm_index``); ``zones``:
    the time zone the files give a zoned timestamp column (Spark hands it over in the
    session's zone: the same instant, another text)."""
    from .load.parquet import column_text

    table = pa.Table.from_batches([batch])
    source = table.select(names)
    for name, zone in zones.items():
        at = source.schema.get_field_index(name)
        column = source.column(at)
        if pa.types.is_timestamp(column.type):
            zoned = column.cast(pa.timestamp(column.type.unit, tz=zone))
            source = source.set_column(at, name, zoned)
    out = outcomes_of(config, source)
    uris = table.column(_FILE).combine_chunks()
    unique = pc.unique(uris)
    local = pa.array([_local_path(u) for u in unique.to_pylist()], pa.string())
    paths = local.take(pc.index_in(uris, value_set=unique))
    rows = pc.add(table.column(_INDEX).combine_chunks().cast(pa.int64()), 1)
    arrays: list[Any] = [column_text(source.column(n))[0].cast(pa.string()) for n in names]
    arrays += [
        paths,
        rows,
        out.column("identity"),
        out.column("identity_hash"),
        out.column("body_hash"),
        out.column("event"),
        out.column("body"),
        pc.equal(out.column("verdict"), "valid"),
        out.column("errcode"),
        out.column("column"),
        out.column("reason"),
    ]
    labels = [*names, *PLAN_COLUMNS, _VALID, "dm_errcode", "dm_column", "dm_reason"]
    return pa.RecordBatch.from_arrays(arrays, names=labels)


def _mapper(config: Config, names: list[str], zones: dict[str, str]) -> Any:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield _outcome_batch(config, names, zones, batch)

    return run


# ---------------------------------------------------------------------------------------------
# the plan


def _frame(spark: SparkSession, data: Any) -> DataFrame:
    from pyspark.sql import DataFrame

    if isinstance(data, DataFrame):
        return data
    if isinstance(data, str | os.PathLike):
        return spark.read.parquet(os.fspath(data))
    raise UsageError(
        f"importer.spark.plan reads a Spark DataFrame or the path of a Parquet file or folder, "
        f"not a {type(data).__name__}"
    )


def _with_position(df: DataFrame, names: list[str]) -> DataFrame:
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    try:
        return df.select(
            *[F.col(_quoted(n)) for n in names],
            F.col("_metadata.file_path").alias(_FILE),
            F.col("_metadata.row_index").alias(_INDEX),
        )
    except AnalysisException as exc:
        raise UsageError(
            "this DataFrame has no file metadata (_metadata.file_path, _metadata.row_index): "
            "a plan names each row by its lake file and position, to keep a customer's rows "
            "in file order and to number them the same way every night; give a table or a "
            "Parquet folder read by Spark (write an in-memory DataFrame to Parquet first)"
        ) from exc


def _zones(df: DataFrame, names: list[str]) -> dict[str, str]:
    """The time zone of each zoned timestamp column the job reads, as its Parquet files give
    it to pyarrow (what ``dmimport validate`` on the files reads): Spark converts them to the
    session's zone. Read from the first input file's schema (a footer, on the driver); a
    file the driver cannot open leaves the session's zone."""
    from pyspark.sql.types import TimestampType

    zoned = [
        f.name
        for f in df.schema.fields
        if f.name in names and isinstance(f.dataType, TimestampType)
    ]
    if not zoned:
        return {}
    try:
        files = df.inputFiles()
        schema = pq.read_schema(_local_path(files[0])) if files else None
    except (OSError, pa.ArrowException, IndexError):
        return {}
    found: dict[str, str] = {}
    for name in zoned:
        if schema is not None and name in schema.names:
            kind = schema.field(name).type
            if pa.types.is_timestamp(kind) and kind.tz:
                found[name] = kind.tz
    return found


def _state_frame(spark: SparkSession, version: Path | None) -> DataFrame | None:
    """The state version as ``dm_state_id``, ``dm_state_hash`` (None: no state, all new)."""
    from pyspark.sql import functions as F

    if version is None or not any(version.glob("*.parquet")):
        return None
    return spark.read.parquet(str(version)).select(
        F.col("identity_hash").alias("dm_state_id"), F.col("body_hash").alias("dm_state_hash")
    )


def _selected(outcomes: DataFrame, state: DataFrame | None, by_last: bool) -> DataFrame:
    """``outcomes`` with ``dm_selected``: valid and new or changed (``select_changes``'s rule).

    With no state every valid row is new: no join, no shuffle. Against a state the rule is
    decided per identity on the narrow columns only (identity hash, position, body hash of
    the valid rows, pre-aggregated before the shuffle): ``dm_from``, the position from which
    the identity's valid rows go to the change set (``user``: its first valid row when its
    last differs from the state; ``event``/``user_delete``: its first row that differs), for
    the identities with something to send. That table is joined back to the rows; on the
    steady night it is small and Spark broadcasts it, so the wide rows (bodies) are never
    shuffled for the selection."""
    from pyspark.sql import functions as F

    valid = F.col(_VALID)
    if state is None:
        return outcomes.withColumn(_SELECTED, valid)
    position = F.struct(F.col("dm_source"), F.col("dm_row"))
    keys = outcomes.filter(valid).select(
        F.col("dm_identity_hash").alias("dm_key"),
        position.alias("dm_position"),
        F.col("dm_body_hash"),
    )
    if by_last:
        last = keys.groupBy("dm_key").agg(
            F.max_by("dm_body_hash", "dm_position").alias("dm_last_hash"),
            F.min("dm_position").alias("dm_from"),
        )
        joined = last.join(state, last["dm_key"] == state["dm_state_id"], "left")
        differs = F.col("dm_state_id").isNull() | (F.col("dm_last_hash") != F.col("dm_state_hash"))
        decided = joined.filter(differs).select("dm_key", "dm_from")
    else:
        joined = keys.join(state, keys["dm_key"] == state["dm_state_id"], "left")
        differs = F.col("dm_state_id").isNull() | (F.col("dm_body_hash") != F.col("dm_state_hash"))
        decided = (
            joined.filter(differs).groupBy("dm_key").agg(F.min("dm_position").alias("dm_from"))
        )
    marked = outcomes.join(decided, outcomes["dm_identity_hash"] == decided["dm_key"], "left")
    chosen = valid & F.col("dm_from").isNotNull() & (position >= F.col("dm_from"))
    return marked.withColumn(_SELECTED, F.coalesce(chosen, F.lit(False))).drop("dm_key", "dm_from")


def _write_sorted(frame: DataFrame, folder: Path) -> None:
    (
        frame.orderBy("dm_source", "dm_row")
        .write.mode("overwrite")
        .option("compression", "zstd")
        .parquet(str(folder))
    )


def plan(
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    data: Any,
    *,
    state: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    spark: SparkSession | None = None,
    batch_rows: int | None = None,
) -> PlanSummary:
    """Plan job ``config`` over ``data`` (a Spark DataFrame read from a table or Parquet
    files, or the path of a Parquet file or folder, read with ``spark``) against the state
    table ``state`` (None or no folder: every identity is new), writing ``out/changes/``,
    ``out/rejects/`` and ``out/plan.json``; returns the ``PlanSummary``.

    ``spark``: the session (default: the active one, else a new ``local[*]`` one);
    ``batch_rows``: rows per Arrow batch handed to the mapper (default: the session's
    ``spark.sql.execution.arrow.maxRecordsPerBatch``). A config reading a column the data
    lacks, or a column named ``dm_...``, is a ``ConfigError`` and a state table of another
    job a ``ConfigError``, before any Spark job runs; a DataFrame without file metadata is a
    ``UsageError`` (see the module's docstring)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    cfg = as_config(config)
    check_plan_config(cfg, out)
    job, kind = cfg.job_name, cfg.job.kind
    states.check_state(state, job, kind)
    session = _session(spark)
    df = _frame(session, data)
    names = cfg.source_columns()
    check_columns(cfg, "the DataFrame", list(df.columns))
    positioned = _with_position(df, names)
    version = states.current(state) if state is not None else None
    state_df = _state_frame(session, version)

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / PLAN_FILE).unlink(missing_ok=True)
    conf_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = session.conf.get(conf_key)
    if batch_rows is not None:
        session.conf.set(conf_key, str(int(batch_rows)))
    selected: DataFrame | None = None
    mapped: DataFrame | None = None
    try:
        outcomes = positioned.mapInArrow(
            _mapper(cfg, names, _zones(df, names)), _outcome_schema(names)
        )
        if state_df is not None:
            # read twice (the per-identity decision, then the rows): map each row once
            mapped = outcomes = outcomes.persist(StorageLevel.MEMORY_AND_DISK)
        selected = _selected(outcomes, state_df, by_last_for(kind)).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        # the counts first (one aggregation; it fills the cache): an empty change set or
        # empty rejects need no Spark job (nights with nothing new are the common case)
        counts = (
            selected.groupBy("dm_event")
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.col(_VALID).cast("long")).alias("valid"),
                F.sum(F.col(_SELECTED).cast("long")).alias("to_send"),
                F.countDistinct(F.when(F.col(_SELECTED), F.col("dm_identity_hash"))).alias(
                    "identities"
                ),
            )
            .collect()
        )
        if mapped is not None:  # the selection is cached now
            mapped.unpersist()
            mapped = None
        changes = selected.filter(F.col(_SELECTED)).select(
            *[F.col(_quoted(n)) for n in names], *PLAN_COLUMNS
        )
        if any(int(r["to_send"] or 0) for r in counts):
            _write_changes(changes, root, change_set_metadata(job, kind))
        else:
            replace_folder(root / CHANGES, lambda d: _write_empty(d, change_schema(cfg)))
        rejects = selected.filter(~F.col(_VALID)).select(
            "dm_source",
            "dm_row",
            "dm_identity",
            F.col("dm_column").alias("column"),
            F.col("dm_errcode").alias("errcode"),
            F.col("dm_reason").alias("reason"),
        )
        if any(int(r["rows"]) - int(r["valid"] or 0) for r in counts):
            replace_folder(root / REJECTS, lambda tmp: _write_sorted(rejects, tmp))
        else:
            replace_folder(root / REJECTS, lambda d: _write_empty(d, REJECT_SCHEMA))
    finally:
        if selected is not None:
            selected.unpersist()
        if mapped is not None:
            mapped.unpersist()
        if batch_rows is not None:
            if before is None:
                session.conf.unset(conf_key)
            else:
                session.conf.set(conf_key, before)
    rows = sum(int(r["rows"]) for r in counts)
    valid = sum(int(r["valid"] or 0) for r in counts)
    to_send = sum(int(r["to_send"] or 0) for r in counts)
    summary = plan_summary(
        cfg,
        rows=rows,
        valid=valid,
        unchanged=valid - to_send,
        groups={str(r["dm_event"] or ""): int(r["to_send"] or 0) for r in counts},
        identities_to_send=sum(int(r["identities"]) for r in counts),
        state_version=version.name if version is not None else None,
        out=root,
    )
    summary.write(root)
    return summary


def _write_empty(folder: Path, schema: pa.Schema) -> None:
    """An empty output: one Parquet file with the schema (and its metadata), as Spark would
    write it, without a Spark job."""
    pq.write_table(schema.empty_table(), folder / "part-00000.parquet", compression="zstd")


def _write_changes(changes: DataFrame, root: Path, metadata: dict[bytes, bytes]) -> None:
    def write(tmp: Path) -> None:
        _write_sorted(changes, tmp)
        for part in sorted(tmp.glob("*.parquet")):
            for key, value in metadata.items():
                add_footer_metadata(part, key, value)
            (part.parent / f".{part.name}.crc").unlink(missing_ok=True)

    replace_folder(root / CHANGES, write)


# ---------------------------------------------------------------------------------------------
# Parquet footer: add one key-value pair without touching the data pages
#
# A Parquet file ends with its FileMetaData (Thrift compact protocol), its length (4 bytes,
# little endian) and b"PAR1". key_value_metadata is the FileMetaData's field 5, a list of
# KeyValue structs (1: key, 2: value, both binary).

_STRUCT, _LIST, _SET, _MAP, _BINARY = 12, 9, 10, 11, 8
_ARROW_SCHEMA = b"ARROW:schema"


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _skip(buf: bytes, pos: int, kind: int, element: bool = False) -> int:
    if kind in (1, 2):  # bool: in the field header, one byte as a list element
        return pos + 1 if element else pos
    if kind == 3:
        return pos + 1
    if kind in (4, 5, 6):
        return _read_varint(buf, pos)[1]
    if kind == 7:
        return pos + 8
    if kind == _BINARY:
        n, pos = _read_varint(buf, pos)
        return pos + n
    if kind in (_LIST, _SET):
        size, inner, pos = _list_header(buf, pos)
        for _ in range(size):
            pos = _skip(buf, pos, inner, True)
        return pos
    if kind == _MAP:
        size, pos = _read_varint(buf, pos)
        if size:
            kinds = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip(buf, pos, kinds >> 4, True)
                pos = _skip(buf, pos, kinds & 0x0F, True)
        return pos
    if kind == _STRUCT:
        ends = [end for _fid, _kind, _start, end in _fields(buf, pos)]
        return (ends[-1] if ends else pos) + 1  # the stop byte
    raise ValueError(f"not a Parquet footer (Thrift type {kind})")


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    head = buf[pos]
    pos += 1
    size = head >> 4
    if size == 15:
        size, pos = _read_varint(buf, pos)
    return size, head & 0x0F, pos


def _fields(buf: bytes, pos: int) -> Iterator[tuple[int, int, int, int]]:
    """The fields of the struct at ``pos``: (id, type, value start, value end); stops
    before the stop byte."""
    fid = 0
    while buf[pos] != 0:
        head = buf[pos]
        pos += 1
        kind, delta = head & 0x0F, head >> 4
        if delta:
            fid += delta
        else:
            raw, pos = _read_varint(buf, pos)
            fid = (raw >> 1) ^ -(raw & 1)
        end = _skip(buf, pos, kind)
        yield fid, kind, pos, end
        pos = end


def _field_header(fid: int, last: int, kind: int) -> bytes:
    delta = fid - last
    if 0 < delta <= 15:
        return bytes([(delta << 4) | kind])
    return bytes([kind]) + _varint((fid << 1) ^ (fid >> 63))


def _key_values(footer: bytes, start: int) -> list[tuple[bytes, bytes]]:
    """The key_value_metadata list at ``start``: (key, the KeyValue struct's bytes) each."""
    size, _inner, pos = _list_header(footer, start)
    found = []
    for _ in range(size):
        end = _skip(footer, pos, _STRUCT)
        name = b""
        for fid, _kind, at, _end in _fields(footer, pos):
            if fid == 1:
                length, at = _read_varint(footer, at)
                name = footer[at : at + length]
        if name == _ARROW_SCHEMA:
            raise ValueError(
                "the file embeds an Arrow schema (ARROW:schema: written by pyarrow): readers "
                "take its schema metadata from there, so a key added to the footer would not "
                "be seen; write it without one (pyarrow: store_schema=False)"
            )
        found.append((name, footer[pos:end]))
        pos = end
    return found


def _with_key_value(footer: bytes, key: bytes, value: bytes) -> bytes:
    entry = b"\x18" + _varint(len(key)) + key + b"\x18" + _varint(len(value)) + value + b"\x00"
    fields = list(_fields(footer, 0))
    out = bytearray()
    last = 0
    added = False
    for fid, kind, start, end in fields:
        if fid > 5 and not added:
            out += _field_header(5, last, _LIST) + bytes([0x1C]) + entry
            last, added = 5, True
        if fid == 5 and kind == _LIST:
            kept = [item for name, item in _key_values(footer, start) if name != key]
            size = len(kept) + 1
            head = bytes([(size << 4) | _STRUCT]) if size < 15 else b"\xfc" + _varint(size)
            out += _field_header(5, last, _LIST) + head + b"".join(kept) + entry
            added = True
        else:
            out += _field_header(fid, last, kind) + footer[start:end]
        last = fid
    if not added:
        out += _field_header(5, last, _LIST) + bytes([0x1C]) + entry
    return bytes(out) + b"\x00"


def add_footer_metadata(path: str | os.PathLike[str], key: bytes, value: bytes) -> None:
    """Add the key-value pair ``key``/``value`` to the schema metadata of the Parquet file
    ``path``, in place: only its footer is rewritten (the data pages stay where they are).
    A key already there gets the new value. Meant for files Spark wrote: a file embedding
    an ``ARROW:schema`` (pyarrow's default) is refused (``ValueError``), since pyarrow reads
    the schema metadata of such a file from there, not from the footer's key-values."""
    with open(path, "r+b") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] != b"PAR1":
            raise ValueError(f"{path} is not a Parquet file (or its footer is encrypted)")
        length = struct.unpack("<I", tail[:4])[0]
        start = size - 8 - length
        fh.seek(start)
        footer = fh.read(length)
        try:
            new = _with_key_value(footer, key, value)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        fh.seek(start)
        fh.write(new + struct.pack("<I", len(new)) + b"PAR1")
        fh.truncate()


# ---------------------------------------------------------------------------------------------
# the commit


@states.state_locked  # one commit at a time per state table
def commit(
    results: RunSummary | str | os.PathLike[str],
    state: str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
) -> CommitSummary:
    """Merge what a ``dmimport run`` of a change set delivered (``results``: its
    ``RunSummary``, report folder, or results file; only ``ok`` rows) into the state table
    ``state``: the (small) delivered table is built on the driver
    (``importer.lake.delivered``), the merge with the (large) current version runs in Spark
    (anti-join + union, one row per identity, sorted by identity hash, zstd) into a new
    version, then ``_CURRENT`` is swapped and versions older than the previous one removed."""
    from pyspark.sql import functions as F

    got, job, kind = checked_delivery(results, state)
    session = _session(spark)
    before = states.current(state)
    version = states.new_version(state, job, kind)
    new = session.createDataFrame(got.replace_schema_metadata(None))
    old = _state_frame(session, before)
    if old is not None:
        kept = old.join(new, old["dm_state_id"] == new["identity_hash"], "left_anti").select(
            F.col("dm_state_id").alias("identity_hash"),
            F.col("dm_state_hash").alias("body_hash"),
        )
        merged = kept.unionByName(new)
    else:
        merged = new
    merged.select(F.col("identity_hash").cast("long"), F.col("body_hash").cast("long")).orderBy(
        "identity_hash"
    ).write.mode("append").option("compression", "zstd").parquet(str(version))
    state_rows = sum(pq.read_metadata(p).num_rows for p in version.glob("*.parquet"))
    states.publish(state, version)
    states.prune(state)
    return CommitSummary(
        delivered=got.num_rows,
        state_rows=state_rows,
        version=version.name,
        previous=before.name if before is not None else None,
    )
