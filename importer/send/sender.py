"""The sender: pushes requests through a transport, concurrently, with retries.

Design, and why:

- The unit of work is a ``Request``: the rows it carries (opaque tokens, each answered once
  through ``on_result``), their encoded records (``items``), and the keys that order it. One
  request becomes one HTTP request (``Profile.body`` joins the items: one item the single
  form, more the batch form), or several when it must be split (``importer.send.delivery``:
  a batch the platform finds too big is halved, a row error answered for a batch is resolved
  by bisection).
- ``concurrency`` worker coroutines pull requests from one shared source, so at most
  ``concurrency`` requests are in flight and nothing is queued per row: memory is bounded by
  the batches the pipeline has handed over (a bounded queue), not by the file.
- Per-customer order: for ``user`` and ``user_delete`` a request waits until every earlier
  request of the same customer has finished (bisection and retries included). Requests are
  registered in file order at the moment they are taken, so a ``userDelete`` never overtakes
  the ``user`` before it for the same phone, while different customers go in parallel. "The
  same customer" is transitive, as on the platform, which merges the customers a record
  matches: once a row names phone P and e-mail E together, a later row with P alone and one
  with E alone are ordered too (``KeyLinks``). Events carry no such order: the platform
  de-duplicates them on ``(event, event_id)``.
- Retries follow ``RetryOptions`` (the config's ``send.retry``), in a plain loop where every
  attempt, the first included, goes the same way: exponential backoff with full jitter,
  ``Retry-After`` honoured up to ``retry_after_cap_s``, only outcomes the profile marks
  retryable. A ``Retry-After`` longer than the cap (the daily quota is spent) is not waited
  for: the run aborts, saying when to resume, and the rest stays ``not_sent``.
- Every attempt first takes one request from the run's ``budget`` (``send.daily_quota``),
  when there is one; once it refuses, the sender stops (``quota_exhausted``) and the rest
  stays ``not_sent`` for the next run to resume.
- Fatal outcomes (10003, 20000, 10002 under ``import-api``, a repeated 20004, a TLS error, a
  4xx without the platform's answer) stop the run: workers stop taking requests, in-flight
  requests finish, the rest stay ``not_sent``. So do the run-wide bounds on failures in a row
  (``FailureBounds``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from ..config import RetryOptions
from ..errcodes import ErrCode
from ..outcomes import (
    Outcome,
    Response,
    RowResult,
    Status,
    TransportFailure,
    TransportKind,
    not_sent,
)
from ..protocol import ERRMSG_MAX_CHARS, Profile
from ..secrets import Redactor
from .delivery import Delivery
from .keylinks import KeyLinks
from .ratelimit import RateLimiter
from .retry import parse_retry_after, wait_for
from .streaks import FailureBounds, FailureStreaks
from .transport import Transport
from .verdicts import Verdicts

OnResult = Callable[[Any, RowResult], None]


class Request(NamedTuple):
    """One request: the records it carries, and what orders it.

    ``rows`` are opaque tokens, one per record, each handed back once to ``on_result``;
    ``items`` the records, encoded (``Profile.body`` joins them into the request body, one
    item giving the single form, more the batch form); ``keys`` the ordering tokens of all its
    rows (the customers it must not overtake), empty when unordered (events); ``row_keys`` the
    ordering tokens of each row (empty when unordered); ``event`` the event name as a JSON
    string literal (events only: a request carries one event name).
    """

    rows: tuple[Any, ...]
    items: tuple[bytes, ...]
    keys: tuple[Any, ...] = ()
    row_keys: tuple[tuple[Any, ...], ...] = ()
    event: bytes | None = None


class RequestSource:
    """What the sender pulls requests from: ``next_request`` returns a ``Request``, or None
    at the end. The pipeline implements it over mapped batches; tests over a list."""

    async def next_request(self) -> Request | None:  # pragma: no cover
        raise NotImplementedError

    def answered(
        self, tokens: Sequence[Any], results: Sequence[RowResult], on_result: OnResult
    ) -> None:
        """The results of one request's rows (``tokens``, in order), from the sender: each to
        ``on_result``. A source may take them in runs instead (rows of one request usually
        share one ``RowResult``): the pipeline's does, for its own ``on_result``."""
        for token, result in zip(tokens, results, strict=True):
            on_result(token, result)


class Budget(Protocol):
    """The run's request budget (``importer.send.budget.RequestBudget``): ``take()`` one
    request before every attempt; False: the budget is spent, make no request."""

    def take(self) -> bool: ...


class Attempts(NamedTuple):
    """What the attempts at one body came to: the last outcome (None: no answer to report,
    the row stays ``not_sent``), whether the policy would still retry it, the attempts made,
    and whether one of them got no answer after the whole body went out (``ambiguous``)."""

    outcome: Outcome | None
    retryable: bool
    made: int
    ambiguous: bool


