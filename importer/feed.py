"""The sender's request source in a run: mapped batches in, batched requests out.

``RowFeed`` takes the ``BatchState``s the producer thread queues, hands their valid rows in file
order to a ``send.batcher.Batcher`` and gives the sender the requests it packs; each answer goes
back to its row's ``BatchState`` (the rows of one request may belong to several). Batches span
the producer's read batches: a ``--changed-only`` run that finds 2% of its rows changed still
fills ``send.batch_rows``-record requests, since requests are what the daily quota counts.

When a partial batch is sent (the flush policy):

- a batch is sent as soon as it is full (``send.batch_rows`` records or ``send.batch_bytes``);
- at the end of the input every batch still open is sent;
- a partial batch is sent when the sender is idle (no request of the run is waiting for its
  answer) and the producer has handed over nothing for ``LINGER_S`` seconds: the producer is
  slow (a huge changed-only file, a slow disk), and the rows should not wait indefinitely;
- a partial batch is sent when the rows held in open batches come from the producer's
  batches of more than ``MAX_PINNED_ROWS`` rows in all, which all stay in memory until their
  rows are answered (a rare event name, a very sparse changed-only run: below 1% changed,
  requests carry fewer than 500 rows).

``MAX_PINNED_ROWS`` (50,000) trades requests for memory. A producer batch waiting for its
answers holds about 400 bytes a row in Python objects and 200 in Arrow buffers (its report
lines, identities, items), so the bound keeps what sparse rows pin to about 30 MB, however
large the file; at 200,000 it was about 120 MB. What it costs is at most one partial request
per 50,000 rows read, only in a run sending under 1% of its rows: a 1,000,000-row
changed-only run finding 1,000 rows changed makes 20 requests of 50 rows instead of 2 of
500 (5 of 200 with the old bound), 18 requests of a 10,000-a-day quota. A dense run never
reaches it (the held rows span one read batch), and what its requests in flight pin is
bounded by ``send.concurrency`` x ``send.batch_rows``, not by the file.

Which means, for a nightly job: the requests a run makes are ``ceil(rows to send /
batch_rows)`` plus at most one partial batch per event name, per flush after a stalled
producer, and per ``MAX_PINNED_ROWS`` rows read.

Per-customer order: the batcher links each row's primary-key values (``KeyLinks``), once, so
the sender (single-process, or the ``--workers`` parent) gets customer tokens and links
nothing.

Late application (``send.settle_s``): for users and deletes it watches the answers
(``send.lateapply.LateApplies``); once the sender has answered every row of the files
(``settle``, called when its ``run`` is over), it waits ``settle_s`` and queues the last
delivered row of each customer a timed-out request could have overwritten, once, for a second
``run`` of the sender over this source: batched and ordered like any row. ``late_resends`` and
``late_resend_failures`` count them for the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from .config import Config
from .map import Mapper
from .outcomes import RowResult, Status
from .outputs import RunOutputs
from .producer import BatchState
from .send import Request, RequestSource
from .send.batcher import Batcher
from .send.lateapply import LateApplies

log = logging.getLogger("importer")

#: seconds the producer may hand over nothing, while the sender is idle, before a partial
#: batch is sent
LINGER_S = 2.0
#: the producer's batches whose rows may wait in open batches at once (each stays in memory)
MAX_PINNED_ROWS = 50_000
#: the longest a wait of the source lasts before it looks again whether the run stopped
POLL_S = 0.5


class _SenderLike(Protocol):
    @property
    def stopping(self) -> bool: ...

    def on_stop(self, callback: Callable[[], None]) -> None: ...


class _Resent:
    """The token of a row re-sent after a late application could have overwritten it."""

    __slots__ = ()


_RESENT = _Resent()


class _Inbox:
    """The producer's queue, read without losing a batch to a wait that timed out: one
    ``get`` stays pending across waits until it delivers."""

    def __init__(self, queue: asyncio.Queue[BatchState | None], wake: asyncio.Event) -> None:
        self.queue = queue
        self.wake = wake
        self._getter: asyncio.Future[BatchState | None] | None = None

    def take(self) -> tuple[bool, BatchState | None]:
        """(True, what the producer queued) if it queued something, else (False, None)."""
        getter = self._getter
        if getter is not None:
            if not getter.done():
                return False, None
            self._getter = None
            return True, getter.result()
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    async def wait(self, timeout: float) -> None:
        """Until the producer queues something, ``wake`` is set, or ``timeout`` passed."""
        if self._getter is None:
            self._getter = asyncio.ensure_future(self.queue.get())
        self.wake.clear()
        waker = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait(
                (self._getter, waker), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waker.cancel()

    async def get(self) -> BatchState | None:
        """The next batch (or the end), however long it takes."""
        getter, self._getter = self._getter, None
        return await (getter if getter is not None else self.queue.get())


class _Answers(RequestSource):
    """The answers side of ``RowFeed``: each row's result back to its ``BatchState``, the
    rows of a request that share one result at once (``answered``)."""

    _unanswered: int
    _wake: asyncio.Event
    late: LateApplies | None
    late_resends: int
    late_resend_failures: int
    recorder: Any
    answered_counts: Any
    finish: Callable[[BatchState], None]

    def on_result(self, token: Any, result: RowResult) -> None:
        self._take((token,), result)

    def answered(self, tokens: Sequence[Any], results: Sequence[RowResult], on_result: Any) -> None:
        if on_result != self.on_result:  # a caller's own callback: row by row
            super().answered(tokens, results, on_result)
            return
        start, n = 0, len(results)
        while start < n:  # runs of rows sharing one result (a request's, usually)
            result = results[start]
            end = start + 1
            while end < n and results[end] is result:
                end += 1
            self._take(tokens[start:end] if start or end < n else tokens, result)
            start = end

    def _take(self, tokens: Sequence[Any], result: RowResult) -> None:
        """``tokens``' rows share ``result``: recorded per batch, a batch's rows at once."""
        self._unanswered -= len(tokens)
        if not self._unanswered:
            self._wake.set()
        status = result.status
        late = self.late
        if late is not None and status is not Status.NOT_SENT and late.concerns(result.ambiguous):
            for owner, i, keys in tokens:  # per row, once some request timed out
                if owner is not _RESENT:
                    items = owner.mapped.items
                    item = items[i] if items is not None else None
                    late.answered(keys, item, status is Status.OK, result.ambiguous)
        state: Any = None
        rows: list[int] = []
        for token in tokens:
            if token[0] is not state:
                if rows:
                    self._record(state, rows, result)
                state, rows = token[0], []
            rows.append(token[1])
        if rows:
            self._record(state, rows, result)

    def _record(self, state: Any, rows: list[int], result: RowResult) -> None:
        status = result.status
        if state is _RESENT:
            self.late_resends += len(rows)
            if status is not Status.OK:
                self.late_resend_failures += len(rows)
            return
        state.record_rows(rows, result, self.recorder)
        if status is not Status.NOT_SENT:
            self.answered_counts[status.label] += len(rows)
        state.remaining -= len(rows)
        if state.remaining == 0 and state.dispatched:
            self.finish(state)


class RowFeed(_Answers):
    """Hands the sender batched requests from the batches the producer queued, and each
    answer back to its row's batch (``on_result``), on the loop thread (see the module
    docstring)."""

    def __init__(
        self,
        queue: asyncio.Queue[BatchState | None],
        sender: Any,
        out: RunOutputs,
        config: Config,
        mapper: Mapper,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.finish = out.finish
        self.answered_counts = out.answered
        self.recorder = out.recorder
        send = config.send
        kind = config.job.kind
        self.batcher = Batcher(
            kind, config.profile(), batch_rows=send.batch_rows, batch_bytes=send.batch_bytes
        )
        self.ordered = self.batcher.ordered
        self.event = mapper.event
        self.settle_s = send.settle_s
        # an upsert naming some primary keys may not go again (``LateApplies``); a delete may
        # (a delete-only run creates nobody its re-send could remove)
        primary_keys = tuple(config.job.primary_keys) if kind == "user" else ()
        self.late = LateApplies(primary_keys) if self.ordered and self.settle_s > 0 else None
        #: rows re-sent after a late application, and those of them not delivered
        self.late_resends = 0
        self.late_resend_failures = 0
        self.clock = clock
        self._state: BatchState | None = None
        self._rows: Iterator[tuple[int, bytes, Any, bytes | None]] = iter(())
        self._taken = 0  # the rows of the producer's batches taken so far
        self._eof = False
        self._lock = asyncio.Lock()
        #: rows handed to the sender and not yet answered
        self._unanswered = 0
        self._last_input = clock()
        self._wake = asyncio.Event()
        self._inbox = _Inbox(queue, self._wake)
        on_stop = getattr(sender, "on_stop", None)
        if on_stop is not None:
            on_stop(self._wake.set)

    # -- requests out ----------------------------------------------------------------------------

    async def next_request(self) -> Request | None:
        async with self._lock:
            return await self._next()

    async def _next(self) -> Request | None:
        b = self.batcher
        while True:
            if self.sender.stopping:
                return None
            limit = getattr(self.sender, "batch_limit", None)
            if limit:
                b.limit_rows(limit)
            request = b.pop()
            if request is not None:
                return self._hand(request)
            if self._state is not None:
                self._feed()
                continue
            if b.held and self._pinned() >= MAX_PINNED_ROWS:
                return self._hand_flush()
            took, item = self._inbox.take()
            if took:
                if item is None:
                    self._eof = True
                else:
                    self._start(item)
                continue
            if self._eof:
                request = b.flush()
                if request is not None:
                    return self._hand(request)
                return None
            if not b.held:
                await self._wait(None)
                continue
            # a partial batch is open and the producer has nothing right now
            if self._unanswered:
                await self._wait(None, idle=True)
                continue
            left = LINGER_S - (self.clock() - self._last_input)
            if left <= 0:
                return self._hand_flush()
            await self._wait(left)

    def _hand(self, request: Request) -> Request:
        self._unanswered += len(request.rows)
        return request

    def _hand_flush(self) -> Request | None:
        request = self.batcher.flush()
        return self._hand(request) if request is not None else None

    def _pinned(self) -> int:
        """How many rows the producer's batches that the rows held in the batcher span have
        (they all stay in memory until their rows are answered)."""
        oldest = self.batcher.oldest
        if oldest is None or oldest[0] is _RESENT:
            return 0
        state: BatchState = oldest[0]
        return self._taken - state.order

    # -- rows in ---------------------------------------------------------------------------------

    def _start(self, state: BatchState) -> None:
        """Begin handing ``state``'s valid rows to the batcher."""
        state.order = self._taken
        self._taken += state.mapped.n
        self._last_input = self.clock()
        mapped = state.mapped
        valid = state.valid
        if mapped.items is None:  # read after the run stopped: nothing to send
            state.dispatched = True
            state.remaining = 0
            self.finish(state)
            return
        items = mapped.items.take(valid)
        keys: Any = mapped.keys if self.ordered else None
        events = mapped.events.take(valid) if mapped.events is not None else None
        self._state = state
        self._rows = _rows(valid.tolist(), items, keys, events)

    def _feed(self) -> None:
        """Add the current batch's rows until a request is full or the batch is used up."""
        state = self._state
        assert state is not None
        b = self.batcher
        fixed = self.event
        if self.ordered:
            for i, item, keys, _ in self._rows:
                tokens = b.link(keys)
                b.add((state, i, tokens), item, event=fixed, tokens=tokens)
                if b.ready:
                    return
        else:
            for i, item, _, event in self._rows:
                b.add((state, i, ()), item, event=event if event is not None else fixed)
                if b.ready:
                    return
        state.dispatched, self._state = True, None
        state.mapped.keys.release()  # every row is linked: ~200 bytes a row less while it waits
        if state.remaining == 0:
            self.finish(state)

    async def _wait(self, timeout: float | None, idle: bool = False) -> None:
        """Wait for the producer's next batch, a stop, the timeout, or (``idle``) the last
        answer of the requests in flight."""
        if timeout is None or timeout > POLL_S:
            timeout = POLL_S  # a stop is seen within this, whatever the sender
        await self._inbox.wait(timeout)
        if idle and not self._unanswered:
            self._last_input = max(self._last_input, self.clock())

    # -- the end ---------------------------------------------------------------------------------

    async def settle(self) -> bool:
        """After the sender has answered every row of the files: if a timed-out request
        could have been applied after a later row of its customer, wait ``settle_s`` and
        queue those customers' last rows again (True: run the sender over this source once
        more), else False. A stop cuts the wait short (and then nothing is queued)."""
        if self.late is None:
            return False
        resends = self.late.resends()
        if self.late.withheld:
            _warn_withheld(self.late.withheld)
        if not resends:
            return False
        if self.sender.stopping:
            _warn_not_resent(len(resends))
            return False
        log.warning(
            "%d customers had a request time out and a later row delivered: the platform may "
            "still apply the timed-out request; waiting %g s (send.settle_s), then sending "
            "each one's last row again",
            len(resends),
            self.settle_s,
        )
        end = self.clock() + self.settle_s
        while not self.sender.stopping and (left := end - self.clock()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(left, POLL_S))
        if self.sender.stopping:
            _warn_not_resent(len(resends))
            return False
        for resend in resends:
            self.batcher.add((_RESENT, 0, resend.tokens), resend.item, tokens=resend.tokens)
        return True

    async def drain(self) -> None:
        """After the sender stopped (done or aborted): account for every row left behind
        (they stay ``not_sent``), and for the batches the producer still hands over."""
        for token in self.batcher.drain():
            state = token[0]
            if state is not _RESENT:
                state.remaining -= 1
                self._finish_if_done(state)
        state = self._state
        if state is not None:
            self._state = None
            state.dispatched = True
            state.remaining -= sum(1 for _ in self._rows)
            self._finish_if_done(state)
        while not self._eof:
            item = await self._inbox.get()
            if item is None:
                self._eof = True
                break
            item.dispatched = True
            item.remaining = 0
            self.finish(item)

    def _finish_if_done(self, state: BatchState) -> None:
        if state.remaining <= 0 and state.dispatched:
            self.finish(state)


