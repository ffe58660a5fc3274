"""Wires loader -> mapper -> sender -> report into one run: ``importer.run(config, files)``.

Threads and queues: a producer thread reads and maps batches (pyarrow releases the GIL for
most of that work) and hands them to the asyncio loop through a queue bounded to a few
batches, so memory stays flat however large the files. The loop owns the sender and the
report writers. Every input row ends in exactly one report line: malformed records and locally
rejected rows as ``rejected``, delivered rows as ``ok``, rows the server refused as ``failed``,
and rows left behind by an aborted run as ``not_sent``.

Before anything is sent, every input file is opened and its header checked against the
config, and the SECRET is looked up: a mistake there refuses the whole run (``ConfigError``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import queue
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from . import exitcodes
from .config import EVENT_NAME_PLACEHOLDER, Config, check_columns
from .errors import (
    NO_SPACE,
    ConfigError,
    ConfigProblem,
    DiskFullError,
    Interrupted,
    LedgerError,
    LoadError,
    LockedError,
    NothingToRetry,
    UsageError,
)
from .job import load_job
from .ledger import (
    BatchClassifier,
    BatchOutcomes,
    Held,
    Identities,
    Ledger,
    RunInfo,
    Verdicts,
    lock_path,
    place,
    position,
)
from .load import BadRecord, Batch, Source, expand_inputs, iter_batches, open_source
from .map import Mapped, Mapper
from .outcomes import NOT_SENT_MESSAGE, RowResult, Status
from .protocol import header_problem
from .report import (
    RESULT_SUFFIXES,
    PiiMask,
    RejectFiles,
    RejectRows,
    ResultRows,
    ResultsWriter,
    RunSummary,
    file_fingerprint,
    finish_atomic,
    read_results,
    without_row_values,
    write_metrics,
)
from .send import (
    MultiProcessSender,
    Request,
    RequestSource,
    Sender,
    StreamTransport,
    Transport,
    WorkerSpec,
)

log = logging.getLogger("importer")

#: statuses whose original rows go to the rejects file
_UNDELIVERED = np.array(
    [int(Status.REJECTED), int(Status.FAILED), int(Status.NOT_SENT)], dtype=np.int8
)

ProgressFn = Callable[[dict[str, int]], None]


#: the signals that stop a run cleanly (``handle_signals``)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: the reason of every row an interrupted run did not send
INTERRUPTED_MESSAGE = "not sent: the run was interrupted"


class _BatchState:
    """A mapped batch on its way through the sender, and its per-row outcomes."""

    __slots__ = (
        "attempts",
        "batch",
        "dispatched",
        "errcode",
        "errmsg",
        "file_index",
        "held",
        "latency",
        "ledger_fields",
        "mapped",
        "remaining",
        "status",
        "valid",
    )

    def __init__(
        self,
        batch: Batch,
        mapped: Mapped,
        valid_status: Status,
        verdict: Verdicts | None = None,
        file_index: int = 0,
    ) -> None:
        self.batch = batch
        self.mapped = mapped
        self.file_index = file_index
        n = mapped.n
        ok = mapped.errcode == 0
        self.status = np.where(ok, int(valid_status), int(Status.REJECTED)).astype(np.int8)
        #: rows whose outcome the end of the run decides (``BatchClassifier.held``): not
        #: sent with this batch, and reported later
        self.held = np.zeros(0, dtype=np.int64)
        if verdict is not None:
            self.status[ok & verdict.done] = int(Status.SKIPPED)
            self.status[ok & verdict.unchanged] = int(Status.UNCHANGED)
            self.held = np.flatnonzero(ok & verdict.held)
            self.status[self.held] = int(Status.SKIPPED)
            ok = ok & verdict.send
        self.valid = np.flatnonzero(ok)
        self.errcode: list[int | None] = [c or None for c in mapped.errcode.tolist()]
        self.errmsg: list[str | None] = list(mapped.reason)
        self.attempts = np.zeros(n, dtype=np.int32)
        self.latency: list[float | None] = [None] * n
        self.remaining = len(self.valid)
        self.dispatched = False
        #: what the ledger records of each row, made on the first outcome
        self.ledger_fields: BatchOutcomes | None = None


class Run:
    """One run of a job over some files. Use ``importer.run()`` unless you need the parts."""

    def __init__(
        self,
        config: Config,
        files: Sequence[str | Path],
        *,
        dry_run: bool = False,
        report_dir: str | Path | None = None,
        progress: ProgressFn | None = None,
        transport_factory: Callable[[Config], Transport] | None = None,
        config_path: str | Path | None = None,
        changed_only: bool | None = None,
        full: bool = False,
        only: dict[Path, set[int]] | None = None,
        max_reject_rate: float | None = None,
        metrics_file: str | Path | None = None,
        handle_signals: bool = False,
    ) -> None:
        self.config = config
        #: SIGINT and SIGTERM stop the run cleanly (the CLI; a library caller keeps its own
        #: KeyboardInterrupt)
        self.handle_signals = handle_signals
        #: what a signal does now: "prepare" raises Interrupted, "send" stops the sending,
        #: "finish" (every row has its outcome, the report is being written) waits for it
        self._phase = "prepare"
        self._signals = 0
        #: the signal number that stopped the sending
        self._interrupted: int | None = None
        self.dry_run = dry_run
        self.changed_only = (
            (config.state.mode == "incremental") if changed_only is None else changed_only
        )
        if full:
            self.changed_only = False
        self.full = full
        self.only = only
        self.max_reject_rate = max_reject_rate
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.ledger: Ledger | None = None
        self.run_info: RunInfo | None = None
        self._ledger_buf: list[tuple[str, int, str, int | None]] = []
        self._failed_buf: list[tuple[str, int, str, str]] = []
        self.progress = progress
        self.transport_factory = transport_factory or _default_transport
        self.report_root = Path(report_dir) if report_dir else Path(config.report.dir)
        self.config_path = Path(config_path) if config_path else None
        self.input = config.input
        self.skipped_inputs: list[tuple[Path, str]] = []
        self.paths = sorted(only) if only is not None else expand_inputs(files, self.skipped_inputs)
        for path, reason in self.skipped_inputs:
            log.warning("%s: skipped: %s", path, reason)
        self.mapper = Mapper(config)
        self.mask = (
            PiiMask(self.mapper.identity_keys, config.job.primary_keys)
            if config.report.mask_pii
            else None
        )
        self.sources: list[Source] = []
        self.counts: Counter[str] = Counter()
        self.errcodes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.reason_example: dict[str, str] = {}
        self.rows = 0
        self._stop = threading.Event()
        #: the first full disk met while sending: the report's, the ledger's
        self._report_full: DiskFullError | None = None
        self._ledger_full: DiskFullError | None = None
        self._sender: Sender | MultiProcessSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: rows the platform answered (ok or failed), for the message of a lost report
        self.answered: Counter[str] = Counter()
        # _finish runs on the loop thread, or on the producer's for a batch with nothing to
        # send; one at a time, and never while the ledger buffer of failures is taken
        self._finish_lock = threading.Lock()
        #: the ledger identity of a row
        self._identities = Identities(config.job.kind, config.job.event_name)

    # -- preflight ---------------------------------------------------------------------------
    def preflight(self) -> str | None:
        """Open every file, check headers against the config, find the SECRET. Sends nothing."""
        problems: list[ConfigProblem] = []
        for path in self.paths:
            source = open_source(path, self.input)
            source.refuse_unsupported(self.config.source_columns())
            self.sources.append(source)
            if source.has_header_columns:
                try:
                    check_columns(self.config, str(path), source.columns)
                except ConfigError as exc:
                    problems.extend(exc.problems)
        if (
            not self.dry_run
            and not self.config.target.debug
            and self.config.job.event_name == EVENT_NAME_PLACEHOLDER
        ):
            problems.append(
                ConfigProblem(
                    "job.event_name",
                    f"still the placeholder '{EVENT_NAME_PLACEHOLDER}' that `dmimport init` wrote",
                    hint="set the platform's event name (e.g. order_detail); "
                    "--debug and validate accept it",
                )
            )
        secret = None
        if not self.dry_run:
            name = self.config.target.secret_env
            secret = os.environ.get(name, "")
            if secret.strip() and any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
                # never echo the value: it is the SECRET
                problems.append(
                    ConfigProblem(
                        "target.secret_env",
                        f"environment variable {name} contains a control character "
                        "(a line break or tab, often from a Windows env file)",
                        hint="remove it; a SECRET is a UUID-like string",
                    )
                )
            elif secret.strip() and (problem := header_problem(secret)) is not None:
                # sent anyway, it failed every row with UnicodeEncodeError, and the run ended
                # as "the platform failed 200 rows in a row"
                problems.append(
                    ConfigProblem(
                        "target.secret_env",
                        f"environment variable {name} contains {problem}",
                        hint="a SECRET is plain ASCII; a dash or quote pasted from a document "
                        "or a chat is often a look-alike (an em dash for '-'): retype it",
                    )
                )
            elif not secret.strip():
                problems.append(
                    ConfigProblem(
                        "target.secret_env",
                        f"environment variable {name} is not set (it must hold the SECRET)",
                        hint=f"export {name}=<your SECRET> before running",
                    )
                )
        if problems:
            raise ConfigError(problems, source=str(self.config_path or ""))
        return secret

    # -- producer ------------------------------------------------------------------------------
    def _produce(self, build_bodies: bool) -> Iterator[_BatchState]:
        columns = self.config.source_columns()
        valid_status = Status.VALID if self.dry_run else Status.NOT_SENT
        reader: BatchClassifier | None = None
        if (
            self.ledger is not None
            and self.run_info is not None
            and (bool(self.run_info.resume_chain) or self.changed_only)
        ):
            # a connection of this thread's own: the ledger writer thread records on the other
            reader = BatchClassifier(
                self.ledger,
                self.config.job_name,
                self.run_info,
                self._identities,
                kind=self.config.job.kind,
                changed_only=self.changed_only,
            )
        try:
            for index, source in enumerate(self.sources):
                wanted = self.only.get(source.path) if self.only is not None else None
                try:
                    for batch in iter_batches(source, self.input, columns):
                        if wanted is not None:
                            batch = _filter_batch(batch, wanted)
                        bodies = build_bodies and not self._stop.is_set()
                        mapped = self.mapper.map(batch, build_bodies=bodies)
                        verdict = None
                        if reader is not None and bodies:
                            verdict = reader.classify(mapped, index)
                        state = _BatchState(batch, mapped, valid_status, verdict, index)
                        if len(state.valid) and mapped.bodies is not None:
                            mapped.bodies.build()  # here, not on the loop thread
                        yield state
                except LoadError as exc:
                    # The file broke mid-way (e.g. truncated gzip): what was read is
                    # reported; the failure itself becomes a report line too.
                    mapped = self.mapper.map_table(
                        _empty_table(), np.zeros(0, dtype=np.int64), build_bodies=False
                    )
                    failure = _load_failure_batch(source, str(exc))
                    yield _BatchState(failure, mapped, valid_status, None, index)
            if reader is not None and reader.holds_rows:
                yield from self._produce_held(reader, build_bodies, columns, valid_status)
        finally:
            if reader is not None:
                reader.close()

    def _produce_held(
        self, reader: BatchClassifier, build_bodies: bool, columns: Any, valid_status: Status
    ) -> Iterator[_BatchState]:
        """The end of a changed-only user run: decide the rows held for a customer's last
        row. Those superseded by an unchanged last row are reported ``skipped`` (the last
        one ``unchanged``); the customers whose last row changed have their held rows read
        again and sent, in file order (the earlier rows may hold values the last leaves
        empty)."""
        held = reader.held()
        self._report_held(held)
        resend = held.resend
        for index in sorted(resend):
            source = self.sources[index]
            with contextlib.suppress(LoadError):  # reported by the first pass
                for batch in iter_batches(source, self.input, columns):
                    batch = _filter_batch(batch, resend[index])
                    if len(batch.lines) == 0:
                        continue
                    bodies = build_bodies and not self._stop.is_set()
                    mapped = self.mapper.map(batch, build_bodies=bodies)
                    state = _BatchState(batch, mapped, valid_status, None, index)
                    if len(state.valid) and mapped.bodies is not None:
                        mapped.bodies.build()
                    yield state

    def _report_held(self, held: Held) -> None:
        """Report lines for the held rows that need no send, a file at a time."""
        for rows in held.quiet:
            path = self.sources[rows.file_index].path
            status: list[str] = []
            reason: list[str | None] = []
            for unchanged, by in zip(rows.unchanged, rows.superseded_by, strict=True):
                if unchanged:
                    status.append(Status.UNCHANGED.label)
                    reason.append(None)
                    continue
                assert by is not None
                status.append(Status.SKIPPED.label)
                where = f"line {by[1]}"
                if by[0] != rows.file_index:
                    where = f"{self.sources[by[0]].path.name} {where}"
                reason.append(f"superseded by {where}, this customer's last row, unchanged")
            n = len(rows.lines)
            result = ResultRows(
                file=str(path),
                kind=self.config.job.kind,
                line=rows.lines,
                identity=rows.identities,
                status=status,
                errcode=[None] * n,
                errmsg=reason,
                column=[None] * n,
                attempts=[0] * n,
                latency_ms=[None] * n,
            )
            with self._finish_lock:
                self.results.write(result)
                self.rows += n
                self.counts.update(status)

    # -- running -------------------------------------------------------------------------------
    def execute(self) -> RunSummary:
        if not self.dry_run and not self.config.target.tls_verify:
            log.warning(
                "TLS certificate verification is OFF (target.tls_verify: false): anyone on the "
                "network path can read the SECRET and the data. Use target.ca_file instead."
            )
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        secret = self.preflight()
        job = self.config.job_name
        run_id = started.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
        run_dir = self.report_root / f"{job}-{run_id}"
        try:
            run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise DiskFullError(
                    run_dir,
                    f"no space left on device writing {run_dir}: nothing was sent; free space, "
                    "then run the same command again",
                ) from None
            raise ConfigError(
                [
                    ConfigProblem(
                        "report.dir",
                        f"cannot create the report folder {run_dir}: {exc.strerror or exc}",
                        hint="give a writable folder with --report-dir or report.dir",
                    )
                ],
                source=str(self.config_path or ""),
            ) from None
        self.run_dir = run_dir
        mode = "dry-run" if self.dry_run else ("debug" if self.config.target.debug else "send")
        files = [file_fingerprint(s.path) for s in self.sources]
        config_sha = _config_hash(self.config)
        use_ledger = not self.dry_run and self.config.state.enabled and not self.config.target.debug
        lock: Any = contextlib.nullcontext()
        try:
            if use_ledger:
                adopt_old_ledger(self.config, self.report_root)
                self.ledger = Ledger(self.ledger_path())
                lock = self.ledger.lock(job)
            with lock, self._signal_handlers():
                return self._run_locked(
                    secret, job, run_id, run_dir, t0, started, mode, files, config_sha
                )
        except DiskFullError as exc:
            if not use_ledger or self.run_info is not None:
                raise
            # the ledger could not be created or the run not recorded: nothing was sent
            with contextlib.suppress(OSError):
                run_dir.rmdir()
            raise DiskFullError(
                exc.path,
                f"{exc}: nothing was sent; free space, then run the same command again",
            ) from None

    def _run_locked(
        self,
        secret: str | None,
        job: str,
        run_id: str,
        run_dir: Path,
        t0: float,
        started: datetime,
        mode: str,
        files: list[dict[str, Any]],
        config_sha: str,
    ) -> RunSummary:
        fmt = self.config.report.format
        aborted: str | None = None
        requests = 0
        if self.ledger is not None:
            self.run_info = self.ledger.begin_run(
                job, run_id, config_sha, files, resume=not self.full and self.only is None
            )
            self._writer = _LedgerWriter(self.ledger, job, run_id)
        self.results = ResultsWriter(run_dir, fmt, mask=self.mask)
        self.rejects = RejectFiles(run_dir, self.sources)
        try:
            if self.dry_run or secret is None:
                for state in self._produce(build_bodies=False):
                    self._finish(state)
                    if self._report_full is not None:
                        break
            else:
                aborted, requests = asyncio.run(self._send(secret))
                if aborted and self.mask is not None:
                    aborted = self.mask.text(aborted)  # it may quote the platform's errmsg
            self._phase = "finish"
        except BaseException as exc:
            self.results.abandon()
            self.rejects.abandon()
            if self.ledger is not None:
                with contextlib.suppress(Exception):  # the error being raised matters more
                    self._flush_ledger()
                    self._writer.close()
                with contextlib.suppress(DiskFullError):  # then the run stays 'running'
                    self.ledger.end_run(
                        run_id,
                        status="interrupted",
                        counts=dict(self.counts),
                        exit_code=exitcodes.for_exception(exc),
                    )
                self.ledger.close()
            raise
        if self._report_full is None:
            try:
                results_path = self.results.close()
                rejects_paths = self.rejects.close()
            except DiskFullError as exc:
                self._report_full = exc
        if self._report_full is not None:
            self._lose_report(run_id, self._report_full)
        self._close_ledger_writer()
        duration = time.perf_counter() - t0
        if self._ledger_full is not None:
            aborted = self._ledger_full_reason(self._ledger_full)
        exit_code = exitcodes.for_run(
            self.counts,
            self.rows,
            max_reject_rate=self.max_reject_rate,
            aborted=bool(aborted),
            signum=self._interrupted,
            disk_full=self._ledger_full is not None,
        )
        summary = RunSummary(
            run_id=run_id,
            job=job,
            kind=self.config.job.kind,
            mode=mode,
            report_dir=run_dir,
            started=started.isoformat(timespec="seconds"),
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=duration,
            rows=self.rows,
            counts={s.label: self.counts.get(s.label, 0) for s in Status},
            errcodes=dict(sorted(self.errcodes.items())),
            top_reasons=[
                {"reason": r, "rows": n, "example": self.reason_example.get(r, "")}
                for r, n in self.reasons.most_common(5)
            ],
            requests=requests,
            aborted=aborted,
            exit_code=exit_code,
            # the fingerprints (as the ledger has them) and the encoding each file was read with
            files=[
                {**f, "encoding": s.encoding, "encoding_reason": s.encoding_reason}
                for f, s in zip(files, self.sources, strict=True)
            ],
            config_sha256=config_sha,
            results_path=results_path,
            rejects_paths=rejects_paths,
        )
        summary.reject_rate_exceeded = exitcodes.reject_rate_exceeded(
            self.counts, self.rows, self.max_reject_rate
        )
        summary.resumed_from = self.run_info.resumed_from if self.run_info else None
        summary.skipped_inputs = [{"path": str(p), "reason": r} for p, r in self.skipped_inputs]
        if self._interrupted is not None:
            summary.interrupted = signal.Signals(self._interrupted).name
        # The run is marked over last: a kill before that (in the fold, say) leaves it
        # `running`, which the next run finds `killed` and resumes, never `done` without its
        # summary.json (issue 11 #15).
        if self.ledger is not None and self._ledger_full is None:
            try:
                self.ledger.fold_run(run_id)
            except DiskFullError as exc:
                self._ledger_full = exc
                summary.aborted = self._ledger_full_reason(exc)
                summary.exit_code = exitcodes.DISK_FULL
        if self.metrics_file is not None:
            try:
                write_metrics(self.metrics_file, summary)
            except DiskFullError as exc:
                summary.aborted = f"{exc}: the metrics were not updated"
                summary.exit_code = exitcodes.DISK_FULL
        try:
            summary.write(run_dir)
        except DiskFullError as exc:
            self._lose_report(run_id, exc)
        if self.ledger is not None:
            if self._ledger_full is None:
                try:
                    self.ledger.end_run(
                        run_id,
                        status="interrupted"
                        if self._interrupted is not None
                        else "aborted"
                        if aborted
                        else "done",
                        counts=summary.counts,
                        exit_code=summary.exit_code,
                    )
                except DiskFullError as exc:
                    # the report is whole; the run stays 'running' and is resumed next time
                    log.warning("%s: the run could not be marked over", exc)
            with contextlib.suppress(sqlite3.Error):
                self.ledger.close()
        return summary

    def _close_ledger_writer(self) -> None:
        """Hand the last outcomes to the ledger and wait until they are committed (a full
        disk is remembered, not raised: the report still tells what happened)."""
        if self.ledger is None:
            return
        self._flush_ledger()
        try:
            self._writer.close()
        except DiskFullError as exc:
            self._ledger_full = self._ledger_full or exc

    @staticmethod
    def _ledger_full_reason(exc: DiskFullError) -> str:
        return (
            f"{exc}: the run stopped; free space, then run the same command again (it "
            "resumes; rows whose outcome the ledger could not record are sent again)"
        )

    def _lose_report(self, run_id: str, exc: DiskFullError) -> NoReturn:
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
        if self.ledger is not None:
            self._close_ledger_writer()
            if self._ledger_full is None:
                try:
                    self.ledger.end_run(
                        run_id,
                        status="interrupted",
                        counts=dict(self.counts),
                        exit_code=exitcodes.DISK_FULL,
                    )
                except DiskFullError as full:
                    self._ledger_full = full
            with contextlib.suppress(sqlite3.Error):
                self.ledger.close()
            if self._ledger_full is None:
                text += (
                    f"The ledger {self.ledger.path} has their outcomes: free space, then run "
                    "the same command again (it resumes)"
                )
            else:
                text += (
                    f"The ledger {self.ledger.path} is full too: free space, then run the same "
                    "command again (it resumes; rows whose outcome the ledger could not record "
                    "are sent again)"
                )
        else:
            text += "Free space, then run the same command again (every row is sent again)"
        raise DiskFullError(exc.path, text) from None

    def ledger_path(self) -> Path:
        return ledger_path(self.config)

    def _flush_ledger(self) -> None:
        if self.ledger is None or self.run_info is None:
            return
        rows, self._ledger_buf = self._ledger_buf, []
        with self._finish_lock:
            failed, self._failed_buf = self._failed_buf, []
        if (rows or failed) and self._ledger_full is None:
            try:
                self._writer.submit(rows, failed)
            except DiskFullError as exc:
                self._ledger_full = exc
                self._stop_sending(exc)

    def _report(self, write: Callable[[Any], None], what: Any) -> None:
        """Write to the report, unless its disk was found full: then sending stops."""
        if self._report_full is not None:
            return
        try:
            write(what)
        except DiskFullError as exc:
            self._report_full = exc
            self._stop_sending(exc)

    def _stop_sending(self, exc: DiskFullError) -> None:
        """A disk is full: no new row is sent, and the rows not sent yet end ``not_sent``,
        as when a fatal answer aborts a run. Called on any thread."""
        self._stop.set()
        sender, loop = self._sender, self._loop
        if sender is None or loop is None:
            return  # not sending (validate): the caller sees _report_full

        def stop() -> None:
            if not sender.aborted:
                sender.abort(str(exc))

        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            stop()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is over: nothing to stop
                loop.call_soon_threadsafe(stop)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGINT and SIGTERM while this run holds its lock (``handle_signals``, main thread
        only). The first one while sending stops the sending: requests in flight end, retry
        waits are cut short, every row not sent is ``not_sent``, the report is written and the
        run is ``interrupted`` in the ledger (resumed by the next run); exit code 128 + the
        signal number. Before sending, it raises ``Interrupted``; after, the report being
        written is finished. A second signal raises ``Interrupted`` at once."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in _STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1 and self._phase == "send":
            self._interrupted = signum
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is over: nothing to stop
                    loop.call_soon_threadsafe(self._interrupt, signum)
            return
        if self._signals == 1 and self._phase == "finish":
            return
        raise Interrupted(signum)

    def _interrupt(self, signum: int) -> None:
        """On the loop: stop the sending (see ``_signal_handlers``)."""
        self._interrupted = signum
        self._stop.set()
        sender = self._sender
        if sender is not None and not sender.stopping:
            sender.stop(f"interrupted by {signal.Signals(signum).name}")

    async def _send(self, secret: str) -> tuple[str | None, int]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_BatchState | None] = asyncio.Queue(maxsize=1)
        error: list[BaseException] = []

        def hand(item: _BatchState | None) -> bool:
            """Queue ``item`` for the loop; False when the loop is gone (a second Ctrl-C
            ended it): then there is nobody to hand anything to, and nothing to say."""
            try:
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            except RuntimeError:  # the loop is closed
                return False
            while True:
                try:
                    future.result(timeout=0.5)
                    return True
                except TimeoutError:
                    if loop.is_closed():
                        return False
                except (concurrent.futures.CancelledError, RuntimeError):
                    return False

        def producer() -> None:
            try:
                for item in self._produce(build_bodies=True):
                    if len(item.valid) == 0:
                        # nothing to send (all unchanged, done or rejected): report it here,
                        # leaving the loop thread free
                        self._finish(item)
                        continue
                    if not hand(item):
                        return
            except BaseException as exc:  # handed to the loop, re-raised there
                error.append(exc)
            finally:
                hand(None)

        thread = threading.Thread(target=producer, name="dmimport-producer", daemon=True)
        cfg = self.config
        profile = cfg.profile()
        transport: Transport | None = None
        sender: Sender | MultiProcessSender
        t = cfg.target
        workers = cfg.send.workers
        rate = cfg.send.rate_limit
        spec = WorkerSpec(
            base_url=t.base_url,
            timeout=t.timeout_s,
            verify=t.tls_verify,
            ca_file=t.ca_file,
            secret=secret,
            path=profile.path(cfg.job.kind, t.debug),
            profile=profile,
            concurrency=cfg.send.concurrency,
            retry=cfg.send.retry,
            # each process paces its share, so together they keep to rate_limit
            rate_limit=rate / workers if rate else None,
            ordered=cfg.job.kind != "event",
            abort_after_signature_failures=cfg.send.abort_after_signature_failures,
            abort_after_failed_rows=cfg.send.abort_after_failed_rows,
            abort_after_failed_requests=cfg.send.abort_after_failed_requests,
        )
        if workers > 1:
            sender = MultiProcessSender(spec, workers)
        else:
            transport = self.transport_factory(cfg)
            sender = spec.build_sender(transport)
        source = _QueueSource(queue, self, sender)
        self._sender, self._loop = sender, loop
        self._phase = "send"
        ticker = asyncio.create_task(self._tick())
        thread.start()
        try:
            await sender.run(source, source.on_result)
            if sender.stopping:
                self._stop.set()
            await source.drain()
        finally:
            ticker.cancel()
            if transport is not None:
                await transport.aclose()
            self._stop.set()
        # not thread.join() on the loop: the producer's last hand-off (the None) completes
        # only when the loop runs the put's done-callback, after drain() has taken the None
        await asyncio.to_thread(thread.join)
        if error:
            raise error[0]
        self._report_progress()
        return sender.abort_reason, sender.requests

    async def _tick(self) -> None:
        """Every 100 ms: outcomes to the ledger (a killed run forgets at most that much), and
        the progress display."""
        n = 0
        while True:
            await asyncio.sleep(0.1)
            self._flush_ledger()
            n += 1
            if n % 3 == 0:
                self._report_progress()

    def record_outcome(self, state: _BatchState, i: int, status: Status) -> None:
        """A row has its final outcome: into the ledger's buffer (flushed every 200 rows)."""
        self.answered[status.label] += 1
        if self.ledger is None or self._ledger_full is not None:
            return
        if state.ledger_fields is None:
            # the batch's fields at once: a few microseconds a row less on the loop thread
            state.ledger_fields = BatchOutcomes(
                state.mapped, state.file_index, state.valid, self._identities
            )
        self._ledger_buf.append(state.ledger_fields.item(i, status.label))
        if len(self._ledger_buf) >= 200:
            self._flush_ledger()

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress({"rows": self.rows, **self.counts})

    # -- accounting ------------------------------------------------------------------------------
    def _finish(self, state: _BatchState) -> None:
        """Every row of a batch has its outcome: write its report lines and rejects."""
        with self._finish_lock:
            self._finish_locked(state)

    def _finish_locked(self, state: _BatchState) -> None:
        batch, mapped = state.batch, state.mapped
        labels = [Status(s).label for s in range(len(Status))]
        status = [labels[s] for s in state.status.tolist()]
        lines: list[int] = mapped.lines.tolist()
        identity = list(mapped.identity)
        errcode = state.errcode
        errmsg = state.errmsg
        column = list(mapped.column)
        attempts: list[int] = state.attempts.tolist()
        latency = state.latency
        for i, s in enumerate(status):
            if s == "not_sent" and (errmsg[i] is None or errmsg[i] == NOT_SENT_MESSAGE):
                errmsg[i] = NOT_SENT_MESSAGE if self._interrupted is None else INTERRUPTED_MESSAGE
        for bad in batch.bad:
            lines.append(bad.line)
            identity.append("")
            status.append("rejected")
            errcode.append(None)
            errmsg.append(bad.reason)
            column.append(bad.column)
            attempts.append(0)
            latency.append(None)
        order = np.argsort(np.asarray(lines, dtype=np.int64), kind="stable")
        if len(state.held):  # reported at the end of the run
            keep = np.ones(len(lines), dtype=bool)
            keep[state.held] = False
            order = order[keep[order]]
        pick = order.tolist()
        rows = ResultRows(
            file=str(batch.source.path),
            kind=self.config.job.kind,
            line=[lines[i] for i in pick],
            identity=[identity[i] for i in pick],
            status=[status[i] for i in pick],
            errcode=[errcode[i] for i in pick],
            errmsg=[errmsg[i] for i in pick],
            column=[column[i] for i in pick],
            attempts=[attempts[i] for i in pick],
            latency_ms=[latency[i] for i in pick],
        )
        self._report(self.results.write, rows)
        self.rows += len(rows)
        self.counts.update(rows.status)
        for code, s, msg, ln in zip(rows.errcode, rows.status, rows.errmsg, rows.line, strict=True):
            if s in ("ok", "unchanged", "valid"):
                continue
            if code is not None:
                self.errcodes[str(code)] += 1
            if msg:
                key = _reason_key(msg)
                self.reasons[key] += 1
                self.reason_example.setdefault(key, f"{batch.source.path.name}:{ln}")
        self._report(self._write_rejects, state)
        if self.ledger is not None:
            path = str(batch.source.path)
            undelivered = np.flatnonzero(
                (state.status == int(Status.FAILED)) | (state.status == int(Status.NOT_SENT))
            )
            if len(undelivered):
                identities = self._identities(mapped, undelivered)[0]
                self._failed_buf.extend(
                    (path, line, identity, labels[status])
                    for line, identity, status in zip(
                        mapped.lines[undelivered].tolist(),
                        identities,
                        state.status[undelivered].tolist(),
                        strict=True,
                    )
                )

    def _write_rejects(self, state: _BatchState) -> None:
        batch = state.batch
        failed = np.flatnonzero(np.isin(state.status, _UNDELIVERED))
        if len(failed) == 0 and not batch.bad:
            return
        lines = state.mapped.lines
        if batch.original is not None:
            # Parquet: the original rows, original types, bad records included
            wanted = sorted({int(lines[i]) for i in failed} | {b.line for b in batch.bad})
            rows = batch.original.take(pa.array(_original_rows(batch, wanted), pa.int64()))
            self.rejects.write(
                state.file_index, RejectRows(pa.Table.from_batches([rows]), wanted, [])
            )
            return
        raw: list[tuple[int, str]] = [(b.line, b.raw) for b in batch.bad if b.raw is not None]
        table = None
        table_lines: list[int] = []
        if batch.raw is not None:
            raw.extend((int(lines[i]), batch.raw[i]) for i in failed)
        elif len(failed):
            table = batch.table.take(failed)
            table_lines = [int(lines[i]) for i in failed]
        self.rejects.write(state.file_index, RejectRows(table, table_lines, raw))


