"""The run's metrics for Prometheus (``--metrics-file``)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .. import exitcodes
from ..atomic import finish_atomic, temp_path
from ..errors import DiskFullError
from .files import writing
from .summary import RunSummary

_METRIC_LAST_SUCCESS = "dmimport_last_success_timestamp_seconds"


def metrics_file_problem(path: Path) -> str | None:
    """Why ``write_metrics`` could not write ``path`` at the end of a run (a folder, a place
    under a file, a folder this user cannot write), checked before anything is sent; None
    when it can. A missing folder is fine: it is created."""
    if path.is_dir():
        return "is a folder, not a file"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be created: {folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be created: {folder} is not writable by this user"
    return None


def write_metrics(path: Path, summary: RunSummary) -> None:
    """Prometheus text format for node_exporter's textfile collector, written atomically.

    The last success time survives a failed run: it is carried over from the previous file.
    """

    job = summary.job.replace("\\", "_").replace('"', "_")
    last_success = None
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(_METRIC_LAST_SUCCESS + "{"):
                with contextlib.suppress(ValueError):
                    last_success = float(line.rsplit(" ", 1)[1])
    now = time.time()
    if summary.exit_code == exitcodes.OK:
        last_success = now
    lines = [
        "# HELP dmimport_rows Rows of the last run by final status.",
        "# TYPE dmimport_rows gauge",
    ]
    for status, n in summary.counts.items():
        lines.append(f'dmimport_rows{{job="{job}",status="{status}"}} {n}')
    lines += [
        "# HELP dmimport_run_duration_seconds Duration of the last run.",
        "# TYPE dmimport_run_duration_seconds gauge",
        f'dmimport_run_duration_seconds{{job="{job}"}} {summary.duration_s:.3f}',
        "# HELP dmimport_requests Requests made by the last run (retries included).",
        "# TYPE dmimport_requests gauge",
        f'dmimport_requests{{job="{job}"}} {summary.requests}',
        "# HELP dmimport_exit_code Exit code of the last run.",
        "# TYPE dmimport_exit_code gauge",
        f'dmimport_exit_code{{job="{job}"}} {summary.exit_code}',
        "# HELP dmimport_last_run_timestamp_seconds When the last run finished.",
        "# TYPE dmimport_last_run_timestamp_seconds gauge",
        f'dmimport_last_run_timestamp_seconds{{job="{job}"}} {now:.0f}',
    ]
    if last_success is not None:
        lines += [
            f"# HELP {_METRIC_LAST_SUCCESS} When a run of this job last exited 0.",
            f"# TYPE {_METRIC_LAST_SUCCESS} gauge",
            f'{_METRIC_LAST_SUCCESS}{{job="{job}"}} {last_success:.0f}',
        ]
    tmp = temp_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with writing(path):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
            finish_atomic(tmp, path)
    except DiskFullError:
        tmp.unlink(missing_ok=True)
        raise
