"""``plan_table`` and ``commit_table``: the single-process lake-side plan and commit (issue 15).

The reference the engines (``importer.spark``, ``importer.dask``) are tested against, and
usable alone for a table that fits in memory: the same outputs, in the same layout::

    OUT/changes/part-00000.parquet   the change set (source columns as text, then PLAN_COLUMNS)
    OUT/rejects/part-00000.parquet   the rejected rows with their reasons (REJECT_COLUMNS)
    OUT/plan.json                    the PlanSummary

A plan replaces the outputs a previous plan left in ``OUT`` (a nightly job plans into the same
folder): the new folders are written aside and swapped in, ``plan.json`` last.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import finish_atomic, temp_path
from ..config import Config
from ..plan import outcomes_of
from . import state as states
from .columns import (
    REJECT_SCHEMA,
    change_rows,
    change_schema,
    change_set_info,
    check_plan_config,
    event_counts,
    reject_rows,
    text_columns,
)
from .delivered import delivered, last_per_identity
from .select import by_last_for, select_changes
from .summary import CommitSummary, PlanSummary, plan_summary

if TYPE_CHECKING:
    from ..report import RunSummary

__all__ = [
    "CHANGES",
    "REJECTS",
    "as_config",
    "checked_delivery",
    "commit_table",
    "lookup_state",
    "merge_state",
    "plan_table",
    "replace_folder",
]

#: the change set's and the rejects' folders in a plan's output folder
CHANGES = "changes"
REJECTS = "rejects"


def as_config(config: Config | str | os.PathLike[str] | Mapping[str, Any]) -> Config:
    """A ``Config``, a config dict or a YAML path -> the validated ``Config``."""
    if isinstance(config, Config):
        return config
    from ..job import load_job, parse_job

    if isinstance(config, Mapping):
        return parse_job(dict(config), "<config>", None)
    return load_job(os.fspath(config))


def lookup_state(identity_hash: np.ndarray, state: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per identity hash, the state's body hash and whether the state holds it (``state``:
    sorted by ``identity_hash`` as ``read_state`` gives a state ``commit`` wrote; a state
    made otherwise, its files or rows in another order, is sorted here first, else a binary
    search would miss identities it holds and send them again)."""
    keys = state.column("identity_hash").to_numpy()
    bodies = state.column("body_hash").to_numpy()
    if len(keys) > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
        perm = np.argsort(keys, kind="stable")
        keys, bodies = keys[perm], bodies[perm]
    ids = np.asarray(identity_hash, dtype=np.int64)
    if not len(keys):
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    found = keys[at] == ids
    return np.where(found, bodies[at], 0), found


def merge_state(old: pa.Table, new: pa.Table) -> pa.Table:
    """``old`` with ``new``'s body hashes (both ``identity_hash``, ``body_hash``): ``new``
    wins; sorted by ``identity_hash``."""
    ids = np.concatenate(
        [old.column("identity_hash").to_numpy(), new.column("identity_hash").to_numpy()]
    )
    bodies = np.concatenate(
        [old.column("body_hash").to_numpy(), new.column("body_hash").to_numpy()]
    )
    if not len(ids):
        return states.STATE_SCHEMA.empty_table()
    table = pa.table(
        {
            "dm_source": pa.repeat(pa.scalar("", pa.string()), len(ids)),
            "dm_row": pa.array(np.arange(len(ids), dtype=np.int64)),
            "dm_identity_hash": pa.array(ids, pa.int64()),
            "dm_body_hash": pa.array(bodies, pa.int64()),
        }
    )
    return last_per_identity(table)


def checked_delivery(
    results: RunSummary | str | os.PathLike[str], state: str | os.PathLike[str]
) -> tuple[pa.Table, str, str]:
    """What a run of a change set delivered (``delivered(results)``), with the job and kind
    its change set was planned for, once ``state`` is checked to be that job's state table
    (every engine's commit starts here)."""
    got = delivered(results)
    info = change_set_info(got.schema) or {}
    job, kind = str(info.get("job")), str(info.get("kind"))
    states.check_state(state, job, kind)
    return got, job, kind


