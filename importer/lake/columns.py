"""The columns of a lake-side plan's outputs: the change set and the rejects (issue 15).

A **change set** (``OUT/changes/``) is a Parquet directory whose files hold the job's source
columns (the config's ``from`` names, as the text ``importer.load.parquet.column_text`` gives)
followed by ``PLAN_COLUMNS``, with the schema metadata key ``CHANGE_SET_KEY`` holding
``{"version": 1, "job": NAME, "kind": KIND}``. **Rejects** (``OUT/rejects/``) hold
``REJECT_COLUMNS``. Both are ordered by (``dm_source``, ``dm_row``).

``change_rows`` and ``reject_rows`` turn one batch of ``importer.outcomes_of`` output (and the
batch's source columns as text, ``text_columns``) into those rows: every engine and
``plan_table`` share them, so their outputs agree column for column.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import Config
from ..errors import ConfigError, UsageError
from ..load.parquet import column_text

__all__ = [
    "CHANGE_SET_KEY",
    "CHANGE_SET_VERSION",
    "PLAN_COLUMNS",
    "PLAN_FIELDS",
    "REJECT_COLUMNS",
    "REJECT_SCHEMA",
    "change_rows",
    "change_schema",
    "change_set_info",
    "change_set_metadata",
    "check_plan_config",
    "event_counts",
    "reject_rows",
    "text_columns",
]

#: the schema metadata key that marks a Parquet file as a change set
CHANGE_SET_KEY = b"dmimport.change_set"
#: the change set format's version in that metadata
CHANGE_SET_VERSION = 1

#: the change set's own columns, after the source columns, in this order
PLAN_COLUMNS = (
    "dm_source",
    "dm_row",
    "dm_identity",
    "dm_identity_hash",
    "dm_body_hash",
    "dm_event",
    "dm_body",
)
PLAN_FIELDS = (
    pa.field("dm_source", pa.string()),
    pa.field("dm_row", pa.int64()),
    pa.field("dm_identity", pa.string()),
    pa.field("dm_identity_hash", pa.int64()),
    pa.field("dm_body_hash", pa.int64()),
    pa.field("dm_event", pa.string()),
    pa.field("dm_body", pa.binary()),
)

#: the rejects' columns
REJECT_COLUMNS = ("dm_source", "dm_row", "dm_identity", "column", "errcode", "reason")
REJECT_SCHEMA = pa.schema(
    [
        ("dm_source", pa.string()),
        ("dm_row", pa.int64()),
        ("dm_identity", pa.string()),
        ("column", pa.string()),
        ("errcode", pa.int32()),
        ("reason", pa.string()),
    ]
)

_PLAN_PREFIX = "dm_"


def check_plan_config(config: Config, out: str | os.PathLike[str] | None = None) -> None:
    """Refuse (``ConfigError``, before any work) a job whose source column names start with
    ``dm_``: they would clash with the change set's own columns; and (``UsageError``) an
    ``out`` that is not a folder."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"{out}: not a folder (a plan writes OUT/changes/, OUT/rejects/ there)")
    bad = [c for c in config.source_columns() if c.startswith(_PLAN_PREFIX)]
    if bad:
        names = ", ".join(repr(c) for c in bad)
        raise ConfigError(
            f"source column {names} starts with {_PLAN_PREFIX!r}: a lake-side plan's change "
            f"set keeps its own columns under that prefix ({', '.join(PLAN_COLUMNS)}); "
            "rename the column in the data (or select it under another name) before planning"
        )


def change_set_metadata(job: str, kind: str) -> dict[bytes, bytes]:
    """The schema metadata of a change set of job ``job`` (its ``kind``)."""
    info = {"version": CHANGE_SET_VERSION, "job": job, "kind": kind}
    return {CHANGE_SET_KEY: json.dumps(info, sort_keys=True).encode()}


def change_set_info(schema: pa.Schema) -> dict[str, Any] | None:
    """The change set metadata (``{"version", "job", "kind"}``) of a Parquet file's schema;
    None when the file is not a change set."""
    meta = schema.metadata or {}
    raw = meta.get(CHANGE_SET_KEY)
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def change_schema(config: Config) -> pa.Schema:
    """The schema of ``config``'s change set: its source columns (text), then
    ``PLAN_FIELDS``, with the change set metadata."""
    fields = [pa.field(c, pa.string()) for c in config.source_columns()]
    return pa.schema(
        fields + list(PLAN_FIELDS),
        metadata=change_set_metadata(config.job_name, config.job.kind),
    )


def text_columns(config: Config, batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """``batch``'s columns the job reads, in the config's order, as the text
    ``column_text`` gives (what ``outcomes_of`` maps; bytes that are not UTF-8 become null:
    ``outcomes_of`` rejects those rows)."""
    table = _as_table(batch)
    names = config.source_columns()
    if not names:
        return pa.table({})
    return pa.Table.from_arrays([column_text(table.column(n))[0] for n in names], names=names)


def _as_table(data: pa.RecordBatch | pa.Table) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.Table.from_batches([data])


def change_rows(
    outcomes: pa.RecordBatch | pa.Table,
    text: pa.RecordBatch | pa.Table,
    config: Config,
    mask: np.ndarray | pa.Array | None = None,
) -> pa.Table:
    """The change set rows of one batch: its valid rows (and, given ``mask``, a bool per input
    row, only those where it is true), each with the source columns ``text`` holds
    (``text_columns`` of the same batch, same rows) followed by ``PLAN_COLUMNS``, in the
    batch's order, with ``change_schema(config)``."""
    out = _as_table(outcomes)
    src = _as_table(text)
    schema = change_schema(config)
    keep = pc.equal(out.column("verdict"), "valid")
    if mask is not None:
        keep = pc.and_(keep, pa.array(np.asarray(mask, dtype=bool)))
    keep_arr = keep.combine_chunks() if isinstance(keep, pa.ChunkedArray) else keep
    out = out.filter(keep_arr)
    src = src.filter(keep_arr) if src.num_columns else src
    columns: list[Any] = [src.column(c).cast(pa.string()) for c in config.source_columns()]
    columns += [
        out.column("source"),
        out.column("row"),
        out.column("identity"),
        out.column("identity_hash"),
        out.column("body_hash"),
        out.column("event"),
        out.column("body"),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def event_counts(changes: pa.Table) -> dict[str, int]:
    """Rows per event name (\"\" when none) of change rows ``changes``."""
    if not changes.num_rows:
        return {}
    counts = pc.value_counts(changes.column("dm_event").fill_null(""))
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def reject_rows(outcomes: pa.RecordBatch | pa.Table) -> pa.Table:
    """The rejects of one batch of ``outcomes_of`` output, in order (``REJECT_SCHEMA``)."""
    out = _as_table(outcomes)
    out = out.filter(pc.equal(out.column("verdict"), "rejected"))
    return pa.Table.from_arrays(
        [
            out.column("source"),
            out.column("row"),
            out.column("identity"),
            out.column("column"),
            out.column("errcode"),
            out.column("reason"),
        ],
        schema=REJECT_SCHEMA,
    )
