"""The tasks ``importer.dask``'s workers run: plain functions of pandas/Arrow partitions
(no dask import), named for the steps of ``importer.dask.plan`` and ``commit``: list and split
the lake (``lake_files``, ``partitions``), map and check a partition and write its rejects and
valid rows (``map_file``, ``map_frame``), pick the changed rows of an identity-hash partition
(``pick``), write a partition's change set part (``write_changes``), and merge a state range
(``write_ranges``).
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Config, check_columns
from ..errors import ConfigError, UsageError
from ..lake import (
    change_rows,
    event_counts,
    reject_rows,
    select_changes,
    text_columns,
)
from ..lake import state as lake_state
from ..load.parquet import int96_as_utc, int96_columns
from ..plan import outcomes_of

_SHIFT = 40  # a row's rank: partition number << 40 | position among the partition's valid rows
_LOW = (1 << _SHIFT) - 1

#: a lake file's Hive partition keys: (key, value) per ``key=value`` folder below the lake
#: root, in path order (value None: ``__HIVE_DEFAULT_PARTITION__``, Hive's and Spark's null)
Keys = tuple[tuple[str, str | None], ...]
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class Part:
    """One plan partition: row groups ``groups`` of Parquet file ``path`` whose first row is
    ``first_row`` rows into the file (None: a partition of a given DataFrame); ``keys``: the
    file's Hive partition columns that are not columns of the file."""

    number: int
    path: str | None = None
    groups: tuple[int, ...] = ()
    first_row: int = 0
    keys: Keys = ()


def hive_keys(folders: list[str]) -> Keys:
    """The Hive partition keys of a file in ``folders`` (its folders below the lake root, in
    order), as Spark's ``spark.read.parquet(root)`` discovers them: each ``key=value``
    folder gives column ``key`` (a string: Dask does not guess types), value URL-unquoted,
    ``__HIVE_DEFAULT_PARTITION__`` null; a later folder of the same key wins."""
    found: dict[str, str | None] = {}
    for name in folders:
        key, sep, value = name.partition("=")
        if not sep or not key:
            continue
        text = urllib.parse.unquote(value)
        found[urllib.parse.unquote(key)] = None if text == HIVE_NULL else text
    return tuple(found.items())


def _hidden(name: str) -> bool:
    return name.startswith(("_", ".")) or name.endswith(".crc")


def _listed(item: str) -> list[tuple[str, Keys]]:
    """The Parquet files of one path or URI (a folder: its files at any depth, except
    hidden ones: ``_SUCCESS``, ``_metadata``, ``.crc``...), each with the Hive partition
    keys of its folders below ``item`` (a file given itself has none, as in Spark). A
    ``file:`` URI or a plain path gives local paths; another scheme (``s3://``, ``gs://``,
    ``hdfs://``: what ``pyarrow.fs`` opens) gives URIs."""
    import pyarrow.fs as pafs

    scheme = item.split("://", 1)[0] if "://" in item else ""
    if scheme in ("", "file"):
        path = Path(item[len("file://") :] if scheme else item)
        if path.is_file():
            return [(os.path.abspath(path), ())]
        if not path.is_dir():
            raise UsageError(f"{item}: no such file or folder")
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not _hidden(d)]
            rel = os.path.relpath(root, path)
            keys = hive_keys(rel.split(os.sep) if rel != os.curdir else [])
            found += [
                (os.path.abspath(os.path.join(root, n)), keys) for n in names if not _hidden(n)
            ]
        return found
    fs, base = pafs.FileSystem.from_uri(item)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        return [(f"{scheme}://{base}", ())]
    if info.type != pafs.FileType.Directory:
        raise UsageError(f"{item}: no such file or folder")
    out = []
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        inner = entry.path[len(base.rstrip("/")) + 1 :].split("/")
        if entry.type == pafs.FileType.File and not any(_hidden(n) for n in inner):
            out.append((f"{scheme}://{entry.path}", hive_keys(inner[:-1])))
    return out


def _open(path: str) -> pq.ParquetFile:
    """A lake file (a local path or a URI) opened for reading."""
    if "://" not in path:
        return pq.ParquetFile(path)
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(path)
    return pq.ParquetFile(fs.open_input_file(inner))