class _LedgerWriter:
    """Commits outcomes to the ledger on a thread of its own, in the order handed over, so
    that the loop thread does not wait for SQLite (most of a commit runs without the GIL).

    At most a few hand-overs wait (each about 200 rows, or 100 ms of outcomes): a killed
    process forgets little more than before, and those rows are simply sent again. ``close``
    returns once everything handed over is committed; a ledger error is raised there, or at
    the next ``submit``.
    """

    def __init__(self, ledger: Ledger, job: str, run_id: str) -> None:
        self._ledger = ledger
        self._job = job
        self._run_id = run_id
        self._queue: queue.Queue[tuple[list[Any], list[Any]] | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="dmimport-ledger", daemon=True)
        self._thread.start()

    def submit(self, rows: list[tuple[str, int, str, int | None]], failed: list[Any]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((rows, failed))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue
            rows, failed = item
            try:
                if rows:
                    self._ledger.record(self._job, self._run_id, rows)
                if failed:
                    self._ledger.record_failed(self._run_id, failed)
            except BaseException as exc:  # raised on the caller's thread
                self._error = exc

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class _QueueSource(RequestSource):
    """Hands the sender one valid row at a time from the batches the producer queued."""

    def __init__(
        self, queue: asyncio.Queue[Any], run: Run, sender: Sender | MultiProcessSender
    ) -> None:
        self.queue = queue
        self.run = run
        self.sender = sender
        self._state: _BatchState | None = None
        self._iter: Iterator[int] = iter(())
        self._eof = False
        self._lock = asyncio.Lock()

    async def next_request(self) -> Request | None:
        while True:
            if self.sender.stopping:
                return None
            state = self._state
            if state is not None:
                i = next(self._iter, None)
                if i is not None:
                    bodies = state.mapped.bodies
                    assert bodies is not None
                    body = bodies[i]
                    assert body is not None
                    return Request(((state, i),), body, state.mapped.keys[i])
                state.dispatched = True
                self._state = None
                if state.remaining == 0:
                    self.run._finish(state)
            if self._eof or self.sender.stopping:
                return None
            async with self._lock:
                if self._state is not None or self._eof:
                    continue
                item = await self.queue.get()
                if item is None:
                    self._eof = True
                    continue
                self._take(item)

    def _take(self, state: _BatchState) -> None:
        self._state = state
        self._iter = iter(state.valid.tolist())

    def on_result(self, token: tuple[_BatchState, int], result: RowResult) -> None:
        state, i = token
        state.status[i] = int(result.status)
        state.errcode[i] = result.errcode if result.status != Status.OK else None
        state.errmsg[i] = None if result.status == Status.OK else result.errmsg
        state.attempts[i] = result.attempts
        state.latency[i] = round(result.latency_ms, 2)
        if result.status is not Status.NOT_SENT:
            self.run.record_outcome(state, i, result.status)
        state.remaining -= 1
        if state.remaining == 0 and state.dispatched:
            self.run._finish(state)

    async def drain(self) -> None:
        """After the sender stopped (done or aborted): account for every row left behind."""
        if self._state is not None:
            self._state.dispatched = True
            self._state.remaining -= sum(1 for _ in self._iter)
            if self._state.remaining <= 0:
                self.run._finish(self._state)
            self._state = None
        while not self._eof:
            state = await self.queue.get()
            if state is None:
                self._eof = True
                break
            state.dispatched = True
            state.remaining = 0
            self.run._finish(state)


def _original_rows(batch: Batch, lines: Sequence[int]) -> np.ndarray:
    """Where the rows on ``lines`` are in a Parquet batch's original rows: they hold every row
    of the batch, good and bad, in line order."""
    bad = np.array([b.line for b in batch.bad], dtype=np.int64)
    every = np.sort(np.concatenate((batch.lines, bad)))
    return np.searchsorted(every, np.asarray(lines, dtype=np.int64))


def _filter_batch(batch: Batch, lines: set[int]) -> Batch:
    """Only the rows on ``lines`` (for ``dmimport retry``)."""
    keep = np.flatnonzero(np.isin(batch.lines, np.fromiter(lines, dtype=np.int64)))
    bad = [b for b in batch.bad if b.line in lines]
    original = None
    if batch.original is not None:  # Parquet: the columns the job does not read are only here
        kept = sorted([*batch.lines[keep].tolist(), *(b.line for b in bad)])
        original = batch.original.take(pa.array(_original_rows(batch, kept), pa.int64()))
    return Batch(
        source=batch.source,
        index=batch.index,
        table=batch.table.take(keep),
        lines=batch.lines[keep],
        raw=[batch.raw[i] for i in keep] if batch.raw is not None else None,
        bad=bad,
        original=original,
    )


def _reason_key(msg: str) -> str:
    """Group reasons without their row-specific values (quoted text; e-mails, phones and
    values ``mask_pii`` masked, wherever they are: a platform's message may name the row)."""
    out = []
    quoted = False
    for ch in without_row_values(msg):
        if ch == "'":
            quoted = not quoted
            out.append("'…'" if quoted else "")
            continue
        if not quoted:
            out.append(ch)
    return "".join(out)[:200]


def _empty_table() -> Any:
    import pyarrow as pa

    return pa.table({})


def _load_failure_batch(source: Source, message: str) -> Batch:
    return Batch(
        source=source,
        index=-1,
        table=_empty_table(),
        lines=np.zeros(0, dtype=np.int64),
        raw=None,
        bad=[BadRecord(line=0, reason=message, column=None, raw=None)],
    )


def _default_transport(config: Config) -> Transport:
    t = config.target
    return StreamTransport(t.base_url, timeout=t.timeout_s, verify=t.tls_verify, ca_file=t.ca_file)


def _config_hash(config: Config) -> str:
    """What decides the bodies and where they go: the effective config (overrides included)
    without `send` and `report`, so a resume with another --concurrency still resumes."""
    relevant = config.model_dump_json(exclude={"send", "report"})
    return hashlib.sha256(relevant.encode()).hexdigest()


def _load(
    config: Config | str | Path, overrides: dict[str, Any] | None
) -> tuple[Config, Path | None]:
    if isinstance(config, Config):
        if overrides:
            raise UsageError("overrides apply only when the config is given as a path")
        return config, None
    return load_job(Path(config), overrides=overrides), Path(config)


def run(
    config: Config | str | Path,
    files: Sequence[str | Path],
    *,
    dry_run: bool = False,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    full: bool = False,
    changed_only: bool | None = None,
    max_reject_rate: float | None = None,
    metrics_file: str | Path | None = None,
    handle_signals: bool = False,
) -> RunSummary:
    """Import ``files`` with ``config`` (a Config or a YAML path). Returns the run's summary.

    Raises ConfigError (nothing sent) for a bad config, missing columns or a missing SECRET,
    and LoadError for an input file that cannot be read at all. ``handle_signals`` (the CLI):
    SIGINT and SIGTERM stop the run cleanly, see ``Run._signal_handlers``.
    """
    cfg, config_path = _load(config, overrides)
    return Run(
        cfg,
        files,
        dry_run=dry_run,
        report_dir=report_dir,
        progress=progress,
        config_path=config_path,
        full=full,
        changed_only=changed_only,
        max_reject_rate=max_reject_rate,
        metrics_file=metrics_file,
        handle_signals=handle_signals,
    ).execute()


def ledger_path(cfg: Config) -> Path:
    """Where a job's ledger (and its lock) lives: ``state.path``, else ``<report.dir>/state.db``
    with the config's ``report.dir``. ``--report-dir`` moves a run's reports, never the job's
    ledger: two runs of the job with different report folders share one lock and one memory."""
    if cfg.state.path:
        return Path(cfg.state.path)
    return Path(cfg.report.dir) / "state.db"


def adopt_old_ledger(cfg: Config, report_dir: str | Path | None) -> Path | None:
    """Move a ledger that dmimport up to 0.1 kept in ``--report-dir`` to the job's place.

    Done when ``state.path`` is not set, the job's ledger does not exist yet and
    ``<report_dir>/state.db`` does, under the job's lock at the new place and at the old
    one (a run of the job holding either is left alone: its own lock says it is running).
    The file moves with its ``-wal`` (committed outcomes a killed run left there), so the job
    keeps its memory. Returns the old path when it moved it.
    """
    if cfg.state.path or report_dir is None:
        return None
    new = ledger_path(cfg)
    old = Path(report_dir) / "state.db"
    if os.path.lexists(new) or not old.is_file():
        return None
    new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    job = cfg.job_name
    fds: list[int] = []
    try:
        new_lock = lock_path(new, job)
        for path in (new_lock, lock_path(old, job)):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if path == new_lock:
                    return None  # a run of the job is going: its lock refuses this one next
                raise LockedError(
                    f"job '{job}' is already running with the ledger {old} (lock file "
                    f"{path}); wait for it to finish, then run again"
                ) from None
        if os.path.lexists(new) or not old.is_file():
            return None  # another run moved it while this one waited
        # the -wal first, the database last: the new name never shows a database without
        # the outcomes its -wal holds; the -shm is only an index, rebuilt from the -wal
        for suffix in ("-wal", ""):
            src = old.with_name(old.name + suffix)
            if src.exists():
                _move(src, new.with_name(new.name + suffix))
        old.with_name(old.name + "-shm").unlink(missing_ok=True)
    except OSError as exc:
        raise LedgerError(
            f"cannot move the ledger {old} to {new} ({exc.strerror or exc}); move it (with "
            f"its -wal file) by hand, or set state.path: {old}"
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)
    log.warning(
        "moved the ledger %s to %s: a job's ledger and lock now live with the job (state.path, "
        "else report.dir), no longer in --report-dir",
        old,
        new,
    )
    return old


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; across file systems, a copy fsynced under a temporary name."""
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    finish_atomic(tmp, dst)
    src.unlink()


def _ledger_for(cfg: Config, report_dir: str | Path | None) -> Ledger:
    adopt_old_ledger(cfg, report_dir)
    path = ledger_path(cfg)
    if not path.exists():
        raise UsageError(
            f"no ledger at {path}: no run of this job has been recorded yet; "
            "`dmimport run CONFIG FILES` records one (or set state.path to the job's ledger)"
        )
    return Ledger(path)


def list_runs(
    config: Config | str | Path,
    *,
    all_jobs: bool = False,
    limit: int = 20,
    report_dir: str | Path | None = None,
) -> list[Any]:
    """Past runs from the ledger, newest first (``RunRecord``s)."""
    cfg, _ = _load(config, None)
    ledger = _ledger_for(cfg, report_dir)
    try:
        return ledger.runs(None if all_jobs else cfg.job_name, limit=limit)
    finally:
        ledger.close()


def retry(
    config: Config | str | Path,
    run_or_results: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    handle_signals: bool = False,
) -> RunSummary:
    """Re-send only the rows that ended ``failed`` or ``not_sent`` in a run, read back from
    their source files. ``run_or_results`` is a run id from the ledger or a results file.

    Raises ``NothingToRetry`` (exit code 0) when no row is to be sent again, and
    ``UsageError`` (exit code 2) when a run id is given and the job has no ledger yet."""
    cfg, config_path = _load(config, overrides)
    # (file, line, identity) of the rows to send again, and per identity the place of the
    # last row of it the run delivered: a failed row that a later row of its customer
    # overrode on the platform is not sent again (it would put the older values back)
    todo: list[tuple[str, int, str]] = []
    delivered: dict[str, tuple[int, str, int]] = {}
    candidate = Path(run_or_results)
    if candidate.suffix in RESULT_SUFFIXES and candidate.exists():
        seen = [(r.file, r.line, r.identity, r.status) for r in read_results(candidate)]
        # a run reads its files in the order of their paths (``expand_inputs``)
        order = {f: i for i, f in enumerate(sorted({str(Path(f)) for f, *_ in seen}))}
        for file, line, identity, status in seen:
            if status in ("failed", "not_sent"):
                todo.append((file, line, identity))
            elif status in ("ok", "skipped", "unchanged") and identity:
                at = (position(order[str(Path(file))], line), file, line)
                if at > delivered.get(identity, (-1, "", 0)):
                    delivered[identity] = at
        file_index = dict(order)
    else:
        ledger = _ledger_for(cfg, report_dir)
        try:
            rows = ledger.failed_rows(str(run_or_results))
            todo = [(f, ln, ident) for f, ln, ident, st in rows if st in ("failed", "not_sent")]
            record = next(
                (r for r in ledger.runs(None, limit=-1) if r.run_id == str(run_or_results)), None
            )
            if record is None:
                if candidate.suffix in RESULT_SUFFIXES or len(candidate.parts) > 1:
                    raise LoadError(f"{run_or_results}: no such file or directory")
                raise LedgerError(
                    f"run {run_or_results} is not in the ledger {ledger.path}; "
                    "`dmimport runs CONFIG` lists the job's runs"
                )
            if record.job != cfg.job_name:
                raise LedgerError(
                    f"run {run_or_results} is a run of job '{record.job}', not of this "
                    f"config's job '{cfg.job_name}': retry it with that job's config"
                )
            file_index = {}
            if cfg.job.kind == "user":
                places = {Path(f["path"]).resolve(): i for i, f in enumerate(record.files)}
                names = {i: str(f["path"]) for i, f in enumerate(record.files)}
                for file in {f for f, _, _ in todo}:
                    if Path(file).resolve() in places:
                        file_index[str(Path(file))] = places[Path(file).resolve()]
                        names[places[Path(file).resolve()]] = file
                found = ledger.delivered_positions(
                    record.job, record.run_id, [i for _, _, i in todo]
                )
                for i, pos in found.items():
                    at_file, at_line = place(pos)
                    delivered[i] = (pos, names.get(at_file, ""), at_line)
        finally:
            ledger.close()
    wanted: dict[Path, set[int]] = {}
    superseded: list[str] = []
    for file, line, identity in todo:
        index = file_index.get(str(Path(file))) if cfg.job.kind == "user" else None
        later = delivered.get(identity) if index is not None else None
        if later is not None and index is not None and later[0] > position(index, line):
            where = f"{later[1]}:{later[2]}" if later[1] else f"line {later[2]}"
            superseded.append(f"{file}:{line} (by {where})")
            continue
        wanted.setdefault(Path(file), set()).add(line)
    if superseded:
        log.warning(
            "not sent again: %d row(s) of %s whose customer's later row was delivered "
            "(sending it would put the older values back): %s",
            len(superseded),
            run_or_results,
            ", ".join(superseded[:5]) + (", ..." if len(superseded) > 5 else ""),
        )
    if not wanted:
        if superseded:
            raise NothingToRetry(
                f"nothing to retry: every failed or not_sent row of {run_or_results} was "
                "overridden by a later row of its customer that was delivered"
            )
        raise NothingToRetry(f"nothing to retry: {run_or_results} has no failed or not_sent rows")
    return Run(
        cfg,
        [],
        report_dir=report_dir,
        progress=progress,
        config_path=config_path,
        only=wanted,
        handle_signals=handle_signals,
    ).execute()


def validate(
    config: Config | str | Path,
    files: Sequence[str | Path],
    *,
    report_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunSummary:
    """The dry run: local checks only, nothing sent."""
    return run(config, files, dry_run=True, report_dir=report_dir, overrides=overrides)
