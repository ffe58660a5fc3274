"""Refuse incomplete exports before anything is sent: ``check_inputs``.

Four gates, checked on each input file after its header is read and before any row is read
for sending (docs/guards.md, "Incomplete exports"):

1. ``input.ready`` (``manifest`` or ``{stable_for_s: N}``; ``none`` by default): the export
   said it is complete (``manifest``), or the file stopped changing (``stable``);
2. whatever the setting, a last record cut off: no final line break and a short record
   (``tail``);
3. ``input.min_size_ratio``: a file much smaller than the job's last input, by the ledger's
   fingerprints of the job's last run that was not refused (a first run is not held);
4. ``input.min_rows``: fewer data rows (a header-only file has 0).

A file that fails one is named in an ``InputIncomplete`` (exit code 7) with what was
expected and what was found; the other files are still checked, so one refusal names them
all. In-memory sources (``importer.source``) are not files: none of the gates applies to them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import InputIncomplete
from ..ledger import Ledger, ledger_path
from ..load import Source, StableFor
from .manifest import manifest_path, manifest_problem
from .refusal import light_fingerprints, record_refusal
from .stable import unstable
from .tail import count_rows, cut_record

__all__ = [
    "InputIncomplete",
    "check_inputs",
    "light_fingerprints",
    "manifest_path",
    "previous_input",
    "record_refusal",
    "refuse_incomplete",
]

#: the statuses of a run whose files stand for the job's last input
_NOT_INPUT = ("refused", "running")


def previous_input(config: Config) -> list[dict[str, Any]] | None:
    """The file fingerprints (``path``, ``size``) of the job's last run that read its files
    (any status but ``refused`` and ``running``), from its ledger; None when
    ``input.min_size_ratio`` is not set, the job keeps no ledger, or no run recorded files
    yet (a first run)."""
    if config.input.min_size_ratio is None or not config.state.enabled:
        return None
    path = ledger_path(config)
    if not path.is_file():
        return None
    with Ledger(path) as ledger:
        for record in ledger.runs(config.job_name, limit=1000):
            if record.status not in _NOT_INPUT and record.files:
                return record.files
    return None


def check_inputs(
    config: Config,
    sources: Sequence[Source],
    *,
    previous: list[dict[str, Any]] | None = None,
    wait: bool = True,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Raise ``InputIncomplete`` naming every file of ``sources`` that looks incomplete.
    ``previous``: the job's last input (``previous_input``); ``wait``: ``stable_for_s``
    waits for a changing file (false: judged at once, for ``preview``)."""
    options = config.input
    files = [s for s in sources if s.frame is None]
    problems: dict[Path, str] = {}
    if isinstance(options.ready, StableFor):
        kwargs: dict[str, Any] = {"wait": wait}
        if sleep is not None:
            kwargs["sleep"] = sleep
        problems.update(unstable([s.path for s in files], options.ready.stable_for_s, **kwargs))
    sizes = _size_problems(files, previous, options.min_size_ratio)
    for source in files:
        if source.path in problems:
            continue
        rows = functools.cache(functools.partial(count_rows, source, options))
        problem = None
        if options.ready == "manifest":
            problem = manifest_problem(source.path, rows)
        problem = problem or cut_record(source, options)
        problem = problem or sizes.get(source.path)
        if problem is None and options.min_rows is not None and rows() < options.min_rows:
            problem = _rows_problem(rows(), options.min_rows)
        if problem is not None:
            problems[source.path] = problem
    if problems:
        raise InputIncomplete([f"{path}: {why}" for path, why in problems.items()])


def refuse_incomplete(
    config: Config,
    sources: list[Source],
    *,
    run_id: str,
    run_dir: Path,
    mode: str,
    started: datetime,
    t0: float,
    config_sha: str,
    config_source: str = "",
    use_ledger: bool = False,
) -> None:
    """``check_inputs`` for a run (``importer.pipeline.Run``): an incomplete input raises
    ``InputIncomplete`` (exit 7) carrying the refused run's summary, written by
    ``record_refusal``."""
    try:
        check_inputs(config, sources, previous=previous_input(config))
    except InputIncomplete as exc:
        exc.summary = record_refusal(
            config, exc, run_id=run_id, run_dir=run_dir, mode=mode, started=started, t0=t0,
            files=light_fingerprints(sources), config_sha=config_sha,
            config_source=config_source, use_ledger=use_ledger,
        )  # fmt: skip
        raise


def _rows_problem(rows: int, minimum: int) -> str:
    what = "0 rows (a header only)" if rows == 0 else f"{rows:,} rows"
    return (
        f"{what}, fewer than input.min_rows {minimum:,}: the export looks incomplete; "
        "lower input.min_rows if the file is right"
    )


def _size_problems(
    files: Sequence[Source], previous: list[dict[str, Any]] | None, ratio: float | None
) -> dict[Path, str]:
    """``input.min_size_ratio``: each file against the last run's file of the same path;
    else, when both runs read one file, against that one."""
    if ratio is None or not previous or not files:
        return {}
    before = {str(f.get("path")): int(f.get("size") or 0) for f in previous}
    out: dict[Path, str] = {}
    for source in files:
        size = source.path.stat().st_size
        was = before.get(str(source.path.resolve()))
        if was is None and len(files) == 1 and len(before) == 1:
            was = next(iter(before.values()))
        if not was or size >= ratio * was:
            continue
        share = 100 * size / was
        out[source.path] = (
            f"{size:,} bytes, {share:.0f} % of the last run's {was:,} bytes "
            f"(input.min_size_ratio {ratio:g}): the export looks incomplete; run again once it "
            "is complete, or lower input.min_size_ratio if the file really shrank"
        )
    return out
