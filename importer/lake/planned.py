"""Sending a change set: each row's body must still be the one the plan made (issue 15).

``dmimport run CONFIG OUT/changes/`` reads a change set like any Parquet input and maps its
source columns again (every rule of a run still holds: per-customer order, ``job.duplicates``,
resume, quota, batching). Then each valid row's body hash is compared with the plan's
``dm_body_hash``: a row whose body differs (the change set was planned with another config, or
its source columns were edited) is rejected with ``PLANNED_ELSEWHERE`` (no errcode) and not
sent: its hash would not be what a commit records for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Config
from ..errors import ConfigProblem
from ..ledger import as_keys
from ..load import Source
from ..map import Mapped
from .columns import change_set_info

__all__ = ["PLANNED_ELSEWHERE", "PlannedHashes", "foreign_change_set"]

#: the reason of a change set row whose body is not the plan's
PLANNED_ELSEWHERE = (
    "planned with another config: the body differs from the plan's (plan again with this config)"
)


def _change_set(source: Source) -> tuple[pa.Schema, dict[str, Any]] | None:
    """The Parquet schema and change set metadata of ``source`` when it is a change set file
    (its schema metadata says so), else None (also for a file that cannot be read: the loader
    reports it)."""
    if source.frame is not None or source.format != "parquet" or source.compressed:
        return None
    try:
        schema = pq.read_schema(source.path)
    except (OSError, pa.ArrowException):
        return None
    info = change_set_info(schema)
    return (schema, info) if info is not None else None


def foreign_change_set(source: Source, config: Config) -> list[ConfigProblem]:
    """The problem of ``source`` when it is a change set planned for another job or kind than
    ``config``'s (its ``dmimport.change_set`` metadata says which): a run of it would tag
    what it delivers with this job while a commit records it in the other job's state, so
    the run refuses it before anything is sent. No problem for any other source."""
    found = _change_set(source)
    if found is None:
        return []
    info = found[1]
    theirs = (info.get("job"), info.get("kind"))
    ours = (config.job_name, config.job.kind)
    if theirs == ours:
        return []
    problem = ConfigProblem(
        str(source.path),
        f"a change set planned for job {theirs[0]!r} (kind {theirs[1]!r}), not for this "
        f"config's job {ours[0]!r} (kind {ours[1]!r})",
        "run it with the config it was planned with, or plan again with this config",
    )
    return [problem]


class PlannedHashes:
    """The ``dm_body_hash`` of every row of one change set file."""

    __slots__ = ("hashes",)

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = hashes

    @classmethod
    def of(cls, source: Source) -> PlannedHashes | None:
        """The planned hashes of ``source`` when it is a change set file (its schema
        metadata says so), else None."""
        found = _change_set(source)
        if found is None:
            return None
        schema = found[0]
        if "dm_body_hash" not in schema.names or not pa.types.is_integer(
            schema.field("dm_body_hash").type
        ):  # an edited change set: no row's body can be checked, none is sent
            return cls(np.zeros(0, dtype=np.int64))
        column = pq.read_table(source.path, columns=["dm_body_hash"]).column(0)
        hashes = column.fill_null(0).to_numpy().astype(np.int64, copy=False)
        return cls(hashes)

    def differs(self, mapped: Mapped) -> np.ndarray:
        """Per row of ``mapped``: valid, but its body hash is not the plan's. All false when
        ``mapped`` has no hashes (built without bodies: nothing of it is sent)."""
        if mapped.properties_hash is None or mapped.n == 0:
            return np.zeros(mapped.n, dtype=bool)
        if not len(self.hashes):  # no hash could be read: every valid row differs
            return mapped.ok.copy()
        got = as_keys(mapped.properties_hash.values())
        at = np.asarray(mapped.lines, dtype=np.int64) - 1
        inside = (at >= 0) & (at < len(self.hashes))
        planned = self.hashes[np.where(inside, at, 0)]
        return mapped.ok & (~inside | (got != planned))
