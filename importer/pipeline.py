"""Wires load -> map -> send -> report into one run (``Run``): threads and queues.

A batch's way through a run:

1. ``Run.preflight`` opens every input file (``load.open_source``) and checks its header
   against the config; for a run that sends, the event name and the SECRET too
   (``config.sending_problems``). A mistake there refuses the whole run (``ConfigError``)
   before anything is sent.
2. ``Run.execute`` creates the run's report folder, takes the job's ledger lock and begins the
   run in the ledger; an ``ledger.OutcomeRecorder`` commits its outcomes on a thread of its own.
3. A producer thread (``producer.Producer``) reads each file's batches (``load``), maps them
   (``map``), asks the ledger which rows to send (resume, changed-only) and builds their
   bodies -- pyarrow releases the GIL for most of that -- then hands each batch, as a
   ``BatchState``, to the asyncio loop through a queue bounded to one batch, so memory stays
   flat however large the files. A batch with nothing to send is finished on its thread.
4. On the loop, ``feed.RowFeed`` packs the valid rows into requests (``send.batcher``:
   ``send.batch_rows`` / ``send.batch_bytes``, per event name, one row per customer a request,
   across the producer's batches) and gives them to the sender (``send``); each answer fills
   in its row's outcome and goes to the ledger's buffer (flushed every 100 ms).
5. Once every row of a batch has its outcome, ``outputs.RunOutputs.finish`` writes its report
   lines (``results.csv``), its rejects and its counts (``report``).
6. ``RunOutputs.close`` finishes the report files, the ledger's record and ``summary.json``.

Every input row ends in exactly one report line: malformed records and locally rejected rows
as ``rejected``, delivered rows as ``ok``, rows the server refused as ``failed``, and rows
left behind by an aborted run as ``not_sent``. A full disk, SIGINT or SIGTERM stops the
sending early (``interrupts.Stopper``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Config, check_columns, sending_problems
from .duplicates import find_duplicates
from .errors import (
    ConfigError,
    ConfigProblem,
    DiskFullError,
    DmImportError,
    TruncatedInput,
)
from .feed import RowFeed
from .guard import Gate
from .interrupts import Stopper
from .lake.planned import foreign_change_set
from .ledger import (
    RESUMABLE,
    Duplicates,
    Identities,
    Ledger,
    OutcomeRecorder,
    RunInfo,
    adopt_old_ledger,
    ledger_path,
)
from .load import Source, expand_inputs, open_source
from .map import Mapper
from .outcomes import Status
from .outputs import RunOutputs, RunStart
from .producer import BatchState, Producer
from .quota import RunQuota, classifier_for, open_quota, plan_run
from .ready import refuse_incomplete, refuse_truncated
from .report import (
    PiiMask,
    RunSummary,
    Sending,
    file_fingerprint,
    make_run_dir,
)
from .report.retention import prune_run_folders, remove_dead_temp_files
from .send import (
    MultiProcessSender,
    RequestBudget,
    Sender,
    StreamTransport,
    Transport,
    WorkerSpec,
)

log = logging.getLogger("importer")

ProgressFn = Callable[[dict[str, int]], None]


class Run:
    """One run of a job over some files. Use ``importer.run()`` unless you need the parts."""

    def __init__(
        self,
        config: Config,
        files: Sequence[str | Path | Source],
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
        within_quota: bool = False,
        approve: str | Path | None = None,
        ignore_guard: bool = False,
    ) -> None:
        self.config = config
        self.gate = Gate(config, approve, ignore_guard)  # the blast-radius gate (guard:)
        self.within_quota = within_quota  # send what fits in the daily quota (importer.quota)
        self.quota: RunQuota | None = None
        #: SIGINT and SIGTERM stop the run cleanly (the CLI; a library caller keeps its own
        #: KeyboardInterrupt): see ``Stopper.signal_handlers``
        self.handle_signals = handle_signals
        self.dry_run = dry_run
        incremental = config.state.mode == "incremental"
        self.changed_only = not full and (incremental if changed_only is None else changed_only)
        self.full = full
        self.only = only
        self.max_reject_rate = max_reject_rate
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.ledger: Ledger | None = None
        self.run_info: RunInfo | None = None
        self.progress = progress
        self.transport_factory = transport_factory or _default_transport
        self.report_root = Path(report_dir) if report_dir else Path(config.report.dir)
        self.config_path = Path(config_path) if config_path else None
        self.input = config.input
        self.skipped_inputs: list[tuple[Path, str]] = []
        self.frames = [f for f in files if isinstance(f, Source)]  # in memory, after the files
        self.paths = _paths(files, only, self.skipped_inputs)
        for path, reason in self.skipped_inputs:
            log.warning("%s: skipped: %s", path, reason)
        self.mapper = Mapper(config)
        keys = (self.mapper.identity_keys, config.job.primary_keys)
        self.mask = PiiMask(*keys) if config.report.mask_pii else None
        self.sources: list[Source] = []
        self.stopper = Stopper()
        #: what the run writes (made when it starts)
        self.outputs: RunOutputs | None = None
        #: the ledger identity of a row
        self._identities = Identities(config.job.kind, config.job.event_name)
        self.duplicates = Duplicates.none()  # job.duplicates' verdicts (the pre-pass's)

    def preflight(self) -> str | None:
        """Open every file, check headers against the config, find the SECRET. Sends nothing."""
        problems: list[ConfigProblem] = []
        for path in list[Path | Source]([*self.paths, *self.frames]):
            source = _open_checked(path, self.config, problems)
            self.sources.append(source)
            if source.has_header_columns:
                try:
                    check_columns(self.config, str(source.path), source.columns)
                except ConfigError as exc:
                    problems.extend(exc.problems)
        secret = None
        if not self.dry_run:
            secret, sending = sending_problems(self.config)
            problems.extend(sending)
        if problems:
            raise ConfigError(problems, source=str(self.config_path or ""))
        return secret

    def execute(self) -> RunSummary:
        if not self.dry_run:  # said once per run, before anything is sent
            for warning in self.config.target.warnings():
                log.warning("%s", warning)
        started, t0 = datetime.now(UTC), time.perf_counter()
        job = self.config.job_name
        run_id = started.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
        run_dir = self.report_root / f"{job}-{run_id}"
        mode = "dry-run" if self.dry_run else ("debug" if self.config.target.debug else "send")
        use_ledger = not self.dry_run and self.config.state.enabled and not self.config.target.debug
        start = RunStart(run_id, job, mode, run_dir, started, t0, [], _config_hash(self.config))
        secret = _ready_preflight(self, start, use_ledger)  # before hashing: files may change
        make_run_dir(run_dir, str(self.config_path or ""))
        start.files.extend(_fingerprint(s) for s in self.sources)
        lock: Any = contextlib.nullcontext()
        try:
            if use_ledger:
                adopt_old_ledger(self.config, self.report_root)
                self.ledger = Ledger(ledger_path(self.config))
                lock = self.ledger.lock(job)
            with lock, self.stopper.signal_handlers(self.handle_signals):
                try:
                    summary = self._run_locked(secret, start)
                finally:
                    if self.quota is not None:
                        self.quota.close()
                _prune_reports(self.config, self.report_root, start)
                return summary
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

    def _run_locked(self, secret: str | None, start: RunStart) -> RunSummary:
        recorder: OutcomeRecorder | None = None
        if self.ledger is not None:
            resume = not self.full and self.only is None
            self.run_info = _begin(self.ledger, start, self.report_root, resume)
        self._plan_quota(secret, start)
        if self.ledger is not None:
            recorder = OutcomeRecorder(
                self.ledger, start.job, start.run_id, self._identities, self.stopper.disk_full
            )
        self.outputs = out = RunOutputs(
            self.config,
            start,
            self.sources,
            self.stopper,
            mask=self.mask,
            recorder=recorder,
            dry_run=self.dry_run,
            progress=self.progress,
        )
        out.begin_progress(_known_total(self.quota, self.only))
        aborted: str | None = None
        sending = Sending()
        try:
            if self.dry_run or secret is None:
                for state in self._batches(build_bodies=False):
                    out.finish(state)
                    if out.report_full is not None:
                        break
            else:
                aborted, sending = asyncio.run(self._send(secret, out))
                if aborted and self.mask is not None:
                    aborted = self.mask.text(aborted)  # it may quote the platform's errmsg
                aborted = self.quota.aborted(aborted) if self.quota else aborted
            out.show_progress()  # the files are read: the total is known
            self.stopper.phase = "finish"
        except BaseException as exc:
            out.abandon(exc)
            raise
        _keep_baseline(self, out, aborted)
        return out.close(
            aborted=aborted,
            requests=sending.requests,
            sending=sending,
            quota=self.quota.summary() if self.quota else None,
            out_of_quota=bool(self.quota and self.quota.out_of_quota),
            max_reject_rate=self.max_reject_rate,
            resumed_from=self.run_info.resumed_from if self.run_info else None,
            skipped_inputs=self.skipped_inputs,
            metrics_file=self.metrics_file,
        )

    def _plan_quota(self, secret: str | None, start: RunStart) -> None:
        """The pre-pass (``find_duplicates``), then the daily quota's plan (``plan_run``)."""
        self.quota = open_quota(
            self.config, secret=secret, dry_run=self.dry_run, within_quota=self.within_quota
        )
        watch = self.gate.watch(self.ledger, self.only, self.run_info)  # None: no guard:
        self.duplicates, valid = find_duplicates(
            self.config, self.sources, mapper=self.mapper, only=self.only, stop=self.stopper.stop,
            observe=watch.add if watch else None,
        )  # fmt: skip
        self.gate.judge(self.ledger, start, self.config_path, self.stopper.stop, self.metrics_file)
        plan_run(
            self.quota, self.sources, mapper=self.mapper, ledger=self.ledger,
            run=self.run_info, start=(start.job, start.config_sha, start.files, start.run_dir),
            changed_only=self.changed_only, only=self.only, stop=self.stopper.stop,
            dry_run=self.dry_run, valid=valid, duplicates=self.duplicates,
        )  # fmt: skip

    def _batches(self, build_bodies: bool) -> Iterator[BatchState]:
        """The run's batches, read, mapped and (resume, changed-only) classified."""
        assert self.outputs is not None
        producer = Producer(
            self.config,
            self.mapper,
            self.sources,
            valid_status=Status.VALID if self.dry_run else Status.NOT_SENT,
            only=self.only,
            stop=self.stopper.stop,
            duplicates=self.duplicates,
        )
        classifier = classifier_for(self.config, self.ledger, self.run_info, self.changed_only)
        self.outputs.counting.reading = producer.reading
        return producer.batches(build_bodies, classifier, self.outputs.held)

    async def _send(self, secret: str, out: RunOutputs) -> tuple[str | None, Sending]:
        """Send every batch the producer thread hands over; the abort reason (if the run
        aborted) and how the rows went out."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[BatchState | None] = asyncio.Queue(maxsize=1)
        producer = _ProducerThread(self._batches(build_bodies=True), out, queue, loop)
        budget = self.quota.budget if self.quota is not None else None
        sender, transport = _sender(self.config, secret, budget, self.transport_factory)
        source = RowFeed(queue, sender, out, self.config, self.mapper)
        stop = self.stopper.stop
        self.stopper.sending(sender, loop)
        ticker = asyncio.create_task(self._tick(out))
        producer.start()
        try:
            await sender.run(source, source.on_result)
            if await source.settle():  # late re-sends (send.settle_s)
                await sender.run(source, source.on_result)
            if sender.stopping:
                stop.set()
            await source.drain()
        finally:
            ticker.cancel()
            if transport is not None:
                await transport.aclose()
            if self.quota is not None:
                await self.quota.settle()
            stop.set()
        await producer.join()
        if self.quota is not None:
            self.quota.resume_at = sender.resume_at
        return sender.abort_reason, _sending(self.config, sender, source)

    async def _tick(self, out: RunOutputs) -> None:
        """Every 100 ms: outcomes to the ledger (a killed run forgets at most that much), and
        the progress display."""
        n = 0
        while True:
            await asyncio.sleep(0.1)
            if out.recorder is not None:
                out.recorder.flush()
            if self.quota is not None:
                self.quota.tick()  # the run's requests to the ledger, off the loop
            n += 1
            if n % 3 == 0:
                out.show_progress()


def _known_total(quota: RunQuota | None, only: dict[Path, set[int]] | None) -> int | None:
    """A run's rows before they are read, when known: what the quota's pre-pass read
    (``importer.quota``), else the lines a retry re-sends (for the progress display)."""
    if quota is not None and quota.count is not None and quota.count.read:
        return quota.count.read  # (0: a bound that read no rows; the lines are counted)
    return sum(len(lines) for lines in only.values()) if only is not None else None


def _sender(
    cfg: Config,
    secret: str,
    budget: RequestBudget | None,
    transport_factory: Callable[[Config], Transport],
) -> tuple[Sender | MultiProcessSender, Transport | None]:
    """The run's sender (``send.workers`` processes, or one in this one) and the transport
    to close after it (None for the processes: each has its own). The source links each
    row's primary-key values once (``send.batcher``): the sender, or the --workers parent,
    gets customer tokens and links nothing."""
    spec = _worker_spec(cfg, secret)
    if cfg.send.workers > 1:
        return MultiProcessSender(spec, cfg.send.workers, budget=budget, link_keys=False), None
    transport = transport_factory(cfg)
    return spec.build_sender(transport, budget=budget, link_keys=False), transport


def _sending(cfg: Config, sender: Sender | MultiProcessSender, source: RowFeed) -> Sending:
    """How the run's rows went out, for the summary."""
    cap = cfg.profile().max_items(cfg.job.kind)
    return Sending(
        requests=sender.requests,
        batch_requests=sender.batch_requests,
        bisect_requests=sender.bisect_requests,
        too_big_splits=sender.too_big_splits,
        batch_rows=min(x for x in (cfg.send.batch_rows, cap, sender.batch_limit) if x),
        late_resends=source.late_resends,
        late_resend_failures=source.late_resend_failures,
    )


