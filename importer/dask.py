"""``importer.dask``: the lake-side plan and commit on a Dask cluster (issue 15).

``plan(config, data, state=STATE, out=OUT, client=client)`` maps and checks every row of a
Parquet lake (a folder, a file, or a list of them; or a Dask DataFrame that already has
``dm_source``/``dm_row`` columns) on the cluster's workers with ``importer.outcomes_of``,
compares each valid row with the state table and writes the change set (``OUT/changes/``) and
the rejects (``OUT/rejects/``) from the workers, then ``OUT/plan.json``. Nothing that grows
with the rows comes back to the client: only per-partition counts.

How (three steps, two Dask computations):

1. one task per partition (a Parquet row-group range of one file, in file-name order; or one
   partition of the given DataFrame) reads the job's source columns, maps them, writes the
   partition's rejects (already in (dm_source, dm_row) order: final) and its valid rows
   (staged, next to the output) and returns its counts;
2. the valid rows' keys (identity hash, body hash, rank) are joined with the state's current
   version (a left merge), shuffled by identity hash and ``importer.lake.select_changes``
   picks the new and changed rows per identity;
3. the picked ranks are shuffled back to their partitions, and each partition's task takes
   its picked rows from the staged file and writes the change set's part file. Parts are
   named by partition number, so reading them in name order gives (dm_source, dm_row) order,
   without a global sort of the bodies.

Dask has no commit protocol: everything is written under hidden folders of ``OUT``
(``.dask-<token>-*``) with deterministic file names (a retried task rewrites its own files),
and renamed to ``OUT/changes``/``OUT/rejects`` only once both computations succeeded; a failed
plan leaves the previous outputs as they were and removes its own. Every task key holds a
per-call token, so a long-lived ``Client`` never returns the outcomes of an earlier plan of
files that changed since.

``commit(results, state, client=client)`` merges what a ``dmimport run`` of the change set
delivered (``importer.lake.delivered``) into a new state version in Dask: the current files
and the delivered hashes are range-partitioned by identity hash, each range keeps the
delivered hash where there is one (anti-join + union), sorted, one zstd file per range; then
``_CURRENT`` is swapped and old versions are pruned.

Only this module imports dask; ``import importer`` never does.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import Config
from .errors import UsageError
from .lake import (
    REJECT_SCHEMA,
    CommitSummary,
    PlanSummary,
    by_last_for,
    change_rows,
    change_schema,
    change_set_info,
    check_plan_config,
    delivered,
    plan_summary,
    reject_rows,
    select_changes,
    text_columns,
)
from .lake import state as lake_state
from .lake.table import as_config
from .plan import outcomes_of

__all__ = ["commit", "plan"]

#: rows per plan partition (consecutive row groups of one file are read together up to this)
PARTITION_ROWS = 250_000
#: rows per state file written by ``commit`` (the state is range-partitioned by identity hash)
STATE_FILE_ROWS = 4_000_000
_SHIFT = 40  # a row's rank: partition number << 40 | position among the partition's valid rows
_LOW = (1 << _SHIFT) - 1


@dataclass(frozen=True)
class _Part:
    """One plan partition: row groups ``groups`` of Parquet file ``path`` whose first row is
    ``first_row`` rows into the file (None: a partition of a given DataFrame)."""

    number: int
    path: str | None = None
    groups: tuple[int, ...] = ()
    first_row: int = 0


def _hidden(name: str) -> bool:
    return name.startswith(("_", ".")) or name.endswith(".crc")


def _listed(item: str) -> list[str]:
    """The Parquet files of one path or URI (a folder: its files at any depth, except
    hidden ones: ``_SUCCESS``, ``_metadata``, ``.crc``...). A ``file:`` URI or a plain path
    gives local paths; another scheme (``s3://``, ``gs://``, ``hdfs://``: what
    ``pyarrow.fs`` opens) gives URIs."""
    import pyarrow.fs as pafs

    scheme = item.split("://", 1)[0] if "://" in item else ""
    if scheme in ("", "file"):
        path = Path(item[len("file://") :] if scheme else item)
        if path.is_file():
            return [os.path.abspath(path)]
        if not path.is_dir():
            raise UsageError(f"{item}: no such file or folder")
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not _hidden(d)]
            found += [os.path.abspath(os.path.join(root, n)) for n in names if not _hidden(n)]
        return found
    fs, base = pafs.FileSystem.from_uri(item)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        return [f"{scheme}://{base}"]
    if info.type != pafs.FileType.Directory:
        raise UsageError(f"{item}: no such file or folder")
    out = []
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        inner = entry.path[len(base.rstrip("/")) + 1 :].split("/")
        if entry.type == pafs.FileType.File and not any(_hidden(n) for n in inner):
            out.append(f"{scheme}://{entry.path}")
    return out


def _open(path: str) -> pq.ParquetFile:
    """A lake file (a local path or a URI) opened for reading."""
    if "://" not in path:
        return pq.ParquetFile(path)
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(path)
    return pq.ParquetFile(fs.open_input_file(inner))


def _files(data: Any) -> list[str]:
    """The Parquet files of ``data`` (a path or URI, or a list of them), sorted by name."""
    if isinstance(data, str | os.PathLike):
        items = [data]
    elif isinstance(data, list | tuple) and all(isinstance(i, str | os.PathLike) for i in data):
        items = list(data)
    else:
        raise TypeError(
            "importer.dask.plan reads a Parquet path, a list of paths, or a Dask DataFrame "
            f"with dm_source and dm_row columns, not {type(data).__name__}"
        )
    found = sorted({f for item in items for f in _listed(os.fspath(item))})
    if not found:
        raise UsageError(f"no Parquet file in {', '.join(map(str, items)) or 'the list given'}")
    return found


def _parts(files: list[str], partition_rows: int) -> list[_Part]:
    """Split each file into runs of consecutive row groups of about ``partition_rows`` rows
    (reads only the footers)."""
    parts: list[_Part] = []
    for path in files:
        try:
            meta = _open(path).metadata
        except (pa.ArrowException, OSError) as exc:
            raise UsageError(f"{path}: not a readable Parquet file: {exc}") from None
        groups: list[int] = []
        rows = first = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if groups and rows + n > partition_rows:
                parts.append(_Part(len(parts), path, tuple(groups), first))
                first += rows
                groups, rows = [], 0
            groups.append(g)
            rows += n
        if groups:
            parts.append(_Part(len(parts), path, tuple(groups), first))
    return parts


# --- step 1: map and check, one task per partition -------------------------------------


_COUNTS = {
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
}


def _write(table: pa.Table, path: str) -> None:
    """Write ``table`` to ``path`` whole or not at all (a retried task rewrites it)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def _groups(table: pa.Table) -> dict[str, int]:
    """Rows per event name (\"\" when none) of change rows ``table``."""
    if not table.num_rows:
        return {}
    counts = pc.value_counts(table.column("dm_event").fill_null(""))
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


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
        _write(rej, os.path.join(rejects, _name(number)))
    valid = change_rows(out, text, cfg)
    if valid.num_rows:
        _write(valid, os.path.join(stage, _name(number)))
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
        "groups": [json.dumps(_groups(valid))],
    }
    return pd.DataFrame(counts).astype(_COUNTS)


