"""What a run refused by ``check_inputs`` leaves: ``summary.json`` in its report folder
(``refused`` says why, ``exit_code`` 7) and, for a run that would have sent, a ``refused``
run in the job's ledger (``dmimport runs`` lists it; the next run looks past it, for the run
to resume and for ``input.min_size_ratio``'s last input)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import exitcodes
from ..config import Config
from ..errors import DmImportError, InputIncomplete
from ..ledger import Ledger, ledger_path
from ..outputs import RunStart
from ..report import RunSummary, make_run_dir, write_metrics

log = logging.getLogger("importer")


def light_fingerprints(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The files of a refused run as the ledger records them, not hashed (a file still
    being written is not read twice)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append({"path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime})
    return out


def record_refusal(
    config: Config,
    exc: InputIncomplete,
    start: RunStart,
    *,
    files: list[dict[str, Any]],
    config_source: str = "",
    use_ledger: bool = False,
    metrics_file: Path | None = None,
) -> RunSummary | None:
    """Write the refused run's ``summary.json`` (and record it ``refused`` in the ledger when
    ``use_ledger``); the summary, or None when it could not be written (said in the log: the
    refusal itself stands)."""
    summary = start.unsent_summary(config.job.kind, exitcodes.INPUT_INCOMPLETE, str(exc), files)
    if use_ledger:
        _record_in_ledger(config, start.run_id, start.config_sha, files)
    if metrics_file is not None:
        try:
            write_metrics(metrics_file, summary)
        except (DmImportError, OSError) as err:
            log.warning("the metrics file was not updated: %s", err)
    try:
        make_run_dir(start.run_dir, config_source)
        summary.write(start.run_dir)
    except (DmImportError, OSError) as err:
        log.warning("the refused run's summary.json could not be written: %s", err)
        return None
    return summary


def _record_in_ledger(config: Config, run_id: str, config_sha: str, files: list[Any]) -> None:
    job = config.job_name
    try:
        with Ledger(ledger_path(config)) as ledger, ledger.lock(job):
            ledger.begin_run(job, run_id, config_sha, files, resume=False)
            ledger.end_run(
                run_id, status="refused", counts={}, exit_code=exitcodes.INPUT_INCOMPLETE
            )
    except DmImportError as err:  # another run holds the lock, a damaged ledger: said
        log.warning("the refused run could not be recorded in the ledger: %s", err)