def lake_files(data: Any) -> list[tuple[str, Keys]]:
    """The Parquet files of ``data`` (a path or URI, or a list of them), sorted by name,
    each with its Hive partition keys (a file listed twice: the keys of its first item)."""
    if isinstance(data, str | os.PathLike):
        items = [data]
    elif isinstance(data, list | tuple) and all(isinstance(i, str | os.PathLike) for i in data):
        items = list(data)
    else:
        raise TypeError(
            "importer.dask.plan reads a Parquet path, a list of paths, or a Dask DataFrame "
            f"with dm_source and dm_row columns, not {type(data).__name__}"
        )
    listed: dict[str, Keys] = {}
    for item in items:
        for path, keys in _listed(os.fspath(item)):
            listed.setdefault(path, keys)
    found = sorted(listed.items())
    if not found:
        raise UsageError(f"no Parquet file in {', '.join(map(str, items)) or 'the list given'}")
    return found


def partitions(
    files: list[tuple[str, Keys]], partition_rows: int, cfg: Config | None = None
) -> list[Part]:
    """Split each file into runs of consecutive row groups of about ``partition_rows`` rows
    (reads only the footers). With ``cfg``: a file (with its partition keys) lacking a
    column the job reads is the ConfigError ``dmimport validate`` gives, before any work."""
    parts: list[Part] = []
    for path, found in files:
        try:
            pf = _open(path)
            meta = pf.metadata
            names = pf.schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise UsageError(f"{path}: not a readable Parquet file: {exc}") from None
        keys = tuple((k, v) for k, v in found if k not in names)
        if cfg is not None:
            check_columns(cfg, path, [*names, *(k for k, _ in keys)])
        groups: list[int] = []
        rows = first = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if groups and rows + n > partition_rows:
                parts.append(Part(len(parts), path, tuple(groups), first, keys))
                first += rows
                groups, rows = [], 0
            groups.append(g)
            rows += n
        if groups:
            parts.append(Part(len(parts), path, tuple(groups), first, keys))
    return parts


# --- step 1: map and check, one task per partition -------------------------------------


COUNTS = {
    "part": "int64",
    "rows": "int64",
    "valid": "int64",
    "rejected": "int64",
    "first_source": "object",
    "first_row": "int64",
    "last_source": "object",
    "last_row": "int64",
    "sorted": "bool",
    "groups": "object",
    "error": "object",
}