def _map_file(part: _Part, cfg: Config, stage: str, rejects: str, token: str) -> pd.DataFrame:
    """Step 1 for a Parquet partition (``token``: only in the task's key)."""
    assert part.path is not None
    pf = _open(part.path)
    wanted = set(cfg.source_columns())
    columns = [c for c in pf.schema_arrow.names if c in wanted]
    table = pf.read_row_groups(list(part.groups), columns=columns, use_threads=False)
    out = outcomes_of(cfg, table, source=part.path, first_row=part.first_row)
    return _finish(cfg, out, text_columns(cfg, table), part.number, stage, rejects)


def _map_frame(
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
    out = outcomes_of(cfg, table, source="<frame>")
    source = pa.array(frame["dm_source"].astype(str).to_numpy(dtype=object), pa.string())
    row = pa.array(frame["dm_row"].to_numpy(dtype=np.int64), pa.int64())
    batch = pa.RecordBatch.from_arrays([source, row, *out.columns[2:]], schema=out.schema)
    return _finish(cfg, batch, text_columns(cfg, table), number, stage, rejects)


# --- step 2: keys joined with the state, picked per identity ----------------------------

_KEYS = {"identity_hash": "int64", "body_hash": "int64", "rank": "int64"}
_PICKED = {"rank": "int64", "part": "int64", "first": "bool"}
_WRITTEN = {"part": "int64", "event": "object", "to_send": "int64", "identities": "int64"}


def _empty(dtypes: Mapping[str, str]) -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in dtypes.items()})


