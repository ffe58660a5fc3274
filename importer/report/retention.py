"""A job's report folders over time: the temporary files a dead run left, and old folders.

Every run writes ``<report root>/<job>-<run id>/`` (the report root is ``report.dir``, or
``--report-dir``). Two things keep that from growing or littering:

- ``remove_dead_temp_files``: a run killed mid-way (SIGKILL, OOM, a reboot) leaves its report
  files under their temporary names (``.results.csv.tmp``: see ``importer.atomic``). The next
  run of the job removes them, in the folders of runs the ledger knows have ended (killed,
  aborted, ...): under the job's lock, so never a live run's.
- ``prune_run_folders``: after a run, the job's folders beyond the newest ``report.keep_runs``
  are removed, oldest first; never the current run's, never one of a run still running or
  still to be resumed (the caller names them), and a folder the ledger does not know (a
  ``validate`` or ``--debug`` run) only once it has ``summary.json`` (it finished) or nothing
  in it changed for ``STALE_S`` (it is dead).

Only folders named exactly ``<job>-<run id>`` are touched, and only the files in them: a folder
holding anything else (a sub-folder) is left as it is, with a warning. The ledger is not
here: the caller passes what it says.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger("importer")

__all__ = ["STALE_S", "job_run_folders", "prune_run_folders", "remove_dead_temp_files"]

#: a run id: ``20261206T020000-3fa2c1`` (UTC start time, then 6 random hex digits)
_RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")
#: a folder the ledger does not know and without ``summary.json`` is taken as a live run's
#: until nothing in it changed for this long (a live run writes its results all along)
STALE_S = 24 * 3600.0


def job_run_folders(root: Path, job: str) -> dict[str, Path]:
    """The job's run folders under ``root``, by run id, oldest first: by the start time in
    their run id (to the second), then by when the folder last changed."""
    found: dict[str, tuple[tuple[str, int], Path]] = {}
    prefix = f"{job}-"
    try:
        entries = list(os.scandir(root))
    except OSError:
        return {}
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not _RUN_ID.fullmatch(name[len(prefix) :]):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            changed = entry.stat(follow_symlinks=False).st_mtime_ns
        except OSError:
            continue
        run_id = name[len(prefix) :]
        found[run_id] = ((run_id[:15], changed), Path(entry.path))
    return {run_id: path for run_id, (_, path) in sorted(found.items(), key=lambda i: i[1][0])}


def remove_dead_temp_files(root: Path, job: str, ended: Collection[str]) -> list[Path]:
    """Remove the temporary report files (``.<name>.tmp``) in the folders of the job's runs
    in ``ended`` (runs the ledger knows are over); the files removed."""
    removed: list[Path] = []
    for run_id, folder in job_run_folders(root, job).items():
        if run_id not in ended:
            continue
        for path in _files(folder):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                try:
                    path.unlink()
                except OSError:
                    continue
                removed.append(path)
    return removed


def prune_run_folders(
    root: Path,
    job: str,
    keep: int,
    *,
    current: str,
    protect: Collection[str] = (),
    ended: Collection[str] = (),
    now: float | None = None,
) -> list[Path]:
    """Remove the job's run folders under ``root`` beyond the newest ``keep`` (0: none
    removed), oldest first, except ``current``'s and ``protect``'s (running, or to be
    resumed). A folder of a run in ``ended`` (the ledger's word) goes; another only when it
    holds ``summary.json`` or nothing in it changed for ``STALE_S``. The folders removed."""
    if keep <= 0:
        return []
    folders = job_run_folders(root, job)
    old = list(folders.items())[: max(0, len(folders) - keep)]
    at = time.time() if now is None else now
    removed: list[Path] = []
    for run_id, folder in old:
        if run_id == current or run_id in protect:
            continue
        if run_id not in ended and not _finished_or_stale(folder, at):
            continue
        if _remove_folder(folder):
            removed.append(folder)
    return removed


def _files(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _finished_or_stale(folder: Path, now: float) -> bool:
    if (folder / "summary.json").is_file():
        return True
    try:
        newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in _files(folder))])
    except OSError:
        return False
    return now - newest > STALE_S


def _remove_folder(folder: Path) -> bool:
    """Remove ``folder``'s files, then the folder; False (and a warning) when it holds
    anything else, or cannot be removed."""
    try:
        if any(e.is_dir(follow_symlinks=False) for e in os.scandir(folder)):
            log.warning("%s: not removed (report.keep_runs): it holds a folder", folder)
            return False
        for path in _files(folder):
            path.unlink()
        folder.rmdir()
    except OSError as exc:
        log.warning("%s: not removed (report.keep_runs): %s", folder, exc.strerror or exc)
        return False
    return True