def _worker_spec(cfg: Config, secret: str) -> WorkerSpec:
    """What the sender (or each of ``send.workers`` processes) is built from: the call and
    its target (carrying the SECRET under ``import-api``: never shown; ``shown_url`` is),
    the rate limit shared by the processes. How many records a request carries is the
    source's (``send.batcher``): the sender only lowers it when the platform finds a batch
    too big."""
    t = cfg.target
    profile = cfg.profile()
    kind = cfg.job.kind
    rate = cfg.send.rate_limit
    return WorkerSpec(
        base_url=t.base_url,
        timeout=t.timeout_s,
        verify=t.tls_verify,
        ca_file=t.ca_file,
        secret=secret,
        kind=kind,
        target=profile.target(kind, t.debug, secret),
        shown_url=t.base_url.rstrip("/") + profile.shown_target(kind, t.debug),
        profile=profile,
        concurrency=cfg.send.concurrency,
        retry=cfg.send.retry,
        # each process paces its share, so together they keep to rate_limit
        rate_limit=rate / cfg.send.workers if rate else None,
        ordered=kind != "event",
        abort_after_signature_failures=cfg.send.abort_after_signature_failures,
        abort_after_failed_rows=cfg.send.abort_after_failed_rows,
        abort_after_same_refusals=cfg.send.abort_after_same_refusals,
        abort_after_failed_requests=cfg.send.abort_after_failed_requests,
    )