def _keys(number: int, stage: str, token: str) -> pd.DataFrame:
    """The staged valid rows of partition ``number``: hashes and rank."""
    t = pq.read_table(
        os.path.join(stage, _name(number)), columns=["dm_identity_hash", "dm_body_hash"]
    )
    n = t.num_rows
    return pd.DataFrame(
        {
            "identity_hash": t.column(0).to_numpy(),
            "body_hash": t.column(1).to_numpy(),
            "rank": (number << _SHIFT) + np.arange(n, dtype=np.int64),
        }
    )


def _state_file(path: str | None, token: str) -> pd.DataFrame:
    """One file of the state's current version as key rows of rank -1 (None: no rows)."""
    if path is None:
        return _empty(_KEYS)
    t = pq.read_table(path, columns=["identity_hash", "body_hash"])
    return pd.DataFrame(
        {
            "identity_hash": t.column(0).to_numpy().astype(np.int64, copy=False),
            "body_hash": t.column(1).to_numpy().astype(np.int64, copy=False),
            "rank": np.full(t.num_rows, -1, dtype=np.int64),
        }
    )


def _pick(frame: pd.DataFrame, by_last: bool) -> pd.DataFrame:
    """``select_changes`` on one shuffle partition of valid rows (rank >= 0) and state rows
    (rank -1): every row of an identity and its state row are in the same partition."""
    rank_all = frame["rank"].to_numpy(dtype=np.int64)
    ident_all = frame["identity_hash"].to_numpy(dtype=np.int64)
    body_all = frame["body_hash"].to_numpy(dtype=np.int64)
    rows = rank_all >= 0
    known, hashes = ident_all[~rows], body_all[~rows]
    ident, order, body = ident_all[rows], rank_all[rows], body_all[rows]
    if not ident.shape[0]:
        return _empty(_PICKED)
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


# --- step 3: the picked rows written in partition order -----------------------------------


def _write_changes(frame: pd.DataFrame, stage: str, changes: str) -> pd.DataFrame:
    """Write the change set part of every partition whose picked ranks ``frame`` holds;
    return per partition and event name the rows written (and the identities picked, on
    the partition's first row)."""
    if frame.empty:
        return _empty(_WRITTEN)
    rows: list[tuple[int, str, int, int]] = []
    for part, group in frame.groupby("part", sort=True):
        number = int(part)
        at = np.sort(group["rank"].to_numpy(dtype=np.int64) & _LOW)
        picked = pq.read_table(os.path.join(stage, _name(number))).take(pa.array(at))
        _write(picked, os.path.join(changes, _name(number)))
        identities = int(group["first"].sum())
        for name, count in _groups(picked).items():
            rows.append((number, name, count, identities))
            identities = 0
    return pd.DataFrame(rows, columns=list(_WRITTEN)).astype(_WRITTEN)


