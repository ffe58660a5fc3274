"""What a run writes, as its rows get their outcomes and when it ends.

Each finished batch (``finish``) becomes report lines in ``results.<fmt>``, its undelivered
original rows in ``rejects.<ext>``, counts in the run's ``Tally`` and, with a ledger, the
rows to retry. The end of the run (``close``) is written in one place, in this order: the
report files finished, the outcomes committed and folded into the ledger, the metrics file,
``summary.json``, and last the run marked over in the ledger -- so a kill before that leaves
it ``running``, which the next run finds ``killed`` and resumes, never ``done`` without its
summary (issue 11 #15).

A full disk under the report stops the sending (``Stopper.disk_full``) and ends the run with
one ``DiskFullError`` saying what was sent and what the ledger kept (``lose``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, ParamSpec

import numpy as np

from . import exitcodes
from .config import Config
from .errors import DiskFullError
from .interrupts import Stopper
from .ledger import Held, OutcomeRecorder
from .load import Source
from .outcomes import Status
from .producer import BatchState
from .progress import RunProgress
from .report import (
    PiiMask,
    RejectFiles,
    ResultRows,
    ResultsWriter,
    RunSummary,
    Sending,
    Tally,
    write_metrics,
)

log = logging.getLogger("importer")
P = ParamSpec("P")

#: statuses whose original rows go to the rejects file
_UNDELIVERED = np.array(
    [int(Status.REJECTED), int(Status.FAILED), int(Status.NOT_SENT)], dtype=np.int8
)


@dataclass(frozen=True)
class RunStart:
    """What the summary says of how a run began."""

    run_id: str
    job: str
    mode: str  # send | debug | dry-run
    run_dir: Path
    started: datetime
    t0: float  # time.perf_counter() at the start
    files: list[dict[str, Any]]  # the fingerprints, as the ledger has them
    config_sha: str

    def unsent_summary(
        self, kind: str, exit_code: int, refused: str, files: list[dict[str, Any]] | None = None
    ) -> RunSummary:
        """The summary of this run stopped before it read a row for sending (held by
        ``guard:``, refused as incomplete): no rows, no requests, ``refused`` why; ``files``
        when not this start's."""
        return RunSummary(
            run_id=self.run_id, job=self.job, kind=kind, mode=self.mode,
            report_dir=self.run_dir, started=self.started.isoformat(timespec="seconds"),
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=time.perf_counter() - self.t0, rows=0, counts={}, errcodes={},
            top_reasons=[], requests=0, aborted=None, exit_code=exit_code,
            files=self.files if files is None else files, config_sha256=self.config_sha,
            refused=refused,
        )  # fmt: skip


