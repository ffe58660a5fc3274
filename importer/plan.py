"""``outcomes_of``: map and check one Arrow batch, one outcome row per input row.

The engine-side half of a lake-side plan (issue 15): a Spark ``mapInArrow`` or a Dask
``map_partitions`` task hands it a batch of source columns and gets back, per row, what
``dmimport validate`` would report for it (verdict, errcode, column, reason), its identity,
the ledger's hashes (to compare with a state table) and the exact item the sender would put
in a request. No network, no ledger, no global state: a ``Mapper`` is built per call from the
config (a ``Config`` pickles, so an engine can ship it), and two calls on the same input give
the same output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import Config, check_columns
from .ledger import Identities, as_keys, keys64
from .load.parquet import column_text
from .load.values import value_problems
from .map import Mapper
from .outcomes import Status

__all__ = ["OUTCOME_SCHEMA", "outcomes_of"]

#: the columns of ``outcomes_of``'s batch
OUTCOME_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("identity", pa.string()),
        ("identity_hash", pa.int64()),
        ("body_hash", pa.int64()),
        ("verdict", pa.string()),
        ("errcode", pa.int32()),
        ("column", pa.string()),
        ("reason", pa.string()),
        ("event", pa.string()),
        ("body", pa.binary()),
    ]
)

_VALID = Status.VALID.label
_REJECTED = Status.REJECTED.label


def _config_of(config: Config | str | os.PathLike[str] | Mapping[str, Any]) -> Config:
    if isinstance(config, Config):
        return config
    from .job import load_job, parse_job

    if isinstance(config, Mapping):
        return parse_job(dict(config), "<config>", None)
    return load_job(os.fspath(config))


def outcomes_of(
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    batch: pa.RecordBatch | pa.Table,
    *,
    source: str = "<batch>",
    first_row: int = 0,
) -> pa.RecordBatch:
    """Map and check every row of ``batch`` (source columns, named as in the config's
    ``from``) for the job ``config`` (a ``Config``, a config dict, or a YAML path), and return
    one row per input row, in order, with the columns of ``OUTCOME_SCHEMA``:

    - ``source``, ``row``: ``source`` and the row's 1-based position, ``first_row + i + 1``
      (``first_row``: the rows before this batch), as results.csv's ``file`` and ``line`` name
      a Parquet file's rows;
    - ``identity``, ``verdict`` (``valid``/``rejected``), ``errcode``, ``column``, ``reason``:
      what ``dmimport validate`` reports for the row (``errcode`` and ``reason`` null when
      valid; a value the loader refuses, too long or holding a NUL or bytes that are not
      UTF-8, is rejected with a null errcode as there);
    - ``identity_hash``: the int64 key the ledger indexes the row's identity by
      (``ledger.keys64`` of the ledger identity, ``event name|identity`` for events);
      null for a row the loader refuses;
    - ``body_hash``: the int64 key of the row's body hash, what the ledger stores as
      ``last_hash`` and a changed-only run compares; null when rejected;
    - ``event``: the row's event name (events; null otherwise or when rejected);
    - ``body``: the encoded properties object, byte for byte the item the sender puts in a
      request for this row; null when rejected.

    Typed columns (integers, floats, timestamps, booleans, decimals, dictionaries) are read as
    text exactly as from a Parquet file. Columns the job does not read are ignored; a column it
    reads missing from the batch is a ``ConfigError`` (as for a file), not rejected rows."""
    cfg = _config_of(config)
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    n = table.num_rows
    job = cfg.job
    check_columns(cfg, source, table.column_names)
    wanted = set(cfg.source_columns())
    names = [c for c in table.column_names if c in wanted]
    arrays: list[pa.Array] = []
    problems: dict[int, tuple[str, str]] = {}
    for name in names:
        text, undecodable = column_text(table.column(name))
        arrays.append(text)
        for i in undecodable:
            problems.setdefault(
                i, (f'undecodable bytes (not valid utf-8) in column "{name}"', name)
            )
    for i, found in value_problems(arrays, names, None, cfg.input.max_field_bytes).items():
        problems.setdefault(i, found)
    if not names:  # a table without columns has no rows: keep the count in an unread one
        arrays, names = [pa.nulls(n, pa.string())], ["\0rows"]
    text_table = pa.Table.from_arrays(arrays, names=names)
    keep = np.ones(n, dtype=bool)
    if problems:
        keep[sorted(problems)] = False
        text_table = text_table.filter(pa.array(keep))
    rows = np.flatnonzero(keep)
    lines = np.arange(first_row + 1, first_row + n + 1, dtype=np.int64)
    mapper = Mapper(cfg)
    mapped = mapper.map_table(text_table, lines[rows])
    m = mapped.n
    ok = mapped.ok

    identity_hash = np.zeros(m, dtype=np.int64)
    if m:
        ledger_identity = Identities(job.kind, job.event_name)(mapped, np.arange(m))[1]
        identity_hash = keys64(ledger_identity)
    body_hash = np.zeros(m, dtype=np.int64)
    body: pa.Array = pa.nulls(m, pa.binary())
    if mapped.properties_hash is not None and m:
        body_hash = as_keys(mapped.properties_hash.values())
    if mapped.items is not None and m:
        body = mapped.items.binary()
    if mapped.events is not None:
        event = pa.array(mapped.event_names, pa.string())
    elif mapper.event is not None:
        event = pa.repeat(pa.scalar(job.event_name, pa.string()), m)
    else:
        event = pa.nulls(m, pa.string())
    not_ok = pa.array(~ok)
    errcode = pa.array(mapped.errcode.astype(np.int32), pa.int32(), mask=ok)
    mapped_cols = {
        "identity": mapped.identity_text if m else pa.array([], pa.string()),
        "identity_hash": pa.array(identity_hash, pa.int64()),
        "body_hash": pa.array(body_hash, pa.int64(), mask=~ok),
        "verdict": pc.if_else(pa.array(ok), _VALID, _REJECTED),
        "errcode": errcode,
        "column": pa.array(mapped.column, pa.string()),
        "reason": pa.array(mapped.reason, pa.string()),
        "event": pc.if_else(not_ok, pa.scalar(None, pa.string()), event),
        "body": body,
    }
    columns = {
        "source": pa.repeat(pa.scalar(source, pa.string()), n),
        "row": pa.array(lines, pa.int64()),
    }
    if not problems:
        columns.update(mapped_cols)
        return pa.RecordBatch.from_pydict(columns, schema=OUTCOME_SCHEMA)
    # rows the loader refused: rejected with its reason, as results.csv reports them
    bad = sorted(problems)
    at = np.full(n, -1, dtype=np.int64)
    at[rows] = np.arange(m)
    take = pa.array(at, mask=~keep)
    for key, arr in mapped_cols.items():
        columns[key] = arr.take(take)
    columns["identity"] = columns["identity"].fill_null("")
    columns["verdict"] = columns["verdict"].fill_null(_REJECTED)
    reason = columns["reason"].to_pylist()
    column = columns["column"].to_pylist()
    for i in bad:
        reason[i], column[i] = problems[i]
    columns["reason"] = pa.array(reason, pa.string())
    columns["column"] = pa.array(column, pa.string())
    return pa.RecordBatch.from_pydict(columns, schema=OUTCOME_SCHEMA)