# --- the plan ------------------------------------------------------------------------------


def _compute(client: Any, collection: Any, retries: int) -> pd.DataFrame:
    """``collection`` computed on ``client`` (None: the current distributed client, if any,
    else dask's local scheduler) with ``retries`` retries per task."""
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        import dask

        return dask.compute(collection)[0]
    return client.compute(collection, retries=retries, sync=True)


def _check_order(counts: pd.DataFrame) -> None:
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


def _step1(
    cfg: Config, data: Any, stage: str, rejects: str, token: str, partition_rows: int
) -> Any:
    import dask.dataframe as dd

    meta = _empty(_COUNTS)
    if isinstance(data, dd.DataFrame):
        missing = [c for c in ("dm_source", "dm_row") if c not in data.columns]
        if missing:
            raise UsageError(
                f"a Dask DataFrame to plan needs the columns dm_source and dm_row (the file and "
                f"the 1-based row of each row); it has no {', '.join(missing)}"
            )
        return data.map_partitions(
            _map_frame, cfg, stage, rejects, token, meta=meta, enforce_metadata=False
        )
    parts = _parts(_files(data), partition_rows)
    return dd.from_map(
        _map_file,
        parts,
        args=(cfg, stage, rejects, token),
        meta=meta,
        label=f"dmimport-map-{token}",
        enforce_metadata=False,
    )


def _steps23(
    cfg: Config,
    counts: pd.DataFrame,
    files: list[str],
    stage: str,
    changes: str,
    token: str,
) -> Any | None:
    import dask.dataframe as dd

    numbers = [int(p) for p in counts.loc[counts["valid"] > 0, "part"]]
    if not numbers:
        return None
    keys = dd.from_map(
        _keys,
        numbers,
        args=(stage, token),
        meta=_empty(_KEYS),
        label=f"dmimport-keys-{token}",
        enforce_metadata=False,
    )
    st = dd.from_map(
        _state_file,
        files,
        args=(token,),
        meta=_empty(_KEYS),
        label=f"dmimport-state-{token}",
        enforce_metadata=False,
    )
    n = max(1, keys.npartitions)
    joined = dd.concat([keys, st])  # one shuffle joins and groups: no merge, no nulls
    picked = joined.shuffle("identity_hash", npartitions=n).map_partitions(
        _pick, by_last_for(cfg.job.kind), meta=_empty(_PICKED), enforce_metadata=False
    )
    return picked.shuffle("part", npartitions=n).map_partitions(
        _write_changes, stage, changes, meta=_empty(_WRITTEN), enforce_metadata=False
    )


def _ids(number: int, folder: str, token: str) -> pd.DataFrame:
    t = pq.read_table(os.path.join(folder, _name(number)), columns=["dm_identity_hash"])
    return pd.DataFrame({"identity_hash": t.column(0).to_numpy()})


def _distinct(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"identities": [int(frame["identity_hash"].nunique())]})


def _identities(counts: pd.DataFrame, changes: str, token: str) -> Any | None:
    """Without a state every valid row is sent: the change set was written by step 1, only
    its distinct identities are counted (a shuffle of one int64 column)."""
    import dask.dataframe as dd

    numbers = [int(p) for p in counts.loc[counts["valid"] > 0, "part"]]
    if not numbers:
        return None
    ids = dd.from_map(
        _ids,
        numbers,
        args=(changes, token),
        meta=_empty({"identity_hash": "int64"}),
        label=f"dmimport-ids-{token}",
        enforce_metadata=False,
    )
    return ids.shuffle("identity_hash", npartitions=ids.npartitions).map_partitions(
        _distinct, meta=_empty({"identities": "int64"}), enforce_metadata=False
    )