def replace_folder(final: Path, write: Any) -> None:
    """Write a folder aside (``write(folder)``), then swap it in for ``final``."""
    aside = final.with_name(f".{final.name}-{secrets.token_hex(4)}")
    aside.mkdir(parents=True)
    try:
        write(aside)
        old = final.with_name(f".{final.name}-old-{secrets.token_hex(4)}")
        if final.exists():
            os.replace(final, old)
        os.replace(aside, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(aside, ignore_errors=True)
        raise


def _write_parquet(folder: Path, table: pa.Table) -> None:
    path = folder / "part-00000.parquet"
    tmp = temp_path(path)
    # no dictionaries: the columns are mostly distinct (phones, bodies): faster and smaller
    pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
    finish_atomic(tmp, path)


def _batches(data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]) -> Iterable[Any]:
    if isinstance(data, pa.Table):
        return data.to_batches()
    if isinstance(data, pa.RecordBatch):
        return [data]
    return data


def plan_table(
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    table: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
    *,
    state: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    source: str = "<table>",
) -> PlanSummary:
    """Plan ``table`` (a pyarrow Table or RecordBatches, the source columns named as in the
    config's ``from``) in one process: map and check every row (``outcomes_of``; rows are
    ``source`` 1, 2, ...), pick the new and changed valid rows against the state table
    ``state`` (``select_changes``; None or a folder without a version: every identity is
    new) and write ``OUT/changes/``, ``OUT/rejects/`` and ``OUT/plan.json``. Returns the
    summary. ``ConfigError`` before any work for a source column named ``dm_...`` or a state
    of another job or kind."""
    cfg = as_config(config)
    check_plan_config(cfg, out)
    job, kind = cfg.job_name, cfg.job.kind
    states.check_state(state, job, kind)
    version = states.current(state) if state is not None else None
    candidates: list[pa.Table] = []
    rejects: list[pa.Table] = []
    rows = 0
    for batch in _batches(table):
        outcomes = outcomes_of(cfg, batch, source=source, first_row=rows)
        rows += batch.num_rows
        candidates.append(change_rows(outcomes, text_columns(cfg, batch), cfg))
        rejects.append(reject_rows(outcomes))
    schema = change_schema(cfg)
    valid_rows = pa.concat_tables(candidates) if candidates else schema.empty_table()
    ids = valid_rows.column("dm_identity_hash").to_numpy()
    known = states.read_state(state) if version is not None else states.STATE_SCHEMA.empty_table()
    state_hash, in_state = lookup_state(ids, known)
    chosen = select_changes(
        ids,
        np.arange(len(ids), dtype=np.int64),
        valid_rows.column("dm_body_hash").to_numpy(),
        state_hash,
        in_state,
        by_last_for(kind),
    )
    changes = valid_rows.filter(pa.array(chosen)).replace_schema_metadata(schema.metadata)
    rejected = pa.concat_tables(rejects) if rejects else REJECT_SCHEMA.empty_table()
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    replace_folder(target / CHANGES, lambda d: _write_parquet(d, changes))
    replace_folder(target / REJECTS, lambda d: _write_parquet(d, rejected))
    summary = plan_summary(
        cfg,
        rows=rows,
        valid=valid_rows.num_rows,
        unchanged=valid_rows.num_rows - changes.num_rows,
        groups=event_counts(changes),
        identities_to_send=len(pc.unique(changes.column("dm_identity_hash"))),
        state_version=version.name if version is not None else None,
        out=target,
    )
    summary.write(target)
    return summary


@states.state_locked  # one commit at a time per state table
def commit_table(
    results: RunSummary | str | os.PathLike[str], state: str | os.PathLike[str]
) -> CommitSummary:
    """Merge what a ``dmimport run`` of a change set delivered (``delivered(results)``: its
    ``ok`` rows, and those a resumed run skipped as delivered) into the state table ``state``
    in one process: a new version holding the current one's hashes with the delivered ones
    over them, made current, then the versions before the previous one removed. Reads the
    whole state: for small states."""
    got, job, kind = checked_delivery(results, state)
    before = states.current(state)
    merged = merge_state(states.read_state(state), got)
    version = states.new_version(state, job, kind)
    states.write_state(version, merged)
    states.publish(state, version)
    states.prune(state)
    return CommitSummary(
        delivered=got.num_rows,
        state_rows=merged.num_rows,
        version=version.name,
        previous=before.name if before is not None else None,
    )
