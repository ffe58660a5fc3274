"""The producer thread's work: read each input file's batches, map them, ask the ledger which
rows to send, and build the bodies of those -- everything a batch needs before the asyncio
loop sends it (pyarrow releases the GIL for most of it).

A batch travels as a ``BatchState``: the batch as read, its ``Mapped`` rows, and one outcome
per row, filled in as the sender answers; ``importer.outputs`` writes its report lines once
every row has one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .config import Config
from .duplicates import BatchDuplicates
from .errors import LoadError
from .lake.planned import PLANNED_ELSEWHERE, PlannedHashes
from .ledger import BatchClassifier, BatchOutcomes, Duplicates, Held, OutcomeRecorder, Verdicts
from .load import Batch, InputOptions, ReadStats, Source, iter_batches
from .map import Mapped, Mapper
from .outcomes import INTERRUPTED_MESSAGE, NOT_SENT_MESSAGE, QUOTA_MESSAGE, RowResult, Status
from .report import ResultRows

#: the report label of each status code, by code
_LABELS = [Status(s).label for s in range(len(Status))]


class BatchState:
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
        "order",
        "remaining",
        "request_id",
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
        duplicates: BatchDuplicates | None = None,
        planned_elsewhere: np.ndarray | None = None,
    ) -> None:
        self.batch = batch
        self.mapped = mapped
        self.file_index = file_index
        n = mapped.n
        ok = mapped.errcode == 0
        self.status = np.where(ok, int(valid_status), int(Status.REJECTED)).astype(np.int8)
        self.errmsg: list[str | None] = list(mapped.reason)
        if duplicates is not None and duplicates.any:  # job.duplicates: never sent
            self.status[duplicates.skip] = int(Status.SKIPPED_DUPLICATE)
            self.status[duplicates.reject] = int(Status.REJECTED)
            for i, reason in duplicates.reasons.items():
                self.errmsg[i] = reason
            ok = ok & duplicates.send
        if planned_elsewhere is not None and planned_elsewhere.any():  # a change set's row
            self.status[planned_elsewhere] = int(Status.REJECTED)
            for i in np.flatnonzero(planned_elsewhere).tolist():
                self.errmsg[i] = PLANNED_ELSEWHERE
            ok = ok & ~planned_elsewhere
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
        self.attempts = np.zeros(n, dtype=np.int32)
        self.latency: list[float | None] = [None] * n
        #: the request that finally carried each row (``RowResult.request_id``)
        self.request_id: list[int | None] = [None] * n
        #: the rows of the batches the sender's source took before this one (set there)
        self.order = 0
        self.remaining = len(self.valid)
        self.dispatched = False
        #: what the ledger records of each row, made on the first outcome
        self.ledger_fields: BatchOutcomes | None = None

    def record(self, i: int, result: RowResult, recorder: OutcomeRecorder | None) -> None:
        """Row ``i``'s answer, kept for its report line and (unless not sent) recorded by
        the ledger's ``recorder``."""
        self.record_rows([i], result, recorder)

    def record_rows(
        self, rows: list[int], result: RowResult, recorder: OutcomeRecorder | None
    ) -> None:
        """The answer ``rows`` share (the rows of one request, usually), as ``record``: the
        numbers at once, the per-row lists in one loop."""
        status = result.status
        at = np.asarray(rows, dtype=np.int64)
        self.status[at] = int(status)
        self.attempts[at] = result.attempts
        ok = status == Status.OK
        errcode = None if ok else result.errcode
        errmsg = None if ok else result.errmsg
        latency = round(result.latency_ms, 2)
        request_id = result.request_id
        codes, messages, latencies, ids = self.errcode, self.errmsg, self.latency, self.request_id
        for i in rows:
            codes[i] = errcode
            messages[i] = errmsg
            latencies[i] = latency
            ids[i] = request_id
        if status is not Status.NOT_SENT and recorder is not None and recorder.full is None:
            if self.ledger_fields is None:
                # the batch's fields at once: a few microseconds a row less on the loop
                self.ledger_fields = recorder.outcomes(self.mapped, self.file_index, self.valid)
            recorder.record_rows(self.ledger_fields, rows, status.label)

    def result_rows(self, kind: str, *, interrupted: bool, quota: bool = False) -> ResultRows:
        """The batch's report lines, its bad records included, in line order; held rows
        are left out (reported at the end of the run). ``interrupted``: rows not sent say
        so; ``quota``: they say the daily quota ran out."""
        batch, mapped = self.batch, self.mapped
        status = [_LABELS[s] for s in self.status.tolist()]
        lines: list[int] = mapped.lines.tolist()
        identity = list(mapped.identity)
        errcode = self.errcode
        errmsg = self.errmsg
        column = list(mapped.column)
        attempts: list[int] = self.attempts.tolist()
        latency = self.latency
        request_id = list(self.request_id)
        not_sent = (
            INTERRUPTED_MESSAGE if interrupted else QUOTA_MESSAGE if quota else NOT_SENT_MESSAGE
        )
        for i in np.flatnonzero(self.status == int(Status.NOT_SENT)).tolist():
            if errmsg[i] is None or errmsg[i] == NOT_SENT_MESSAGE:
                errmsg[i] = not_sent
        for bad in batch.bad:
            lines.append(bad.line)
            identity.append("")
            status.append("rejected")
            errcode.append(None)
            errmsg.append(bad.reason)
            column.append(bad.column)
            attempts.append(0)
            latency.append(None)
            request_id.append(None)
        order = np.argsort(np.asarray(lines, dtype=np.int64), kind="stable")
        if len(self.held):  # reported at the end of the run
            keep = np.ones(len(lines), dtype=bool)
            keep[self.held] = False
            order = order[keep[order]]
        pick = order.tolist()
        return ResultRows(
            file=str(batch.source.path),
            kind=kind,
            line=[lines[i] for i in pick],
            identity=[identity[i] for i in pick],
            status=[status[i] for i in pick],
            errcode=[errcode[i] for i in pick],
            errmsg=[errmsg[i] for i in pick],
            column=[column[i] for i in pick],
            attempts=[attempts[i] for i in pick],
            latency_ms=[latency[i] for i in pick],
            request_id=[request_id[i] for i in pick],
        )