def _replace(new: Path, final: Path, token: str) -> None:
    """Put folder ``new`` at ``final``, the previous one (if any) removed after."""
    old = final.with_name(f".{final.name}-old-{token}")
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def plan(
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    data: Any,
    *,
    state: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    client: Any = None,
    retries: int = 1,
    partition_rows: int = PARTITION_ROWS,
) -> PlanSummary:
    """Plan job ``config`` over ``data`` on Dask: write the change set (``OUT/changes/``),
    the rejects (``OUT/rejects/``) and ``OUT/plan.json``, and return the ``PlanSummary``.

    ``data``: a Parquet file or folder (its files at any depth, hidden ones such as
    ``_SUCCESS``/``_metadata`` skipped), or a list of them, read in file-name order, each
    row group range of about ``partition_rows`` rows one task; or a Dask DataFrame with the
    job's source columns and ``dm_source`` (string) / ``dm_row`` (int, 1-based) naming each
    row, its rows in (dm_source, dm_row) order across partitions (checked). ``state``: the
    state table folder (None or absent: every identity is new). ``client``: a
    ``distributed.Client`` (None: the current one, else dask's local scheduler, which does
    not retry); ``retries``: how often a failed task is retried (it rewrites its own files,
    nothing is doubled). A failed plan raises and leaves ``OUT``'s outputs as they were; what
    a killed plan left (hidden ``OUT/.dask-*`` folders) is removed by the next plan, so two
    plans must not write the same ``OUT`` at once."""
    cfg = as_config(config)
    check_plan_config(cfg)
    lake_state.check_state(state, cfg.job_name, cfg.job.kind)
    version = lake_state.current(state) if state is not None else None
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    for left in target.glob(".dask-*"):  # what a killed plan left: never counted, removed
        shutil.rmtree(left, ignore_errors=True)
    token = secrets.token_hex(8)
    work = target / f".dask-{token}"
    stage, changes, rejects = work / "stage", work / "changes", work / "rejects"
    for d in (stage, changes, rejects):
        d.mkdir(parents=True)
    files = [str(f) for f in sorted(version.glob("*.parquet"))] if version is not None else []
    try:
        # without a state every valid row is sent: step 1 writes the change set itself
        step1 = _step1(
            cfg, data, str(changes if not files else stage), str(rejects), token, partition_rows
        )
        counts = _compute(client, step1, retries)
        _check_order(counts)
        if files:
            step23 = _steps23(cfg, counts, files, str(stage), str(changes), token)
            written = _compute(client, step23, retries) if step23 is not None else None
        else:
            step23 = _identities(counts, str(changes), token)
            found = _compute(client, step23, retries) if step23 is not None else None
            written = _written_of(counts, found)
        if written is None:
            written = _empty(_WRITTEN)
        if not any(changes.iterdir()):  # an empty change set is still a readable one
            pq.write_table(change_schema(cfg).empty_table(), changes / _name(0))
        if not any(rejects.iterdir()):
            pq.write_table(REJECT_SCHEMA.empty_table(), rejects / _name(0))
        _replace(changes, target / "changes", token)
        _replace(rejects, target / "rejects", token)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    valid = int(counts["valid"].sum())
    summary = plan_summary(
        cfg,
        rows=int(counts["rows"].sum()),
        valid=valid,
        unchanged=valid - int(written["to_send"].sum()),
        groups=written.groupby("event")["to_send"].sum().to_dict(),
        identities_to_send=int(written["identities"].sum()),
        state_version=version.name if version is not None else None,
        out=target,
    )
    summary.write(target)
    return summary


def _written_of(counts: pd.DataFrame, found: pd.DataFrame | None) -> pd.DataFrame:
    """The step-3 counts of a plan without a state: every valid row, per event name."""
    rows: list[tuple[int, str, int, int]] = []
    for part, groups in zip(counts["part"], counts["groups"], strict=True):
        rows += [(int(part), k, int(v), 0) for k, v in json.loads(groups).items()]
    rows.append((-1, "", 0, int(found["identities"].sum()) if found is not None else 0))
    return pd.DataFrame(rows, columns=list(_WRITTEN)).astype(_WRITTEN)