def _rows(
    valid: list[int], items: list[bytes], keys: Any, events: list[bytes] | None
) -> Iterator[tuple[int, bytes, Any, bytes | None]]:
    """(row, item, its primary-key values, its event literal) of each valid row."""
    for n, i in enumerate(valid):
        yield i, items[n], keys[i] if keys is not None else None, events[n] if events else None


def _warn_withheld(customers: int) -> None:
    """Customers a late application could have left with older values whose last row is not
    sent again: it names only some of the primary keys (``send.lateapply``)."""
    log.warning(
        "%d customers had a request time out and a later row delivered, and their last row "
        "names only some of the primary keys: it is not sent again (sent again, it could undo "
        "a later row of another customer the platform joined to it in an earlier run); if "
        "the platform applied the timed-out request late, they hold older values: run the "
        "same command with --full to send every row again",
        customers,
    )


def _warn_not_resent(customers: int) -> None:
    """The run stopped before the late re-sends went: their rows are delivered in the ledger,
    so a resumed run skips them; say so, and how to put them right."""
    log.warning(
        "%d customers' last rows were not sent again (the run stopped before the late "
        "re-sends): a timed-out request may have left them with older values on the "
        "platform, and running the same command again skips them (they were delivered); "
        "run it with --full to send every row again",
        customers,
    )
