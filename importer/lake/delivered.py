"""``delivered``: what a ``dmimport run`` of a change set delivered, for a commit (issue 15).

A commit merges only what the platform holds: the run's report lines with status ``ok``
whose file is a change set file, and those a resumed run ``skipped`` because the run it resumed
delivered them (or ``unchanged`` / ``skipped`` as superseded by such a row, under
``--changed-only``: the ledger says the platform holds that body): the statuses ``dmimport
retry`` counts as delivered. Their ``dm_identity_hash`` and ``dm_body_hash`` are read
from those files by row (results name a Parquet file's rows by their 1-based position); per
identity, the last ``ok`` row in (``dm_source``, ``dm_row``) order wins.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import UsageError
from .columns import CHANGE_SET_KEY, change_set_info
from .state import STATE_SCHEMA

if TYPE_CHECKING:
    from ..report import RunSummary

__all__ = ["delivered", "last_per_identity", "results_file"]

_RESULT_NAMES = ("results.csv", "results.jsonl")
#: the statuses of rows the platform holds (a resumed run's ``skipped`` rows were delivered by
#: the run it resumed; ``dmimport retry`` sends none of them)
_DELIVERED = pa.array(["ok", "skipped", "unchanged"])


def results_file(results: RunSummary | str | os.PathLike[str]) -> Path:
    """The results file of ``results``: a ``RunSummary``, a run's report folder, or a
    ``results.csv`` / ``results.jsonl`` path."""
    if not isinstance(results, str | os.PathLike):
        path = results.results_path
        if path is None:
            if results.report_dir is None:
                raise UsageError(f"run {results.run_id} wrote no results file (--dry-run?)")
            path = Path(results.report_dir)
        results = path
    path = Path(results)
    if path.is_dir():
        for name in _RESULT_NAMES:
            if (path / name).is_file():
                return path / name
        raise UsageError(f"{path}: no results.csv or results.jsonl in this folder")
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    return path


def _read_results(path: Path) -> pa.Table:
    """``file``, ``line``, ``status`` of every line of a results file (vectorised)."""
    if path.suffix == ".jsonl":
        import pyarrow.json as pajson

        schema = pa.schema([("file", pa.string()), ("line", pa.int64()), ("status", pa.string())])
        if path.stat().st_size == 0:
            return schema.empty_table()
        options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        return pajson.read_json(path, parse_options=options).select(["file", "line", "status"])
    from ..report.results import report_encoding

    encoding = report_encoding(path)
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding="utf-8" if encoding == "utf-8-sig" else encoding),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=["file", "line", "status"],
            column_types={"file": pa.string(), "line": pa.int64(), "status": pa.string()},
            strings_can_be_null=False,
        ),
    )
    first = table.schema.names[0] if table.num_columns else ""
    if first.startswith("\ufeff"):  # pragma: no cover - pyarrow strips the mark
        table = table.rename_columns([first[1:], *table.schema.names[1:]])
    # results.csv protects a cell starting like a formula with an apostrophe: take it off
    files_col = pc.replace_substring_regex(
        table.column("file"), pattern=r"^'([=+\-@\t\r])", replacement=r"\1"
    )
    return table.set_column(0, "file", files_col)


class _RunRecord:
    """What the run's ``summary.json`` (next to its results file) recorded of its inputs: its
    id, and each input file's fingerprint (size, SHA-256) by its absolute path."""

    def __init__(self, path: Path) -> None:
        self.run_id = "?"
        self.prints: dict[str, dict[str, object]] = {}
        try:
            summary = json.loads((path.parent / "summary.json").read_text(encoding="utf-8"))
            self.run_id = str(summary.get("run_id") or "?")
            self.prints = {str(f["path"]): f for f in summary["files"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    def inputs(self) -> dict[str, Path]:
        """The run's input files by the names its results may give them (relative to the
        folder the run ran in)."""
        found: dict[str, list[Path]] = {}
        for p in map(Path, self.prints):
            parts = p.parts
            for i in range(1, len(parts)):
                found.setdefault(os.path.join(*parts[i:]), []).append(p)
        return {name: ps[0] for name, ps in found.items() if len(ps) == 1}

    def changed(self, source: Path) -> bool | None:
        """Whether ``source`` differs from what the run read (size or SHA-256); None when the
        run recorded no fingerprint of it."""
        recorded = self.prints.get(str(source.resolve()))
        if recorded is None or "sha256" not in recorded:
            return None
        if source.stat().st_size != recorded.get("size"):
            return True
        with open(source, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest() != recorded["sha256"]


_DELIVERED_COLUMNS = ("dm_source", "dm_row", "dm_identity_hash", "dm_body_hash")


def _typed(schema: pa.Schema, name: str) -> bool:
    """Whether a change set file's ``schema`` has the column ``name`` with a type a commit reads."""
    if name not in schema.names:
        return False
    kind = schema.field(name).type
    if name == "dm_source":
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
    return bool(pa.types.is_int64(kind))


def last_per_identity(table: pa.Table) -> pa.Table:
    """Per ``identity_hash``, the row that comes last in (``dm_source``, ``dm_row``) order,
    as ``identity_hash``, ``body_hash`` sorted by ``identity_hash``."""
    if table.num_rows == 0:
        return STATE_SCHEMA.empty_table()
    order = table.sort_by([("dm_source", "ascending"), ("dm_row", "ascending")])
    ids = order.column("dm_identity_hash").to_numpy()
    bodies = order.column("dm_body_hash").to_numpy()
    rank = np.arange(len(ids), dtype=np.int64)
    perm = np.lexsort((rank, ids))
    ids, bodies = ids[perm], bodies[perm]
    last = np.empty(len(ids), dtype=bool)
    last[-1] = True
    np.not_equal(ids[1:], ids[:-1], out=last[:-1])
    return pa.table(
        {"identity_hash": pa.array(ids[last]), "body_hash": pa.array(bodies[last])},
        schema=STATE_SCHEMA,
    )


def delivered(results: RunSummary | str | os.PathLike[str]) -> pa.Table:
    """What a ``dmimport run`` of a change set delivered (``identity_hash``, ``body_hash``,
    one row per identity, sorted by ``identity_hash``): from the run's report (a
    ``RunSummary``, its report folder, or its ``results.csv``/``results.jsonl``), the ``ok``
    rows of change set files (and the ``skipped`` and ``unchanged`` ones: delivered by a run
    it resumed, or held by the platform as the ledger says), the last per identity in
    (``dm_source``, ``dm_row``) order.
    The table's schema metadata holds the change set's (``dmimport.change_set``: job, kind).
    A results file naming no change set file is a ``UsageError``, and so is a change set file
    that is not the one the run read (planned again since the run: its rows are not the ones
    sent): its size and SHA-256 are compared with those the run's ``summary.json`` recorded
    (when the results come without it, a change set file newer than the results is refused)."""
    path = results_file(results)
    table = _read_results(path)
    ok = table.filter(pc.is_in(table.column("status"), value_set=_DELIVERED))
    named = pc.unique(table.column("file")).to_pylist()
    parts: list[pa.Table] = []
    info: dict[str, object] | None = None
    record = _RunRecord(path)
    inputs = record.inputs()
    for name in sorted(named):
        source = Path(name)
        if not source.is_absolute() and not source.exists():
            # a name relative to the folder the run ran in: its summary has the full path
            source = inputs.get(os.path.normpath(name)) or path.parent / source
        try:
            schema = pq.read_schema(source)
        except (OSError, pa.ArrowException):
            continue
        found = change_set_info(schema)
        if found is None:
            continue
        changed = record.changed(source)
        if changed:
            raise UsageError(
                f"{source} changed since run {record.run_id} sent it (planned again?): "
                "commit before planning again, or run the new change set first"
            )
        if changed is None and source.stat().st_mtime_ns > path.stat().st_mtime_ns:
            # no summary.json recording what the run read (results copied alone): the
            # file times are all there is to go by
            raise UsageError(
                f"{source} was written after {path}: the change set was planned again since "
                "that run, so its rows are not the ones the run sent; run the new change set, "
                "then commit that run's results"
            )
        bad = [n for n in _DELIVERED_COLUMNS if not _typed(schema, n)]
        if bad:
            raise UsageError(
                f"{source} is not a change set a plan wrote: column {bad[0]} is missing or "
                "not of its type (edited by hand?); plan again, run the new change set, "
                "then commit that run's results"
            )
        if info is None:
            info = found
        lines = ok.filter(pc.equal(ok.column("file"), name)).column("line").to_numpy()
        if not len(lines):
            continue
        data = pq.read_table(
            source, columns=["dm_source", "dm_row", "dm_identity_hash", "dm_body_hash"]
        )
        if int(lines.min()) < 1 or int(lines.max()) > data.num_rows:
            raise UsageError(
                f"{path} names line {int(lines.max())} of {source}, which has "
                f"{data.num_rows:,} rows: the change set was planned again since that run, "
                "so its rows are not the ones the run sent; run the new change set, then "
                "commit that run's results"
            )
        parts.append(data.take(pa.array(lines - 1)))
    if info is None:
        raise UsageError(
            f"{path} names no change set file (a Parquet file a lake-side plan wrote in "
            "OUT/changes/): only the results of `dmimport run CONFIG OUT/changes/` can be "
            "committed to a state table"
        )
    merged = last_per_identity(pa.concat_tables(parts)) if parts else STATE_SCHEMA.empty_table()
    return merged.replace_schema_metadata({CHANGE_SET_KEY: json.dumps(info).encode()})