# --- commit --------------------------------------------------------------------------------

_MERGE = {"identity_hash": "int64", "body_hash": "int64", "new": "bool", "bucket": "int64"}


def _bucket(ident: np.ndarray, bits: int) -> np.ndarray:
    """The identity hash range (of ``2**bits``, in signed order) each hash falls in."""
    if bits == 0:
        return np.zeros(ident.shape[0], dtype=np.int64)
    flipped = ident.view(np.uint64) ^ np.uint64(1 << 63)
    return (flipped >> np.uint64(64 - bits)).astype(np.int64)


def _merge_input(path: str | None, bits: int, token: str) -> pd.DataFrame:
    """One current state file's rows, with their range (None: no rows)."""
    if path is None:
        return _empty(_MERGE)
    t = pq.read_table(path, columns=["identity_hash", "body_hash"])
    ident = t.column(0).to_numpy().astype(np.int64, copy=False)
    return pd.DataFrame(
        {
            "identity_hash": ident,
            "body_hash": t.column(1).to_numpy().astype(np.int64, copy=False),
            "new": np.zeros(ident.shape[0], dtype=bool),
            "bucket": _bucket(ident, bits),
        }
    )


def _write_ranges(frame: pd.DataFrame, version: str) -> pd.DataFrame:
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


def commit(
    results: Any,
    state: str | os.PathLike[str],
    *,
    client: Any = None,
    retries: int = 1,
    file_rows: int = STATE_FILE_ROWS,
) -> CommitSummary:
    """Merge what a ``dmimport run`` of a change set delivered (``results``: its
    ``RunSummary``, report folder, or results file; ``importer.lake.delivered``) into the
    state table ``state`` on Dask: a new version whose files each hold one identity hash
    range (about ``file_rows`` rows each, sorted, one row per identity, the delivered body
    hash replacing the state's), then ``_CURRENT`` swapped and versions older than the
    previous one removed. A failed commit leaves the current version as it was."""
    import dask.dataframe as dd

    got = delivered(results)
    info = change_set_info(got.schema) or {}
    job, kind = str(info.get("job")), str(info.get("kind"))
    lake_state.check_state(state, job, kind)
    before = lake_state.current(state)
    files = sorted(before.glob("*.parquet")) if before is not None else []
    state_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    total = state_rows + got.num_rows
    bits = max(0, math.ceil(math.log2(max(1.0, total / max(1, file_rows)))))
    version = lake_state.new_version(state, job, kind)
    token = secrets.token_hex(8)
    ident = got.column("identity_hash").to_numpy().astype(np.int64, copy=False)
    fresh = pd.DataFrame(
        {
            "identity_hash": ident,
            "body_hash": got.column("body_hash").to_numpy().astype(np.int64, copy=False),
            "new": np.ones(ident.shape[0], dtype=bool),
            "bucket": _bucket(ident, bits),
        }
    )
    old = dd.from_map(
        _merge_input,
        [str(f) for f in files] or [None],
        args=(bits, token),
        meta=_empty(_MERGE),
        label=f"dmimport-state-{token}",
        enforce_metadata=False,
    )
    both = dd.concat([old, dd.from_pandas(fresh, npartitions=max(1, len(fresh) // 1_000_000))])
    n = max(1, min(1 << bits, both.npartitions))
    merged = both.shuffle("bucket", npartitions=n).map_partitions(
        _write_ranges, str(version), meta=_empty({"bucket": "int64", "rows": "int64"})
    )
    try:
        rows = _compute(client, merged, retries)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    lake_state.publish(state, version)
    lake_state.prune(state)
    return CommitSummary(
        delivered=got.num_rows,
        state_rows=int(rows["rows"].sum()),
        version=version.name,
        previous=before.name if before is not None else None,
    )
