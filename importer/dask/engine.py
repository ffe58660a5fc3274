"""``importer.dask.plan`` and ``commit``: the Dask graphs of the tasks in
``importer.dask.tasks``, computed on a ``distributed.Client`` (see ``importer.dask``)."""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..config import Config
from ..errors import UsageError
from ..lake import (
    REJECT_SCHEMA,
    CommitSummary,
    PlanSummary,
    by_last_for,
    change_schema,
    check_plan_config,
    plan_summary,
)
from ..lake import state as lake_state
from ..lake.table import as_config, checked_delivery
from .tasks import (
    COUNTS,
    KEYS,
    MERGE,
    PICKED,
    RANGED,
    WRITTEN,
    bucket_of,
    check_order,
    distinct,
    empty,
    ids_of,
    keys_of,
    lake_files,
    map_file,
    map_frame,
    merge_input,
    part_name,
    partitions,
    pick,
    pick_ranged,
    raise_refusal,
    state_file,
    state_ranges,
    with_range,
    write_changes,
    write_ranges,
    written_of,
)

PARTITION_ROWS = 250_000
#: rows per state file written by ``commit`` (the state is range-partitioned by identity hash)
STATE_FILE_ROWS = 4_000_000


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
    # a scheduler in this process (a LocalCluster) logs every P2P shuffle's start and end as a
    # WARNING: routine for a plan (which shuffles on purpose), noise in a cron mail; only
    # those two messages are held back, while the plan computes
    plugin_log = logging.getLogger("distributed.shuffle._scheduler_plugin")
    plugin_log.addFilter(_routine_shuffle)
    try:
        return client.compute(collection, retries=retries, sync=True)
    finally:
        plugin_log.removeFilter(_routine_shuffle)


def _routine_shuffle(record: logging.LogRecord) -> bool:
    """False for the scheduler's routine lines about a P2P shuffle ("Shuffle ... initialized
    by task ...", "Shuffle ... deactivated due to stimulus ...")."""
    text = record.getMessage()
    return not (
        text.startswith("Shuffle ")
        and (" initialized by task " in text or " deactivated due to stimulus " in text)
    )


def _step1(
    cfg: Config, data: Any, stage: str, rejects: str, token: str, partition_rows: int
) -> Any:
    import dask.dataframe as dd

    meta = empty(COUNTS)
    if isinstance(data, dd.DataFrame):
        missing = [c for c in ("dm_source", "dm_row") if c not in data.columns]
        if missing:
            raise UsageError(
                f"a Dask DataFrame to plan needs the columns dm_source and dm_row (the file and "
                f"the 1-based row of each row); it has no {', '.join(missing)}"
            )
        return data.map_partitions(
            map_frame, cfg, stage, rejects, token, meta=meta, enforce_metadata=False
        )
    parts = partitions(lake_files(data), partition_rows, cfg)
    return dd.from_map(
        map_file,
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
        keys_of,
        numbers,
        args=(stage, token),
        meta=empty(KEYS),
        label=f"dmimport-keys-{token}",
        enforce_metadata=False,
    )
    n = max(1, keys.npartitions)
    by_last = by_last_for(cfg.job.kind)
    ranged = state_ranges(files)
    if ranged is not None:
        # the state's files hold disjoint identity-hash ranges (as commit writes them): only
        # the keys are shuffled, by range, and each range's task reads its state file
        starts, in_order = ranged
        picked = (
            keys.map_partitions(with_range, starts, meta=empty(RANGED), enforce_metadata=False)
            .shuffle("range", npartitions=n)
            .map_partitions(
                pick_ranged, in_order, by_last, meta=empty(PICKED), enforce_metadata=False
            )
        )
    else:
        st = dd.from_map(
            state_file,
            files,
            args=(token,),
            meta=empty(KEYS),
            label=f"dmimport-state-{token}",
            enforce_metadata=False,
        )
        joined = dd.concat([keys, st])  # one shuffle joins and groups: no merge, no nulls
        picked = joined.shuffle("identity_hash", npartitions=n).map_partitions(
            pick, by_last, meta=empty(PICKED), enforce_metadata=False
        )
    return picked.shuffle("part", npartitions=n).map_partitions(
        write_changes, stage, changes, meta=empty(WRITTEN), enforce_metadata=False
    )


def _identities(counts: pd.DataFrame, changes: str, token: str) -> Any | None:
    """Without a state every valid row is sent: the change set was written by step 1, only
    its distinct identities are counted (a shuffle of one int64 column)."""
    import dask.dataframe as dd

    numbers = [int(p) for p in counts.loc[counts["valid"] > 0, "part"]]
    if not numbers:
        return None
    ids = dd.from_map(
        ids_of,
        numbers,
        args=(changes, token),
        meta=empty({"identity_hash": "int64"}),
        label=f"dmimport-ids-{token}",
        enforce_metadata=False,
    )
    return ids.shuffle("identity_hash", npartitions=ids.npartitions).map_partitions(
        distinct, meta=empty({"identities": "int64"}), enforce_metadata=False
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
    check_plan_config(cfg, out)
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
        raise_refusal(counts)
        check_order(counts)
        if files:
            step23 = _steps23(cfg, counts, files, str(stage), str(changes), token)
            written = _compute(client, step23, retries) if step23 is not None else None
        else:
            step23 = _identities(counts, str(changes), token)
            found = _compute(client, step23, retries) if step23 is not None else None
            written = written_of(counts, found)
        if written is None:
            written = empty(WRITTEN)
        if not any(changes.iterdir()):  # an empty change set is still a readable one
            pq.write_table(change_schema(cfg).empty_table(), changes / part_name(0))
        if not any(rejects.iterdir()):
            pq.write_table(REJECT_SCHEMA.empty_table(), rejects / part_name(0))
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


@lake_state.state_locked  # one commit at a time per state table
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

    got, job, kind = checked_delivery(results, state)
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
            "bucket": bucket_of(ident, bits),
        }
    )
    old = dd.from_map(
        merge_input,
        [str(f) for f in files] or [None],
        args=(bits, token),
        meta=empty(MERGE),
        label=f"dmimport-state-{token}",
        enforce_metadata=False,
    )
    both = dd.concat([old, dd.from_pandas(fresh, npartitions=max(1, len(fresh) // 1_000_000))])
    n = max(1, min(1 << bits, both.npartitions))
    merged = both.shuffle("bucket", npartitions=n).map_partitions(
        write_ranges, str(version), meta=empty({"bucket": "int64", "rows": "int64"})
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