def _write(table: pa.Table, path: str) -> None:
    """Write ``table`` to ``path`` whole or not at all (a retried task rewrites it)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def _finish(
    cfg: Config,
    out: pa.RecordBatch,
    text: pa.Table,
    number: int,
    stage: str,
    rejects: str,
) -> pd.DataFrame:
    rej = reject_rows(out)
    if rej.num_rows:
        _write(rej, os.path.join(rejects, part_name(number)))
    valid = change_rows(out, text, cfg)
    if valid.num_rows:
        _write(valid, os.path.join(stage, part_name(number)))
    n = out.num_rows
    sources = out.column("source")
    rows = out.column("row").to_numpy(zero_copy_only=False)
    ordered = True
    if n > 1:  # (source, row) strictly increasing within the partition (vectorised)
        a, b = sources.slice(0, n - 1), sources.slice(1)
        later = pc.or_(
            pc.greater(b, a),
            pc.and_(pc.equal(b, a), pa.array(rows[1:] > rows[:-1])),
        )
        ordered = bool(pc.all(later).as_py())
    counts = {
        "part": [number],
        "rows": [n],
        "valid": [valid.num_rows],
        "rejected": [rej.num_rows],
        "first_source": [sources[0].as_py() if n else None],
        "first_row": [int(rows[0]) if n else 0],
        "last_source": [sources[n - 1].as_py() if n else None],
        "last_row": [int(rows[n - 1]) if n else 0],
        "sorted": [ordered],
        "groups": [json.dumps(event_counts(valid))],
        "error": [None],
    }
    return pd.DataFrame(counts).astype(COUNTS)


def _refused(number: int, exc: ConfigError) -> pd.DataFrame:
    """The counts of a partition whose rows the config cannot map: the error travels back as
    data (``raise_refusal`` raises it once, on the client), so no worker logs a traceback
    and no task is retried for what fails the same way every time."""
    counts: dict[str, list[Any]] = {k: [0] for k in COUNTS}
    counts.update(
        part=[number],
        first_source=[None],
        last_source=[None],
        sorted=[True],
        groups=["{}"],
        error=[(exc.problems, exc.source, exc.secrets)],
    )
    return pd.DataFrame(counts).astype(COUNTS)


def raise_refusal(counts: pd.DataFrame) -> None:
    """Raise the ConfigError of the first partition that returned one."""
    errors = counts.sort_values("part")["error"].dropna()
    if len(errors):
        problems, source, secrets = errors.iloc[0]
        raise ConfigError(problems, source=source, secrets=secrets)


def with_keys(table: pa.Table, keys: Keys) -> pa.Table:
    """``table`` with one string column per partition key (all rows the key's value)."""
    for key, value in keys:
        table = table.append_column(
            pa.field(key, pa.string()), pa.repeat(pa.scalar(value, pa.string()), table.num_rows)
        )
    return table


def map_file(part: Part, cfg: Config, stage: str, rejects: str, token: str) -> pd.DataFrame:
    """Step 1 for a Parquet partition (``token``: only in the task's key): the job's columns
    of the file's row groups, its partition keys added as columns."""
    assert part.path is not None
    pf = _open(part.path)
    wanted = set(cfg.source_columns())
    columns = [c for c in pf.schema_arrow.names if c in wanted]
    table = pf.read_row_groups(list(part.groups), columns=columns, use_threads=False)
    table = with_keys(int96_as_utc(table, int96_columns(pf)), part.keys)
    try:
        out = outcomes_of(cfg, table, source=part.path, first_row=part.first_row)
    except ConfigError as exc:
        return _refused(part.number, exc)
    return _finish(cfg, out, text_columns(cfg, table), part.number, stage, rejects)


def map_frame(
    frame: pd.DataFrame,
    cfg: Config,
    stage: str,
    rejects: str,
    token: str,
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Step 1 for a partition of a given DataFrame: ``dm_source``/``dm_row`` name the rows."""
    number = int((partition_info or {}).get("number", 0))
    names = [c for c in cfg.source_columns() if c in frame.columns]
    table = pa.Table.from_pandas(frame[names], preserve_index=False)
    try:
        out = outcomes_of(cfg, table, source="<frame>")
    except ConfigError as exc:
        return _refused(number, exc)
    source = pa.array(frame["dm_source"].astype(str).to_numpy(dtype=object), pa.string())
    row = pa.array(frame["dm_row"].to_numpy(dtype=np.int64), pa.int64())
    batch = pa.RecordBatch.from_arrays([source, row, *out.columns[2:]], schema=out.schema)
    return _finish(cfg, batch, text_columns(cfg, table), number, stage, rejects)


# --- step 2: keys joined with the state, picked per identity ----------------------------

KEYS = {"identity_hash": "int64", "body_hash": "int64", "rank": "int64"}
PICKED = {"rank": "int64", "part": "int64", "first": "bool"}
WRITTEN = {"part": "int64", "event": "object", "to_send": "int64", "identities": "int64"}


def empty(dtypes: Mapping[str, str]) -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in dtypes.items()})


def keys_of(number: int, stage: str, token: str) -> pd.DataFrame:
    """The staged valid rows of partition ``number``: hashes and rank."""
    t = pq.read_table(
        os.path.join(stage, part_name(number)), columns=["dm_identity_hash", "dm_body_hash"]
    )
    n = t.num_rows
    return pd.DataFrame(
        {
            "identity_hash": t.column(0).to_numpy(),
            "body_hash": t.column(1).to_numpy(),
            "rank": (number << _SHIFT) + np.arange(n, dtype=np.int64),
        }
    )


def state_file(path: str | None, token: str) -> pd.DataFrame:
    """One file of the state's current version as key rows of rank -1 (None: no rows)."""
    if path is None:
        return empty(KEYS)
    t = pq.read_table(path, columns=["identity_hash", "body_hash"])
    return pd.DataFrame(
        {
            "identity_hash": t.column(0).to_numpy().astype(np.int64, copy=False),
            "body_hash": t.column(1).to_numpy().astype(np.int64, copy=False),
            "rank": np.full(t.num_rows, -1, dtype=np.int64),
        }
    )


def pick(frame: pd.DataFrame, by_last: bool) -> pd.DataFrame:
    """``select_changes`` on one shuffle partition of valid rows (rank >= 0) and state rows
    (rank -1): every row of an identity and its state row are in the same partition."""
    rank_all = frame["rank"].to_numpy(dtype=np.int64)
    ident_all = frame["identity_hash"].to_numpy(dtype=np.int64)
    body_all = frame["body_hash"].to_numpy(dtype=np.int64)
    rows = rank_all >= 0
    known, hashes = ident_all[~rows], body_all[~rows]
    ident, order, body = ident_all[rows], rank_all[rows], body_all[rows]
    if not ident.shape[0]:
        return empty(PICKED)
    sort = np.argsort(known, kind="stable")
    known, hashes = known[sort], hashes[sort]
    if known.shape[0]:
        at = np.minimum(np.searchsorted(known, ident), known.shape[0] - 1)
        in_state = known[at] == ident
        state_hash = np.where(in_state, hashes[at], 0)
    else:
        in_state = np.zeros(ident.shape[0], dtype=bool)
        state_hash = np.zeros(ident.shape[0], dtype=np.int64)
    keep = select_changes(ident, order, body, state_hash, in_state, by_last)
    rank = order[keep]
    first = np.zeros(rank.shape[0], dtype=bool)
    if rank.shape[0]:
        _, firsts = np.unique(ident[keep], return_index=True)
        first[firsts] = True
    return pd.DataFrame({"rank": rank, "part": rank >> _SHIFT, "first": first})


RANGED = {**KEYS, "range": "int64"}


def state_ranges(files: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """When the state's files hold disjoint identity-hash ranges (by their footers'
    statistics; files without rows left out): each range's first hash and its file, in
    order. None when a file has no statistics or two ranges overlap (then the state is
    shuffled with the keys)."""
    found = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        if meta.num_rows == 0:
            continue
        lows, highs = [], []
        for g in range(meta.num_row_groups):
            if meta.row_group(g).num_rows == 0:
                continue
            stats = meta.row_group(g).column(0).statistics
            if stats is None or not stats.has_min_max:
                return None
            lows.append(stats.min)
            highs.append(stats.max)
        found.append((min(lows), max(highs), path))
    if not found:
        return None
    found.sort()
    if any(found[i][1] >= found[i + 1][0] for i in range(len(found) - 1)):
        return None
    return np.array([lo for lo, _, _ in found], dtype=np.int64), [p for _, _, p in found]


def with_range(frame: pd.DataFrame, starts: np.ndarray) -> pd.DataFrame:
    """``frame``'s keys with the state range each identity hash falls in."""
    ident = frame["identity_hash"].to_numpy(dtype=np.int64)
    at = np.clip(np.searchsorted(starts, ident, side="right") - 1, 0, len(starts) - 1)
    return frame.assign(range=at.astype(np.int64))


def pick_ranged(frame: pd.DataFrame, files: list[str], by_last: bool) -> pd.DataFrame:
    """``pick`` for keys shuffled by state range: the state rows come from the files of the
    ranges present (an identity hash in no range is not in the state)."""
    if frame.empty:
        return empty(PICKED)
    ranges = np.unique(frame["range"].to_numpy(dtype=np.int64))
    known = [state_file(files[int(r)], "") for r in ranges]
    return pick(pd.concat([frame[list(KEYS)], *known], ignore_index=True), by_last)


# --- step 3: the picked rows written in partition order -----------------------------------


def write_changes(frame: pd.DataFrame, stage: str, changes: str) -> pd.DataFrame:
    """Write the change set part of every partition whose picked ranks ``frame`` holds;
    return per partition and event name the rows written (and the identities picked, on
    the partition's first row)."""
    if frame.empty:
        return empty(WRITTEN)
    rows: list[tuple[int, str, int, int]] = []
    for part, group in frame.groupby("part", sort=True):
        number = int(part)
        at = np.sort(group["rank"].to_numpy(dtype=np.int64) & _LOW)
        picked = pq.read_table(os.path.join(stage, part_name(number))).take(pa.array(at))
        _write(picked, os.path.join(changes, part_name(number)))
        identities = int(group["first"].sum())
        for name, count in event_counts(picked).items():
            rows.append((number, name, count, identities))
            identities = 0
    return pd.DataFrame(rows, columns=list(WRITTEN)).astype(WRITTEN)


def check_order(counts: pd.DataFrame) -> None:
    """Refuse a DataFrame whose rows are not in (dm_source, dm_row) order."""
    filled = counts[counts["rows"] > 0]
    ok = bool(filled["sorted"].all())
    last = list(zip(filled["last_source"], filled["last_row"], strict=True))[:-1]
    first = list(zip(filled["first_source"], filled["first_row"], strict=True))[1:]
    ok = ok and all(a < b for a, b in zip(last, first, strict=True))
    if not ok:
        raise UsageError(
            "the DataFrame's rows are not in (dm_source, dm_row) order across its partitions: "
            "sort it first (df.sort_values(['dm_source', 'dm_row'])), or give the plan the "
            "Parquet paths"
        )


def ids_of(number: int, folder: str, token: str) -> pd.DataFrame:
    t = pq.read_table(os.path.join(folder, part_name(number)), columns=["dm_identity_hash"])
    return pd.DataFrame({"identity_hash": t.column(0).to_numpy()})


def distinct(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"identities": [int(frame["identity_hash"].nunique())]})


def written_of(counts: pd.DataFrame, found: pd.DataFrame | None) -> pd.DataFrame:
    """The step-3 counts of a plan without a state: every valid row, per event name."""
    rows: list[tuple[int, str, int, int]] = []
    for part, groups in zip(counts["part"], counts["groups"], strict=True):
        rows += [(int(part), k, int(v), 0) for k, v in json.loads(groups).items()]
    rows.append((-1, "", 0, int(found["identities"].sum()) if found is not None else 0))
    return pd.DataFrame(rows, columns=list(WRITTEN)).astype(WRITTEN)


# --- commit --------------------------------------------------------------------------------

MERGE = {"identity_hash": "int64", "body_hash": "int64", "new": "bool", "bucket": "int64"}


def bucket_of(ident: np.ndarray, bits: int) -> np.ndarray:
    """The identity hash range (of ``2**bits``, in signed order) each hash falls in."""
    if bits == 0:
        return np.zeros(ident.shape[0], dtype=np.int64)
    flipped = ident.view(np.uint64) ^ np.uint64(1 << 63)
    return (flipped >> np.uint64(64 - bits)).astype(np.int64)


def merge_input(path: str | None, bits: int, token: str) -> pd.DataFrame:
    """One current state file's rows, with their range (None: no rows)."""
    if path is None:
        return empty(MERGE)
    t = pq.read_table(path, columns=["identity_hash", "body_hash"])
    ident = t.column(0).to_numpy().astype(np.int64, copy=False)
    return pd.DataFrame(
        {
            "identity_hash": ident,
            "body_hash": t.column(1).to_numpy().astype(np.int64, copy=False),
            "new": np.zeros(ident.shape[0], dtype=bool),
            "bucket": bucket_of(ident, bits),
        }
    )


def write_ranges(frame: pd.DataFrame, version: str) -> pd.DataFrame:
    """Per range in ``frame``: one row per identity (the delivered hash over the state's),
    sorted by identity hash, written as one state file."""
    out = []
    for bucket, group in frame.groupby("bucket", sort=True):
        ident = group["identity_hash"].to_numpy(dtype=np.int64)
        new = group["new"].to_numpy(dtype=bool)
        perm = np.lexsort((new, ident))  # per identity: the state's row, then the delivered
        ident = ident[perm]
        last = np.ones(ident.shape[0], dtype=bool)
        last[:-1] = ident[1:] != ident[:-1]
        table = pa.table(
            {
                "identity_hash": ident[last],
                "body_hash": group["body_hash"].to_numpy(dtype=np.int64)[perm][last],
            }
        )
        lake_state.write_state(version, table, name=f"part-{int(bucket):05d}")
        out.append((int(bucket), table.num_rows))
    return pd.DataFrame(out, columns=["bucket", "rows"]).astype("int64")
