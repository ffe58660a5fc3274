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
from pathlib import Path
from typing import Any, NoReturn

from ..config import Config
from ..errors import InputIncomplete, TruncatedInput
from ..ledger import Ledger, ledger_path
from ..load import Source, StableFor
from ..outputs import RunStart
from .manifest import manifest_path, manifest_problem, manifest_rows_problem
from .refusal import light_fingerprints, record_refusal
from .stable import unstable
from .tail import count_rows, cut_record

__all__ = [
    "InputIncomplete",
    "check_inputs",
    "content_problems",
    "light_fingerprints",
    "manifest_path",
    "previous_input",
    "ready_problems",
    "record_refusal",
    "refuse_incomplete",
    "refuse_truncated",
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


def ready_problems(
    config: Config,
    paths: Sequence[Path],
    *,
    wait: bool = True,
    sleep: Callable[[float], None] | None = None,
) -> dict[Path, str]:
    """``input.ready`` on the files at ``paths``, before they are opened (a file still being
    written may not even have its header yet): ``stable_for_s`` waits, ``manifest`` checks
    the marker or the manifest's ``bytes`` and ``sha256`` (its ``rows``: ``content_problems``).
    Each file not ready, with why."""
    ready = config.input.ready
    if isinstance(ready, StableFor):
        kwargs: dict[str, Any] = {"wait": wait} if sleep is None else {"wait": wait, "sleep": sleep}
        return unstable(paths, ready.stable_for_s, **kwargs)
    problems: dict[Path, str] = {}
    if ready == "manifest":
        for path in paths:
            if (problem := manifest_problem(path)) is not None:
                problems[path] = problem
    return problems


def content_problems(
    config: Config, sources: Sequence[Source], *, previous: list[dict[str, Any]] | None = None
) -> dict[Path, str]:
    """The gates on the opened files of ``sources``: a manifest's ``rows``, a cut last
    record, ``min_size_ratio`` against ``previous`` (``previous_input``), ``min_rows``. Each
    file that fails one, with the first it failed."""
    options = config.input
    files = [s for s in sources if s.frame is None]
    sizes = _size_problems(files, previous, options.min_size_ratio)
    problems: dict[Path, str] = {}
    for source in files:
        rows = functools.cache(functools.partial(count_rows, source, options))
        problem = None
        if options.ready == "manifest":
            problem = manifest_rows_problem(source.path, rows)
        problem = problem or cut_record(source, options)
        problem = problem or sizes.get(source.path)
        if problem is None and options.min_rows is not None:
            # counted only as far as min_rows, unless the manifest's rows counted them all
            counted = rows() if rows.cache_info().currsize else None
            if counted is None:
                counted = count_rows(source, options, at_least=options.min_rows)
            if counted < options.min_rows:
                problem = _rows_problem(counted, options.min_rows)
        if problem is not None:
            problems[source.path] = problem
    return problems


def check_inputs(
    config: Config,
    sources: Sequence[Source],
    *,
    previous: list[dict[str, Any]] | None = None,
    wait: bool = True,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Raise ``InputIncomplete`` naming every file of ``sources`` that looks incomplete (both
    stages: ``ready_problems``, then ``content_problems`` on the files that passed it).
    ``previous``: the job's last input (``previous_input``); ``wait``: ``stable_for_s``
    waits for a changing file (false: judged at once, as ``preview`` does)."""
    files = [s for s in sources if s.frame is None]
    problems = ready_problems(config, [s.path for s in files], wait=wait, sleep=sleep)
    rest = [s for s in files if s.path not in problems]
    problems.update(content_problems(config, rest, previous=previous))
    if problems:
        raise InputIncomplete([f"{path}: {why}" for path, why in problems.items()])


def refuse_incomplete(
    config: Config,
    inputs: Sequence[Path] | Sequence[Source],
    start: RunStart,
    *,
    config_source: str = "",
    use_ledger: bool = False,
    metrics_file: Path | None = None,
) -> None:
    """The gates for a run (``importer.pipeline``): on ``inputs`` given as paths, before they
    are opened, ``ready_problems``; given as opened sources, ``content_problems``. A file that
    fails raises ``InputIncomplete`` (exit 7) carrying the refused run's summary, written by
    ``record_refusal`` (``start``: the run's id, folder, mode and config hash; ``metrics_file``:
    ``--metrics-file``, updated with exit code 7)."""
    paths = [i for i in inputs if isinstance(i, Path)]
    sources = [i for i in inputs if isinstance(i, Source) and i.frame is None]
    if paths:
        problems = ready_problems(config, paths)
    else:
        problems = content_problems(config, sources, previous=previous_input(config))
    if not problems:
        return
    raise _refusal(
        config, [f"{path}: {why}" for path, why in problems.items()],
        paths or [s.path for s in sources], start,
        config_source=config_source, use_ledger=use_ledger, metrics_file=metrics_file,
    )  # fmt: skip


def refuse_truncated(
    config: Config,
    exc: TruncatedInput,
    paths: Sequence[Path],
    start: RunStart,
    *,
    config_source: str = "",
    use_ledger: bool = False,
    metrics_file: Path | None = None,
) -> NoReturn:
    """A ``.gz`` input whose compressed stream is cut off (``exc``, found when the files are
    opened): refused as incomplete, ``InputIncomplete`` (exit 7) with the refused run's
    summary, as ``refuse_incomplete`` does (``paths``: the run's files)."""
    why = (
        "it ends before the end of its gzip stream: the export looks cut off (still being "
        "written, or a copy that broke off)"
    )
    raise _refusal(
        config, [f"{exc.path}: {why}"], paths, start,
        config_source=config_source, use_ledger=use_ledger, metrics_file=metrics_file,
    ) from exc  # fmt: skip


def _refusal(
    config: Config, problems: list[str], paths: Sequence[Path], start: RunStart, **said: Any
) -> InputIncomplete:
    """``InputIncomplete`` naming ``problems``, with the refused run's summary
    (``record_refusal`` of the files at ``paths``; ``said``: its keywords)."""
    exc = InputIncomplete(problems)
    exc.summary = record_refusal(config, exc, start, files=light_fingerprints(paths), **said)
    return exc


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
    else, when both runs read one file, against that one; when either run read several
    files and none fell short alone, all of them together against the last run's."""
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
    if out or (len(files) == 1 and len(before) == 1):
        return out
    # several files (dated names, parts): together against the last run's files together
    # (a missing part, or every part renamed and smaller, is not missed)
    total, was_total = sum(s.path.stat().st_size for s in files), sum(before.values())
    if not was_total or total >= ratio * was_total:
        return out
    share = 100 * total / was_total
    said = (
        f"this run's {len(files)} file{'s' if len(files) > 1 else ''} hold {total:,} bytes in "
        f"all, {share:.0f} % of the last run's {len(before)} file"
        f"{'s' if len(before) > 1 else ''}' {was_total:,} bytes (input.min_size_ratio "
        f"{ratio:g}): the export looks incomplete; run again once it is complete, or lower "
        "input.min_size_ratio if the input really shrank"
    )
    return {source.path: said for source in files}