class Reading:
    """How far the producer has read a run's files, for the progress display: the rows read
    (report lines: bad records included, held rows too, the re-read of held rows not), the
    bytes of the files as stored read so far and in all, and whether every file was read."""

    __slots__ = ("_done_bytes", "_stats", "bytes_total", "done", "rows")

    def __init__(self, sources: Sequence[Source]) -> None:
        self.rows = 0
        self.done = False
        self.bytes_total = 0
        for source in sources:
            with contextlib.suppress(OSError):
                if source.frame is None:
                    self.bytes_total += source.path.stat().st_size
        self._done_bytes = 0
        self._stats: ReadStats | None = None

    @property
    def bytes_read(self) -> int:
        """The bytes read so far (of the files done, and of the file being read)."""
        if self.done:
            return self.bytes_total
        return self._done_bytes + (self._stats.position if self._stats is not None else 0)

    def next_file(self, source: Source, stats: ReadStats) -> None:
        """``source`` is read next, its position in ``stats``."""
        if self._stats is not None:
            self._done_bytes += self._stats.position
        self._stats = stats

    def read(self, state: BatchState) -> None:
        self.rows += state.mapped.n + len(state.batch.bad)


class Producer:
    """Reads, maps and classifies a run's batches, in file order (``batches``)."""

    def __init__(
        self,
        config: Config,
        mapper: Mapper,
        sources: Sequence[Source],
        *,
        valid_status: Status,
        only: dict[Path, set[int]] | None,
        stop: threading.Event,
        duplicates: Duplicates | None = None,
    ) -> None:
        self.config = config
        #: ``job.duplicates``' verdicts (``importer.duplicates.find_duplicates``)
        self.duplicates = duplicates
        self.input: InputOptions = config.input
        self.mapper = mapper
        self.sources = sources
        self._paths = [s.path for s in sources]
        self.valid_status = valid_status
        self.only = only
        #: set when nothing more will be sent: the batches still read get no bodies
        self.stop = stop
        self.columns = config.source_columns()
        #: how far the files have been read (``Reading``)
        self.reading = Reading(sources)
        #: per source index: a change set file's planned body hashes (None: not one)
        self._planned: dict[int, PlannedHashes | None] = {}

    def batches(
        self,
        build_bodies: bool,
        classifier: Callable[[], BatchClassifier] | None = None,
        report_held: Callable[[Held], None] | None = None,
    ) -> Iterator[BatchState]:
        """Every batch of every source. ``classifier`` (resume, changed-only) makes the
        classifier that gives the ledger's verdicts, called in the thread that iterates (its
        ledger connection is that thread's own); ``report_held`` receives the held rows it
        decides at the end."""
        reader = classifier() if classifier is not None else None
        try:
            reading = self.reading
            for index, source in enumerate(self.sources):
                wanted = self.only.get(source.path) if self.only is not None else None
                stats = ReadStats()
                reading.next_file(source, stats)
                try:
                    for batch in iter_batches(source, self.input, self.columns, stats=stats):
                        if wanted is not None:
                            batch = batch.only(wanted)
                        state = self._state(batch, index, build_bodies, reader)
                        reading.read(state)
                        yield state
                except LoadError as exc:
                    # The file broke mid-way (e.g. truncated gzip): what was read is
                    # reported; the failure itself becomes a report line too.
                    failure = Batch.failure(source, str(exc))
                    mapped = self.mapper.map_table(failure.table, failure.lines, build_bodies=False)
                    state = BatchState(failure, mapped, self.valid_status, None, index)
                    reading.read(state)
                    yield state
            reading.done = True
            if reader is not None and reader.holds_rows:
                held = reader.held()
                if report_held is not None:
                    report_held(held)
                yield from self._resend(held, build_bodies)
        finally:
            if reader is not None:
                reader.close()

    def _state(
        self,
        batch: Batch,
        index: int,
        build_bodies: bool,
        classifier: BatchClassifier | None = None,
    ) -> BatchState:
        bodies = build_bodies and not self.stop.is_set()
        if index not in self._planned:
            self._planned[index] = PlannedHashes.of(self.sources[index])
        planned = self._planned[index]
        # a change set's rows are checked against the plan's hashes (validate too)
        hashes = bodies or (planned is not None and not self.stop.is_set())
        mapped = self.mapper.map(batch, build_bodies=hashes)
        dups = None
        if self.duplicates is not None and self.duplicates.found:
            kind = self.config.job.kind
            dups = BatchDuplicates(self.duplicates, mapped, index, self._paths, kind)
        elsewhere = planned.differs(mapped) if planned is not None else None
        verdict = None
        if classifier is not None and bodies:
            rows = mapped.ok & dups.send if dups is not None and dups.any else None
            if elsewhere is not None and elsewhere.any():
                rows = (mapped.ok if rows is None else rows) & ~elsewhere
            verdict = classifier.classify(mapped, index, rows)
        state = BatchState(batch, mapped, self.valid_status, verdict, index, dups, elsewhere)
        if bodies and len(state.valid) and mapped.items is not None:
            mapped.items.build()  # here, not on the loop thread
            if mapped.events is not None:
                mapped.events.build()
            if self.config.job.kind != "event":
                mapped.keys.build()  # what orders the rows, here rather than on the loop
        return state

    def _resend(self, held: Held, build_bodies: bool) -> Iterator[BatchState]:
        """The end of a changed-only user run: the customers whose last row changed have
        their held rows read again and sent, in file order (the earlier rows may hold values
        the last leaves empty). Those superseded by an unchanged last row were reported
        ``skipped`` (the last one ``unchanged``) by ``report_held``."""
        for index in sorted(held.resend):
            source = self.sources[index]
            with contextlib.suppress(LoadError):  # reported by the first pass
                for batch in iter_batches(source, self.input, self.columns):
                    batch = batch.only(held.resend[index])
                    if len(batch.lines) == 0:
                        continue
                    yield self._state(batch, index, build_bodies)
