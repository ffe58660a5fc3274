"""A run's outcomes on their way into the ledger, and the end of its record there.

The loop thread hands each answered row over (``record``: a list append); every 200 rows,
or every 100 ms (``flush``), the buffer goes to a writer thread of its own that commits it,
so that the loop does not wait for SQLite (most of a commit runs without the GIL). Rows that
did not get through are remembered per batch (``undelivered``), for ``dmimport retry``.

A full disk is remembered (``full``), reported once to ``on_full`` (the run stops sending),
and never raised from ``flush``, ``close`` or ``end``: the report still tells what happened,
and the run, left ``running``, is resumed next time.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DiskFullError
from ..outcomes import Status
from .batch import BatchOutcomes, Identities, MappedRows
from .store import Ledger

#: rows buffered on the loop thread before they are handed to the writer
FLUSH_ROWS = 200
_FAILED, _NOT_SENT = int(Status.FAILED), int(Status.NOT_SENT)
_LABELS = [Status(s).label for s in range(len(Status))]


class OutcomeRecorder:
    """Records run ``run_id``'s outcomes in ``ledger`` (begun with ``Ledger.begin_run``)."""

    def __init__(
        self,
        ledger: Ledger,
        job: str,
        run_id: str,
        identities: Identities,
        on_full: Callable[[DiskFullError], None],
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self._identities = identities
        self._on_full = on_full
        #: the full disk the ledger met, if it did: no outcome is recorded after it
        self.full: DiskFullError | None = None
        self._rows: list[tuple[str, int, str, int | None]] = []
        self._failed: list[tuple[str, int, str, str]] = []
        self._failed_lock = threading.Lock()  # undelivered() runs on two threads
        self._writer = _Writer(ledger, job, run_id)

    def outcomes(self, mapped: MappedRows, file_index: int, rows: np.ndarray) -> BatchOutcomes:
        """What ``record`` takes of a batch's ``rows``, made once per batch."""
        return BatchOutcomes(mapped, file_index, rows, self._identities)

    def record(self, outcomes: BatchOutcomes, i: int, status: str) -> None:
        """Row ``i`` of a batch has its final outcome ``status`` (on the loop thread)."""
        self._rows.append(outcomes.item(i, status))
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def record_rows(self, outcomes: BatchOutcomes, rows: list[int], status: str) -> None:
        """Rows ``rows`` of a batch have the final outcome ``status`` (on the loop thread)."""
        self._rows.extend(outcomes.items(rows, status))
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def undelivered(self, file: str, mapped: MappedRows, status: np.ndarray) -> None:
        """Remember the rows of a finished batch of ``file`` that failed or were not sent
        (``status``: a status code per row of ``mapped``)."""
        rows = np.flatnonzero((status == _FAILED) | (status == _NOT_SENT))
        if len(rows) == 0:
            return
        identities = self._identities(mapped, rows)[0]
        items = [
            (file, line, identity, _LABELS[code])
            for line, identity, code in zip(
                mapped.lines[rows].tolist(), identities, status[rows].tolist(), strict=True
            )
        ]
        with self._failed_lock:
            self._failed.extend(items)

    def flush(self) -> None:
        """Hand what is buffered to the writer thread (on the loop thread)."""
        rows, self._rows = self._rows, []
        with self._failed_lock:
            failed, self._failed = self._failed, []
        if (rows or failed) and self.full is None:
            try:
                self._writer.submit(rows, failed)
            except DiskFullError as exc:
                self.full = exc
                self._on_full(exc)

    def close(self) -> None:
        """Hand the last outcomes over and wait until they are committed (a full disk is
        remembered in ``full``, not raised)."""
        self.flush()
        try:
            self._writer.close()
        except DiskFullError as exc:
            self.full = self.full or exc

    def fold(self) -> DiskFullError | None:
        """Fold the run's outcomes into the ledger's rows before the report is finished
        (``Ledger.fold_run``); the full disk that stopped it, if one did."""
        if self.full is not None:
            return None
        try:
            self.ledger.fold_run(self.run_id)
        except DiskFullError as exc:
            self.full = exc
            return exc
        return None

    def end(self, status: str, counts: dict[str, int], exit_code: int) -> DiskFullError | None:
        """The run is over: every outcome committed, the run marked ``status`` (unless the
        ledger's disk is full: then it stays ``running`` and the next run resumes it), the
        ledger closed. Returns the full disk that kept the run from being marked, if any."""
        self.close()
        return self._mark_over(status, counts, exit_code)

    def abandon(self, counts: dict[str, int], exit_code: int) -> None:
        """An error ends the run: commit what can be, mark it ``interrupted`` (resumed by the
        next run), close the ledger. Raises nothing: the error being raised matters more."""
        with contextlib.suppress(Exception):
            self.close()
        self._mark_over("interrupted", counts, exit_code)

    def _mark_over(
        self, status: str, counts: dict[str, int], exit_code: int
    ) -> DiskFullError | None:
        try:
            if self.full is None:
                try:
                    self.ledger.end_run(
                        self.run_id, status=status, counts=counts, exit_code=exit_code
                    )
                except DiskFullError as exc:
                    self.full = exc
                    return exc
            return None
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.ledger.close()


class _Writer:
    """Commits outcomes to the ledger on a thread of its own, in the order handed over.

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
