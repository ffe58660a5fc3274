"""The lake-side plan, engine-neutral (issue 15): what a Spark or Dask plan writes and reads.

- ``PLAN_COLUMNS``, ``change_rows``, ``reject_rows``, ``change_schema``: the change set's and
  the rejects' columns (``importer.lake.columns``);
- ``select_changes``: the rule that picks the new and changed rows (``importer.lake.select``);
- ``importer.lake.state``: the state table's versions (``current``, ``new_version``,
  ``publish``, ``prune``, ``read_state``, ``check_state``);
- ``PlanSummary`` (``OUT/plan.json``), ``CommitSummary``, ``plan_summary``;
- ``delivered``: what a ``dmimport run`` of a change set delivered; ``PLANNED_ELSEWHERE``:
  the reason a run gives a change set row whose body is not the plan's;
- ``plan_table`` / ``commit_table``: the single-process plan and commit, the reference the
  engines are tested against.

Never imports pyspark or dask.
"""

from __future__ import annotations

from .columns import (
    CHANGE_SET_KEY,
    PLAN_COLUMNS,
    REJECT_COLUMNS,
    REJECT_SCHEMA,
    change_rows,
    change_schema,
    change_set_info,
    change_set_metadata,
    check_plan_config,
    event_counts,
    reject_rows,
    text_columns,
)
from .delivered import delivered, last_per_identity
from .planned import PLANNED_ELSEWHERE
from .select import by_last_for, select_changes
from .summary import PLAN_FILE, CommitSummary, PlanSummary, plan_summary, quota_left_today
from .table import commit_table, plan_table

__all__ = [
    "CHANGE_SET_KEY",
    "PLANNED_ELSEWHERE",
    "PLAN_COLUMNS",
    "PLAN_FILE",
    "REJECT_COLUMNS",
    "REJECT_SCHEMA",
    "CommitSummary",
    "PlanSummary",
    "by_last_for",
    "change_rows",
    "change_schema",
    "change_set_info",
    "change_set_metadata",
    "check_plan_config",
    "commit_table",
    "delivered",
    "event_counts",
    "last_per_identity",
    "plan_summary",
    "plan_table",
    "quota_left_today",
    "reject_rows",
    "select_changes",
    "text_columns",
]