class RunOutputs:
    """The report files, the tally and the ledger record of one run."""

    def __init__(
        self,
        config: Config,
        start: RunStart,
        sources: list[Source],
        stopper: Stopper,
        *,
        mask: PiiMask | None,
        recorder: OutcomeRecorder | None,
        dry_run: bool,
        progress: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.kind = config.job.kind
        self.start = start
        self.sources = sources
        self.stopper = stopper
        self.recorder = recorder
        self.dry_run = dry_run
        self._progress = progress
        encoding = config.report.encoding
        self.results = ResultsWriter(
            start.run_dir, config.report.format, mask=mask, encoding=encoding
        )
        self.rejects = RejectFiles(start.run_dir, sources, reasons_encoding=encoding)
        self.tally = Tally()
        #: rows the platform answered (ok or failed), for the message of a lost report
        self.answered: Counter[str] = Counter()
        #: the rows answered so far and the run's total, for the progress display
        self.counting = RunProgress()
        #: the full disk the report met, if it did: nothing more is written to it
        self.report_full: DiskFullError | None = None
        # finish() runs on the loop thread, or on the producer's for a batch with nothing
        # to send: one at a time
        self._lock = threading.Lock()

    # -- as rows get their outcomes -------------------------------------------------------------
    def finish(self, state: BatchState) -> None:
        """Every row of a batch has its outcome: write its report lines and rejects."""
        with self._lock:
            rows = state.result_rows(
                self.kind,
                interrupted=self.stopper.interrupted is not None,
                quota=self.stopper.quota_exhausted,
            )
            batch = state.batch
            self._write(self.results.write, rows)
            self.tally.add(rows, batch.source.path.name)
            self.counting.finished(state, len(rows))
            undelivered = np.flatnonzero(np.isin(state.status, _UNDELIVERED))
            self._write(self.rejects.write_batch, state.file_index, batch, undelivered, rows)
            if self.recorder is not None:
                self.recorder.undelivered(str(batch.source.path), state.mapped, state.status)
        if self.dry_run:  # checked: answered (a run that sends shows them on its tick)
            self.show_progress()

    def held(self, held: Held) -> None:
        """Report lines for the held rows that need no send, a file at a time."""
        paths = [s.path for s in self.sources]
        for quiet in held.quiet:
            rows = ResultRows.held(quiet, paths, self.kind)
            with self._lock:
                self._write(self.results.write, rows)
                self.tally.add(rows, paths[quiet.file_index].name, reasons=False)
                self.counting.reported(len(rows))

    def begin_progress(self, known_total: int | None) -> None:
        """The rows start going: the run's total when known before they are read."""
        if self._progress is not None:
            self.counting.begin(known_total, self.sources)
            self.show_progress()

    def show_progress(self) -> None:
        """Hand the rows reported so far, by status, and the rows answered of the total
        (``importer.progress``) to the progress display."""
        if self._progress is not None:
            tally = self.tally
            elapsed = time.perf_counter() - self.start.t0
            self._progress(self.counting.counts(tally.rows, tally.counts, self.answered, elapsed))

    def _write(self, write: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
        """Write to the report, unless its disk was found full: then sending stops."""
        if self.report_full is not None:
            return
        try:
            write(*args, **kwargs)
        except DiskFullError as exc:
            self.report_full = exc
            self.stopper.disk_full(exc)

    # -- the end ----------------------------------------------------------------------------------
    def abandon(self, exc: BaseException) -> None:
        """``exc`` ends the run: drop the unfinished report files; the ledger keeps the run
        ``interrupted`` (resumed by the next run)."""
        self.counting.over()
        self.results.abandon()
        self.rejects.abandon()
        if self.recorder is not None:
            self.recorder.abandon(dict(self.tally.counts), exitcodes.for_exception(exc))

    def lose(self, exc: DiskFullError) -> NoReturn:
        """The report's disk is full: drop its unfinished files (freeing what they took),
        mark the run resumable in the ledger, and raise one line saying what happened."""
        self.results.abandon()
        self.rejects.abandon()
        if self.dry_run:
            raise DiskFullError(
                exc.path, f"{exc}: validate stopped; free space, then run it again"
            ) from None
        ok, failed = self.answered.get("ok", 0), self.answered.get("failed", 0)
        text = (
            f"{exc}: the run stopped after the platform answered {ok + failed} rows ({ok} ok, "
            f"{failed} failed), and its report is incomplete. "
        )
        recorder = self.recorder
        if recorder is not None:
            recorder.end("interrupted", dict(self.tally.counts), exitcodes.DISK_FULL)
        if recorder is None:
            text += "Free space, then run the same command again (every row is sent again)"
        elif recorder.full is not None:
            text += (
                f"The ledger {recorder.ledger.path} is full too: free space, then run the same "
                "command again (it resumes; rows whose outcome the ledger could not record "
                "are sent again)"
            )
        else:
            text += (
                f"The ledger {recorder.ledger.path} has their outcomes: free space, then run "
                "the same command again (it resumes)"
            )
        raise DiskFullError(exc.path, text) from None

    def close(
        self,
        *,
        aborted: str | None,
        requests: int,
        sending: Sending | None = None,
        max_reject_rate: float | None,
        resumed_from: str | None,
        skipped_inputs: list[tuple[Path, str]],
        metrics_file: Path | None,
        quota: dict[str, Any] | None = None,
        out_of_quota: bool = False,
    ) -> RunSummary:
        """Every row has its outcome: finish the report, the ledger's record and the summary
        (see the module's docstring for the order)."""
        self.counting.over()
        start, tally, recorder = self.start, self.tally, self.recorder
        results_path: Path | None = None
        rejects_paths: list[Path] = []
        if self.report_full is None:
            try:
                results_path = self.results.close()
                rejects_paths = self.rejects.close()
            except DiskFullError as exc:
                self.report_full = exc
        if self.report_full is not None:
            self.lose(self.report_full)
        if recorder is not None:
            recorder.close()
            recorder.fold()
        ledger_full = recorder.full if recorder is not None else None
        if ledger_full is not None:
            aborted = ledger_full_reason(ledger_full)
        interrupted = self.stopper.interrupted
        summary = RunSummary(
            run_id=start.run_id,
            job=start.job,
            kind=self.kind,
            mode=start.mode,
            report_dir=start.run_dir,
            started=start.started.isoformat(timespec="seconds"),
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=time.perf_counter() - start.t0,
            rows=tally.rows,
            counts={s.label: tally.counts.get(s.label, 0) for s in Status},
            errcodes=dict(sorted(tally.errcodes.items())),
            top_reasons=tally.top_reasons(),
            requests=requests,
            aborted=aborted,
            exit_code=exitcodes.for_run(
                tally.counts,
                tally.rows,
                max_reject_rate=max_reject_rate,
                aborted=bool(aborted),
                signum=interrupted,
                disk_full=ledger_full is not None,
            ),
            # the fingerprints and the encoding each file was read with
            files=[
                {**f, "encoding": s.encoding, "encoding_reason": s.encoding_reason}
                for f, s in zip(start.files, self.sources, strict=True)
            ],
            config_sha256=start.config_sha,
            results_path=results_path,
            rejects_paths=rejects_paths,
            reasons_path=self.rejects.reasons_path,
            reject_rate_exceeded=exitcodes.reject_rate_exceeded(
                tally.counts, tally.rows, max_reject_rate
            ),
            resumed_from=resumed_from,
            skipped_inputs=[{"path": str(p), "reason": r} for p, r in skipped_inputs],
            interrupted=signal.Signals(interrupted).name if interrupted is not None else None,
            quota=quota,
            sending=sending if sending is not None else Sending(requests=requests),
        )
        if metrics_file is not None:
            try:
                write_metrics(metrics_file, summary)
            except DiskFullError as exc:
                summary.aborted = f"{exc}: the metrics were not updated"
                summary.exit_code = exitcodes.DISK_FULL
        try:
            summary.write(start.run_dir)
        except DiskFullError as exc:
            self.lose(exc)
        if recorder is not None:
            status = (
                "interrupted" if interrupted is not None
                # the daily quota ran out: resumable, like an interruption
                else "quota" if out_of_quota and ledger_full is None
                else "aborted" if aborted else "done"
            )  # fmt: skip
            if (full := recorder.end(status, summary.counts, summary.exit_code)) is not None:
                # the report is whole; the run stays 'running' and is resumed next time
                log.warning("%s: the run could not be marked over", full)
        return summary


def ledger_full_reason(exc: DiskFullError) -> str:
    """Why a run whose ledger's disk filled up stopped, and what to do."""
    return (
        f"{exc}: the run stopped; free space, then run the same command again (it "
        "resumes; rows whose outcome the ledger could not record are sent again)"
    )
