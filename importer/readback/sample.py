"""Which rows a verify looks up, and what the run sent for them.

- ``run_folder``: the run's report folder (``<report dir>/<job>-<run id>``) and its
  ``summary.json``; a run that sent nothing (``--dry-run``, debug mode) is refused.
- ``pick``: from the run's results file, the rows reported ``ok``, the last one of each
  customer only (a later row of the same customer overwrites the earlier one's values, so only
  the last can be compared), then ``n`` of them spread evenly over the run's rows in file order
  (deterministic: the same run gives the same sample).
- ``sent_values``: what was sent for those rows, by mapping them again from the input files,
  found by their lines, with the run's own config. The run records no values (the ledger
  keeps hashes only, the results file the identity only), and keeping every value sent would
  put all the customer data in the report folder; re-reading is exact as long as the file is
  the one the run read, which its recorded size and SHA-256 prove (else ``UsageError``: the
  lines would be other rows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..config import Config
from ..errors import UsageError
from ..load import iter_batches, open_source
from ..map import Mapper
from ..report import RESULT_SUFFIXES, changed_since_run, read_results
from ..report.results import report_encoding, unprotect

__all__ = ["RunFolder", "SampleRow", "pick", "run_folder", "sent_values"]


@dataclass(frozen=True)
class SampleRow:
    """A row the run reported ``ok``: where it is and whose it is."""

    file: str
    line: int
    identity: str


@dataclass(frozen=True)
class RunFolder:
    """A run's report folder, its results file and what its ``summary.json`` says."""

    path: Path
    results: Path
    summary: dict[str, Any]

    @property
    def files(self) -> list[dict[str, Any]]:
        files = self.summary.get("files")
        return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def run_folder(report_root: Path, job: str, run_id: str) -> RunFolder:
    """The report folder of run ``run_id`` of ``job``; ``UsageError`` when there is none, it
    has no results file, or the run sent nothing."""
    path = report_root / f"{job}-{run_id}"
    if not path.is_dir():
        raise UsageError(
            f"no report folder for run {run_id} of job {job}: {path} does not exist "
            "(`dmimport runs CONFIG` lists the job's runs; --report-dir if its reports went "
            "elsewhere)"
        )
    results = next(
        (path / f"results{s}" for s in RESULT_SUFFIXES if (path / f"results{s}").is_file()), None
    )
    if results is None:
        raise UsageError(f"run {run_id} has no results file in {path}: nothing to verify")
    try:
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    mode = summary.get("mode")
    if mode not in (None, "send"):
        raise UsageError(
            f"run {run_id} was a {mode} run: it stored nothing, so there is nothing to verify"
        )
    return RunFolder(path, results, summary)


def _ok_rows(path: Path, encoding: str | None) -> pa.Table:
    """The ``ok`` lines of a results file: ``file``, ``line``, ``identity`` and their order
    (``at``). A ``results.csv`` is read by Arrow (a run of millions of rows takes seconds)."""
    if path.suffix != ".csv":
        seen = [r for r in read_results(path, encoding) if r.status == "ok"]
        return pa.table(
            {
                "file": [r.file for r in seen],
                "line": pa.array([r.line for r in seen], pa.int64()),
                "identity": [r.identity for r in seen],
                "at": pa.array(range(len(seen)), pa.int64()),
            }
        )
    names = ["file", "line", "identity", "status"]
    text = report_encoding(path, encoding)
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding="utf8" if text == "utf-8-sig" else text),
        convert_options=pacsv.ConvertOptions(
            include_columns=names,
            column_types={n: pa.string() for n in ("file", "identity", "status")}
            | {"line": pa.int64()},
            strings_can_be_null=False,
        ),
    )
    table = table.append_column("at", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return table.filter(pc.equal(table["status"], "ok")).drop_columns(["status"])


def _last_of_each_customer(ok: pa.Table) -> pa.Array:
    """Which ``ok`` rows no later ``ok`` row shares a primary-key value with. The platform
    merges a record into the customer that has ANY of its primary-key values, so
    ``phone=1;email=a`` and a later ``phone=1;email=b`` end as one customer holding the later
    row's values, though their identities differ: only the later one can be compared."""
    at = ok["at"].to_numpy()
    if not len(at):
        return pa.array([], pa.bool_())
    parts = pc.split_pattern(ok["identity"].combine_chunks(), ";")
    # each value's code, in row order (a row's values are contiguous: offsets)
    codes = pc.dictionary_encode(pc.list_flatten(parts)).indices.to_numpy(zero_copy_only=False)
    owners = pc.list_parent_indices(parts).to_numpy()
    latest = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(latest, codes, at[owners])
    # per row, the latest row that shares one of its values: itself when it is the last
    starts = parts.offsets.to_numpy()[:-1]
    return pa.array(np.maximum.reduceat(latest[codes], starts) == at)


def pick(folder: RunFolder, n: int, encoding: str | None = None) -> tuple[list[SampleRow], int]:
    """``(sample, candidates)``: ``n`` rows spread over the run's last ``ok`` row of each
    customer (``candidates`` of them), in file order."""
    ok = _ok_rows(folder.results, encoding)
    rows = ok.filter(_last_of_each_customer(ok)).sort_by("at")
    total = rows.num_rows
    if n < total:
        rows = rows.take(pa.array([int((k + 0.5) * total / n) for k in range(n)], pa.int64()))
    picked = [
        SampleRow(unprotect(f), int(line), unprotect(i))
        for f, line, i in zip(
            rows["file"].to_pylist(),
            rows["line"].to_pylist(),
            rows["identity"].to_pylist(),
            strict=True,
        )
    ]
    return picked, total


def _check_unchanged(folder: RunFolder, path: str) -> None:
    if changed_since_run(path, folder.files):
        raise UsageError(
            f"{path} changed since the run read it (its size or contents differ): its lines "
            "are no longer the rows the run sent, so nothing can be compared. Verify right "
            "after the run (verify.sample in the config does), or put back the file it read"
        )


def sent_values(
    config: Config, folder: RunFolder, rows: Sequence[SampleRow]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The properties the run sent for each of ``rows``, by (file, line), mapped again from
    the input files. A row that no longer maps (a changed file) is left out."""
    wanted: dict[str, set[int]] = {}
    for r in rows:
        wanted.setdefault(r.file, set()).add(r.line)
    mapper = Mapper(config)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for file, lines in wanted.items():
        _check_unchanged(folder, file)
        source = open_source(Path(file), config.input)
        batches = iter_batches(source, config.input, config.source_columns())
        left = set(lines)
        try:
            for batch in batches:
                hit = np.isin(batch.lines, np.fromiter(left, dtype=np.int64, count=len(left)))
                if hit.any():
                    mapped = mapper.map(batch, build_bodies=True)
                    assert mapped.items is not None
                    for i in np.flatnonzero(hit & mapped.ok).tolist():
                        line = int(batch.lines[i])
                        item = mapped.items[i]
                        if item is not None:
                            out[(file, line)] = json.loads(bytes(item))
                            left.discard(line)
                if not left:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    return out