class _Stops:
    """The stop state ``Sender`` and ``MultiProcessSender`` share: ``abort_reason`` (the
    platform's fault, or a full disk) and ``stop_reason`` (a signal, the budget spent), the
    first of each kept."""

    abort_reason: str | None
    stop_reason: str | None

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def stopping(self) -> bool:
        """Aborted, or told to stop: no new request is taken, no new attempt is made."""
        return self.abort_reason is not None or self.stop_reason is not None


#: ``stop_reason`` when the run's request budget refused a request
QUOTA_STOP = "the run's request budget (send.daily_quota) is spent"


class _Stopping(_Stops):
    """How one sender stops: ``abort`` and ``stop`` keep their first reason, wake whatever
    waits for them (``on_stop`` callbacks, the retry waits of ``_pause``)."""

    sleep: Callable[[float], Awaitable[None]]

    def __init__(self) -> None:
        #: set when the run stops (an abort, or ``stop()``): cuts retry waits short
        self._stopping: asyncio.Event | None = None
        self._on_stop: list[Callable[[], None]] = []
        self.stop_reason: str | None = None
        self.abort_reason: str | None = None
        self.abort_errcode: int | None = None

    def abort(self, reason: str, errcode: int | None = None) -> None:
        if self.abort_reason is None:
            self.abort_reason = reason
            self.abort_errcode = errcode
        self._wake()

    def stop(self, reason: str) -> None:
        """Stop without it being the platform's fault (a signal): requests in flight end, rows
        waiting for a retry keep the outcome they have, the rest stay ``not_sent``. Call it on
        the sender's event loop."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the sender stops or aborts: a source whose
        ``next_request`` can wait a long time wakes its waiters with it."""
        self._on_stop.append(callback)

    def _wake(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            callback()

    async def _pause(self, seconds: float) -> None:
        """``sleep(seconds)``, cut short when the run stops."""
        if self.stopping:
            return
        if self._stopping is None:
            self._stopping = asyncio.Event()
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        waker = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()


class Sender(_Stopping):
    """Delivers requests; calls ``on_result(token, RowResult)`` once per row it takes.

    ``target`` (``profile.target(kind, debug, secret)``) carries the SECRET under import-api,
    never shown; ``shown_url`` names the endpoint in messages. ``request_ids``: the first id
    and the step (``--workers`` child ``i`` of ``n``: ``i + 1, i + 1 + n, ...``, run-unique).

    Counters, for the summary: ``requests`` (HTTP requests made, retries included),
    ``batch_requests`` (those carrying more than one record, bisection's excepted),
    ``bisect_requests`` (those made to resolve a row error answered for a batch),
    ``too_big_splits`` (requests halved because the platform found them too big) and
    ``batch_limit`` (the largest batch that may still be sent after such halving; None if
    never lowered).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        secret: str,
        kind: str,
        target: str,
        profile: Profile,
        shown_url: str | None = None,
        concurrency: int = 32,
        retry: RetryOptions | None = None,
        rate_limit: float | None = None,
        ordered: bool = True,
        abort_after_signature_failures: int = 5,
        abort_after_failed_rows: int = 0,
        abort_after_failed_requests: int = 0,
        abort_after_same_refusals: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        link_keys: bool = True,
        streaks: FailureStreaks | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: Budget | None = None,
        request_ids: tuple[int, int] = (1, 1),
    ) -> None:
        self.transport = transport
        self._secret = secret
        self._redact = Redactor((secret,))
        self.kind = kind
        self._target = target
        self.shown_url = shown_url if shown_url is not None else self._redact(target)
        self.profile = profile
        self.concurrency = concurrency
        self.retry = retry or RetryOptions()
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        self.ordered = ordered
        self.verdicts = Verdicts(profile, kind, self.shown_url, abort_after_signature_failures)
        self.bounds = FailureBounds(
            abort_after_failed_rows,
            abort_after_failed_requests,
            self.retry,
            streaks or FailureStreaks(),
            clock,
            abort_after_same_refusals,
        )
        super().__init__()
        self.sleep = sleep
        self.budget = budget
        self.rng = rng or random.Random()
        #: the budget refused a request: the run stopped, the rest is ``not_sent``
        self.quota_exhausted = False
        #: when the platform said to come back (a ``Retry-After`` past the cap), as a
        #: ``time.time()`` value; None if it did not
        self.resume_at: float | None = None
        self._last: dict[Any, asyncio.Future[None]] = {}
        #: None: the keys a request comes with are already tokens (a ``--workers`` child: the
        #: parent linked them)
        self.links = KeyLinks() if link_keys else None
        self._next_id, self._id_step = request_ids
        self.requests = 0
        self.batch_requests = 0
        self.bisect_requests = 0
        self.too_big_splits = 0
        self.batch_limit: int | None = None

    def __repr__(self) -> str:
        return f"Sender(kind={self.kind!r}, url={self.shown_url!r})"

    async def run(self, source: RequestSource, on_result: OnResult) -> None:
        self._stopping = asyncio.Event()
        if self.stopping:
            self._stopping.set()
        workers = [
            asyncio.create_task(self._worker(source, on_result)) for _ in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()

    async def _worker(self, source: RequestSource, on_result: OnResult) -> None:
        loop = asyncio.get_running_loop()
        last = self._last
        while not self.stopping:
            request = await source.next_request()
            if request is None:
                return
            keys = request.keys
            done: asyncio.Future[None] | None = None
            if self.ordered and keys:
                order = keys if self.links is None else link_request(self.links, request)
                # Register in file order before any await, then wait for earlier requests of
                # the same customer.
                waits = [f for k in order if (f := last.get(k)) is not None]
                done = loop.create_future()
                for k in order:
                    last[k] = done
            try:
                if done is not None:
                    for f in waits:
                        if not f.done():
                            await f
                if self.stopping or self._bound_reached():
                    results = [not_sent()] * len(request.rows)
                else:
                    results = await self.deliver(request)
                source.answered(request.rows, results, on_result)
                del request, results  # its rows hold read batches: not while awaiting the next
            finally:
                if done is not None:
                    done.set_result(None)
                    for k in order:
                        if last.get(k) is done:
                            del last[k]

    async def deliver(self, request: Request) -> list[RowResult]:
        """Send one request, split and bisected as needed (``Delivery``), with the retry
        policy; one result per row, in order. Never raises for a network problem."""
        return await Delivery(self, request).run()

    def new_request_id(self) -> int:
        """The id of the next request (one body and its retries): unique in the run."""
        rid = self._next_id
        self._next_id += self._id_step
        return rid

    def lower_limit(self, size: int) -> None:
        """The platform found a batch too big: no request of more than ``size`` records from
        now on (``batch_limit``)."""
        self.too_big_splits += 1
        if self.batch_limit is None or size < self.batch_limit:
            self.batch_limit = size

    def settle(self, outcome: Outcome, attempts: Attempts, request_id: int, rows: int) -> RowResult:
        """The result of the ``rows`` rows whose request (``request_id``) ended on ``outcome``
        after ``attempts``; counted for the bound on rows failed in a row."""
        if not self.aborted:
            refused = self.verdicts.bisects(outcome)
            if reason := self.bounds.settled(attempts.retryable, refused, outcome, rows):
                self.abort(reason)
        return _result(outcome, attempts.made, request_id, rows, attempts.ambiguous)

    async def attempts(self, body: bytes, items: int = 1, bisecting: bool = False) -> Attempts:
        """Attempt ``body`` (carrying ``items`` records) until an outcome is not retryable,
        the attempts run out, or the run stops. Before the n-th retry it waits
        ``wait_for(retry, n, last outcome)``, cut short by a stop; a wait cut short, or a
        bound reached meanwhile, makes no further attempt. A ``Retry-After`` longer than
        ``retry_after_cap_s`` aborts the run instead (outcome None: the rows are not sent);
        so does the budget's refusal before the first attempt (it stops the run). A batch
        the platform finds too big is not retried as is: it is split (``Delivery``)."""
        policy = self.retry
        count = 0
        ambiguous = False
        outcome: Outcome | None = None
        retryable, closes = False, 0
        while True:
            if self.limiter is not None:
                await self.limiter.acquire()
            budget = self.budget
            if budget is not None and not budget.take():
                self.quota_exhausted = True
                self.stop(QUOTA_STOP)
                return Attempts(outcome, retryable, count, ambiguous)
            outcome, retryable = await self._attempt(body, items, bisecting)
            count, closes = count + 1, closes + _closed_unanswered(outcome)
            if isinstance(outcome, TransportFailure):
                ambiguous = ambiguous or outcome.sent
                if items > 1 and outcome.too_big:
                    return Attempts(outcome, False, count, ambiguous)
            if retryable and isinstance(outcome, TransportFailure) and outcome.retry_after:
                hinted = parse_retry_after(outcome.retry_after)  # holds for every request
                if hinted is not None and hinted > policy.retry_after_cap_s:
                    if not self.stopping:  # refused unread: not sent, even once the run stopped
                        self._come_back_later(outcome, hinted)
                    return Attempts(None, retryable, count, ambiguous)
            if not retryable or self.stopping:
                return Attempts(outcome, retryable, count, ambiguous)
            if count >= policy.max_attempts:
                return _last(Attempts(outcome, retryable, count, ambiguous), items, closes)
            await self._pause(wait_for(policy, count, outcome, self.rng))
            if self._bound_reached():
                return Attempts(outcome, retryable, count, ambiguous)

    def _come_back_later(self, outcome: TransportFailure, seconds: float) -> None:
        """The platform asks for a wait longer than ``retry_after_cap_s`` (its daily quota is
        spent): abort, saying when to run again."""
        self.resume_at = time.time() + seconds
        when = datetime.now().astimezone() + timedelta(seconds=seconds)
        self.abort(
            f"the platform answered {outcome.message} with Retry-After {seconds:.0f} s, longer "
            f"than send.retry.retry_after_cap_s ({self.retry.retry_after_cap_s:g} s): stopped "
            "waiting; the rest is not sent: run the same command again after "
            f"{when:%Y-%m-%d %H:%M:%S %Z}"
        )

    async def _attempt(self, body: bytes, items: int, bisecting: bool) -> tuple[Outcome, bool]:
        """One request; returns the outcome and whether the policy should retry it."""
        headers = self.profile.auth_headers(self._secret, body)
        self.requests += 1
        if bisecting:
            self.bisect_requests += 1
        elif items > 1:
            self.batch_requests += 1
        outcome = await self.transport.post(self._target, body, headers)
        if self._secret:
            # a platform (or a gateway before it) that echoes the request's headers or URL in
            # its message would otherwise put the SECRET in the results, the summary, the
            # screen; so would a transport error that quotes the URL
            if isinstance(outcome, Response):
                errmsg = self._redact(outcome.errmsg, cut_at=ERRMSG_MAX_CHARS)
                if errmsg != outcome.errmsg:
                    outcome = replace(outcome, errmsg=errmsg)
            elif (message := self._redact(outcome.message)) != outcome.message:
                outcome = replace(outcome, message=message)
        verdict = self.verdicts.judge(outcome)
        if verdict.abort is not None:
            self.abort(verdict.abort, verdict.errcode)
        retryable = verdict.retry
        if not (isinstance(outcome, TransportFailure) and outcome.stale):
            # a stale keep-alive connection counts neither way
            reason = self.bounds.request(retryable, outcome)
            if reason is not None and not self.aborted:
                self.abort(reason)
        return outcome, retryable

    def _bound_reached(self) -> bool:
        """True (and stop) when another process's failures reached a bound of the run: that
        process aborts with the reason; this one only stops taking rows and making attempts."""
        if self.stopping:
            return True
        if self.bounds.reached():
            self.stop("another sender process reached a failure bound")
            return True
        return False


def link_request(links: KeyLinks, request: Request) -> tuple[Any, ...]:
    """The customer tokens ``request`` must not overtake: each row's values are linked as one
    customer (``row_keys``; without them, ``keys`` are one row's), never the rows of a batch
    together (they are different customers). Every token a row's linking returns is kept:
    one that a later row merged into another still orders what registered under it."""
    row_keys = request.row_keys
    if not row_keys:
        return links.tokens(request.keys)
    if len(row_keys) == 1:
        return links.tokens(row_keys[0])
    tokens = links.tokens
    return tuple(dict.fromkeys(t for keys in row_keys for t in tokens(keys)))


def _result(
    outcome: Outcome, attempts: int, request_id: int, rows: int, ambiguous: bool
) -> RowResult:
    if isinstance(outcome, Response):
        code = int(outcome.errcode)
        status = Status.OK if code == ErrCode.OK else Status.FAILED
        return RowResult(
            status, code, outcome.errmsg, attempts, outcome.latency_ms, request_id, ambiguous
        )
    message = outcome.message
    if attempts > 1:
        message = f"{message} (after {attempts} attempts)"
    if rows == 1 and outcome.too_big:
        message = f"{message}: the record is too big for the platform, even alone in a request"
    return RowResult(
        Status.FAILED, None, message, attempts, outcome.latency_ms, request_id, ambiguous
    )


def _closed_unanswered(outcome: Outcome) -> bool:
    """The whole request went out and the connection closed with no answer at all."""
    return (
        isinstance(outcome, TransportFailure)
        and outcome.kind is TransportKind.CONNECTION
        and outcome.sent
        and outcome.http_status is None
    )


def _last(attempts: Attempts, items: int, closes: int) -> Attempts:
    """The attempts of a request, all spent. When every one of them went out whole and the
    platform closed the connection without a word, and the request carries several records,
    it is taken as too big (as a 413): a body too big for the platform but small enough to go
    out whole into the socket buffers before the close looks exactly so. The batch is then
    halved (``Delivery``) rather than its rows failed."""
    outcome = attempts.outcome
    if items > 1 and closes == attempts.made and isinstance(outcome, TransportFailure):
        return attempts._replace(outcome=replace(outcome, while_sending=True), retryable=False)
    return attempts