class _ProducerThread:
    """The producer thread: iterates ``batches`` and hands each batch with rows to send to
    the loop through ``queue`` (telling ``out.counting`` first); a batch with none is finished
    (``out.finish``) on this thread, leaving the loop thread free. An error is re-raised on the
    loop by ``join``."""

    def __init__(
        self,
        batches: Iterator[BatchState],
        out: RunOutputs,
        queue: asyncio.Queue[BatchState | None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._batches = batches
        self._finish = out.finish
        self._handed = out.counting.handed
        self._queue = queue
        self._loop = loop
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dmimport-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def join(self) -> None:
        """Wait for the thread (not with thread.join() on the loop: the producer's last
        hand-off, the None, completes only when the loop runs the put's done-callback, after
        ``RowFeed.drain`` has taken the None); raise its error, if it met one."""
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            for item in self._batches:
                if len(item.valid) == 0:
                    # nothing to send (all unchanged, done or rejected): report it here
                    self._finish(item)
                    continue
                self._handed(item)
                if not self._hand(item):
                    return
        except BaseException as exc:  # handed to the loop, re-raised there
            self._error = exc
        finally:
            self._hand(None)

    def _hand(self, item: BatchState | None) -> bool:
        """Queue ``item`` for the loop; False when the loop is gone (a second Ctrl-C ended
        it): then there is nobody to hand anything to, and nothing to say."""
        loop = self._loop
        try:
            future = asyncio.run_coroutine_threadsafe(self._queue.put(item), loop)
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


def _paths(
    files: Sequence[str | Path | Source], only: Any, skipped: list[tuple[Path, str]]
) -> list[Path]:
    """The input files of a run: ``only``'s (a retry), else ``files`` expanded; in-memory
    sources (``importer.source``) are not files."""
    if only is not None:
        return sorted(only)
    paths = [f for f in files if not isinstance(f, Source)]
    if paths or len(paths) == len(files):
        return expand_inputs(paths, skipped)
    return []


def _keep_baseline(run: Run, out: RunOutputs, aborted: str | None) -> None:
    """``guard:``: the values of a run let through become the job's baseline once every row
    it sent went through (not aborted, not interrupted, no row failed or left unsent)."""
    counts = out.tally.counts
    undelivered = sum(counts.get(s.label, 0) for s in (Status.FAILED, Status.NOT_SENT))
    if run.ledger is not None and not (aborted or undelivered or run.stopper.interrupted):
        run.gate.keep_baseline(run.ledger, run.config.job_name)


def _open_checked(path: Path | Source, config: Config, problems: list[ConfigProblem]) -> Source:
    """Open an input (an in-memory ``Source`` as it is), refuse a format the run cannot read,
    and add to ``problems`` that of a change set planned for another job or kind (refused
    before anything is sent: its commit would record the rows in the wrong state)."""
    source = path if isinstance(path, Source) else open_source(path, config.input)
    source.refuse_unsupported(config.source_columns())
    problems.extend(foreign_change_set(source, config))
    return source


def _fingerprint(source: Source) -> dict[str, Any]:
    """What the ledger records of an input: a file's fingerprint (resume compares it), an
    in-memory source's name and a one-off token (it is never resumed)."""
    if source.frame is not None:
        return dict(source.frame.fingerprint(str(source.path)))
    return file_fingerprint(source.path)


def _ready_preflight(run: Run, start: RunStart, use_ledger: bool) -> str | None:
    """``run.preflight()`` between the gates of ``importer.ready``: ``input.ready`` on the
    paths before they are opened, the rest on the opened files; an incomplete input refuses
    the run (``InputIncomplete``, exit 7), its summary.json written. A retry (``only``)
    re-sends rows of files it checked already: no gate."""
    said: dict[str, Any] = {
        "config_source": str(run.config_path or ""), "use_ledger": use_ledger,
        "metrics_file": run.metrics_file,
    }  # fmt: skip
    if run.only is None:
        refuse_incomplete(run.config, run.paths, start, **said)
    try:
        secret = run.preflight()
    except TruncatedInput as exc:  # a .gz cut off: an incomplete export, not a bad file
        if run.only is not None:
            raise
        refuse_truncated(run.config, exc, run.paths, start, **said)
    if run.only is None:
        refuse_incomplete(run.config, run.sources, start, **said)
    return secret


def _begin(ledger: Ledger, start: RunStart, report_root: Path, resume: bool) -> RunInfo:
    """Begin the run in the ledger (resuming the job's last run when it may); say what it
    resumes; remove the temporary report files of the job's runs that died (the job's lock
    is held: none of them is live)."""
    info = ledger.begin_run(start.job, start.run_id, start.config_sha, start.files, resume=resume)
    if info.resumed_from is not None:
        _say_resumed(ledger, start.job, info, report_root)
    ended, _ = _run_facts(ledger, start.job)
    remove_dead_temp_files(report_root, start.job, ended)
    return info


def _prune_reports(config: Config, report_root: Path, start: RunStart) -> None:
    """``report.keep_runs``: remove the job's oldest report folders under the run's report
    root, never this run's, a running one's or the one the next run resumes (the ledger
    says which, when the job has one). A failure is a warning: the run is over and
    reported."""
    keep = config.report.keep_runs
    if not keep:
        return
    ledger = None  # the run's own is closed by now
    path = ledger_path(config)
    if config.state.enabled and path.is_file():
        try:
            ledger = Ledger(path)
        except DmImportError as exc:
            log.warning("report.keep_runs: old report folders kept: %s", exc)
            return
    try:
        ended, protect = _run_facts(ledger, start.job) if ledger is not None else ((), ())
        prune_run_folders(
            report_root, start.job, keep, current=start.run_id, protect=protect, ended=ended
        )
    except (OSError, DmImportError) as exc:
        log.warning("report.keep_runs: old report folders kept: %s", exc)
    finally:
        if ledger is not None:
            ledger.close()


def _run_facts(ledger: Ledger, job: str) -> tuple[set[str], set[str]]:
    """The job's runs the ledger knows have ended, and those whose report folders stay: the
    running ones and the one the next run would resume (the latest, if not done)."""
    records = ledger.runs(job, limit=-1)
    running = {r.run_id for r in records if r.status == "running"}
    ended = {r.run_id for r in records} - running
    latest = next((r for r in records if r.status != "refused"), None)
    if latest is not None and latest.status in RESUMABLE:
        running.add(latest.run_id)
    return ended, running


def _say_resumed(ledger: Ledger, job: str, info: RunInfo, report_root: Path) -> None:
    """Say, before anything is sent, which run this one resumes, how it ended (with its
    reason, from its ``summary.json`` when its report folder is under ``report_root``) and
    how many rows it delivered: those are skipped. Logged to ``importer.resume`` (INFO; the
    CLI prints it on stderr)."""
    rid = info.resumed_from
    assert rid is not None
    record = ledger.run(rid)
    how = record.status if record is not None else "unfinished"
    if record is not None and record.finished:
        ended = datetime.fromisoformat(record.finished).astimezone()
        today = datetime.now().astimezone().date()
        how += " " + ended.strftime("%H:%M" if ended.date() == today else "%Y-%m-%d %H:%M")
    why = _ended_why(report_root / f"{job}-{rid}" / "summary.json")
    if why:
        how += (" " if why.startswith("by ") else ": ") + why
    n = ledger.delivered(job, info)
    logging.getLogger("importer.resume").info(
        "resuming run %s (%s): %s rows it delivered are skipped", rid, how, f"{n:,}"
    )


def _ended_why(summary: Path) -> str | None:
    """Why the run whose ``summary.json`` this is stopped (its abort reason, or the signal
    that interrupted it), if it says."""
    try:
        said = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(said, dict):
        return None
    if said.get("interrupted"):
        return f"by {said['interrupted']}"
    aborted = said.get("aborted")
    return str(aborted) if aborted else None


def _default_transport(config: Config) -> Transport:
    t = config.target
    return StreamTransport(t.base_url, timeout=t.timeout_s, verify=t.tls_verify, ca_file=t.ca_file)


#: ``input`` keys that decide whether a run starts, not what it sends (``importer.ready``)
_READY_KEYS = {"ready", "min_rows", "min_size_ratio"}


def _config_hash(config: Config) -> str:
    """What decides the bodies and where they go: the effective config (overrides included)
    without `send`, `report` and `state`, so a resume with another --concurrency, report
    folder or ``ledger=`` path (the API's) still resumes."""
    relevant = config.model_dump_json(
        exclude={"send": True, "report": True, "state": True, "input": _READY_KEYS}
    )
    return hashlib.sha256(relevant.encode()).hexdigest()
