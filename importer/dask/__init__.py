"""``importer.dask``: the lake-side plan and commit on a Dask cluster (issue 15).

``plan(config, data, state=STATE, out=OUT, client=client)`` maps and checks every row of a
Parquet lake (a folder, a file, or a list of them; or a Dask DataFrame that already has
``dm_source``/``dm_row`` columns) on the cluster's workers with ``importer.outcomes_of``,
compares each valid row with the state table and writes the change set (``OUT/changes/``) and
the rejects (``OUT/rejects/``) from the workers, then ``OUT/plan.json``. Nothing that grows
with the rows comes back to the client: only per-partition counts.

How (three steps, two Dask computations; without a state, step 1 writes the change set
itself, and step 2 only counts the distinct identities):

1. one task per partition (a Parquet row-group range of one file, in file-name order; or one
   partition of the given DataFrame) reads the job's source columns, maps them, writes the
   partition's rejects (already in (dm_source, dm_row) order: final) and its valid rows
   (staged, next to the output) and returns its counts;
2. the valid rows' keys (identity hash, body hash, rank) meet the state's current version:
   when its files hold disjoint identity-hash ranges (as ``commit`` and Spark write them) the
   keys alone are shuffled by range and each range's task reads its state file; otherwise
   keys and state rows are shuffled together by identity hash. Per shuffle partition (every
   row of an identity in it) ``importer.lake.select_changes`` picks the new and changed rows;
3. the picked ranks are shuffled back to their partitions, and each partition's task takes
   its picked rows from the staged file and writes the change set's part file. Parts are
   named by partition number, so reading them in name order gives (dm_source, dm_row) order,
   without a global sort of the bodies.

Dask has no commit protocol: everything is written under hidden folders of ``OUT``
(``OUT/.dask-<token>/``) with deterministic file names (a retried task rewrites its own files),
and renamed to ``OUT/changes``/``OUT/rejects`` only once both computations succeeded; a failed
plan leaves the previous outputs as they were and removes its own. Every task key holds a
per-call token, so a long-lived ``Client`` never returns the outcomes of an earlier plan of
files that changed since.

``commit(results, state, client=client)`` merges what a ``dmimport run`` of the change set
delivered (``importer.lake.delivered``) into a new state version in Dask: the current files
and the delivered hashes are range-partitioned by identity hash, each range keeps the
delivered hash where there is one (anti-join + union), sorted, one zstd file per range; then
``_CURRENT`` is swapped and old versions are pruned.

Only this package imports dask (``importer.dask.engine``); ``import importer`` never does.
"""

from __future__ import annotations

from .engine import PARTITION_ROWS, STATE_FILE_ROWS, commit, plan

__all__ = ["PARTITION_ROWS", "STATE_FILE_ROWS", "commit", "plan"]
