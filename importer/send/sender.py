"""The sender: pushes requests through a transport, concurrently, with retries.

Design, and why:

- The unit of work is a ``Request``: the rows it carries (opaque tokens, each answered once
  through ``on_result``), its body, and the keys that order it. Today every request carries
  one row; a batch is a request with several.
- ``concurrency`` worker coroutines pull requests from one shared source, so at most
  ``concurrency`` requests are in flight and nothing is queued per row: memory is bounded by
  the batches the pipeline has handed over (a bounded queue), not by the file.
- Per-customer order: for ``user`` and ``user_delete`` a request waits until every earlier
  request of the same customer has finished. Requests are registered in file order at the
  moment they are taken, so a ``userDelete`` never overtakes the ``user`` before it for the
  same phone, while different customers go in parallel. "The same customer" is transitive, as
  on the platform, which merges the customers a record matches: once a row names phone P and
  e-mail E together, a later row with P alone and one with E alone are ordered too
  (``KeyLinks``). Events carry no such order: the platform de-duplicates them on
  ``(eventName, event_id)``.
- Retries follow ``RetryOptions`` (the config's ``send.retry``), in a plain loop where every
  attempt, the first included, goes the same way: exponential backoff with full jitter,
  ``Retry-After`` honoured up to a cap, only outcomes the profile marks retryable.
- Fatal outcomes (10003, 20000, a repeated 20004, a TLS or path error that will fail every
  row) stop the run: workers stop taking requests, in-flight requests finish, the rest stay
  ``not_sent``. So do the run-wide bounds on failures in a row (``FailureBounds``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, NamedTuple

from ..config import RetryOptions
from ..errcodes import Category, ErrCode
from ..outcomes import Outcome, Response, RowResult, Status, TransportFailure, not_sent
from ..protocol import ERRMSG_MAX_CHARS, Profile
from ..secrets import Redactor
from .keylinks import KeyLinks
from .ratelimit import RateLimiter
from .retry import wait_for
from .streaks import FailureBounds, FailureStreaks
from .transport import Transport

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


class _Stops:
    """The stop state ``Sender`` and ``MultiProcessSender`` share: ``abort_reason`` (the
    platform's fault, or a full disk) and ``stop_reason`` (a signal), the first of each kept."""

    abort_reason: str | None
    stop_reason: str | None

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def stopping(self) -> bool:
        """Aborted, or told to stop: no new request is taken, no new attempt is made."""
        return self.abort_reason is not None or self.stop_reason is not None


class Sender(_Stops):
    """Delivers requests; calls ``on_result(token, RowResult)`` once per row it takes."""

    def __init__(
        self,
        transport: Transport,
        *,
        secret: str,
        path: str,
        profile: Profile,
        concurrency: int = 32,
        retry: RetryOptions | None = None,
        rate_limit: float | None = None,
        ordered: bool = True,
        abort_after_signature_failures: int = 5,
        abort_after_failed_rows: int = 0,
        abort_after_failed_requests: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        link_keys: bool = True,
        streaks: FailureStreaks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self._secret = secret
        self._redact = Redactor((secret,))
        self.path = path
        self.profile = profile
        self.concurrency = concurrency
        self.retry = retry or RetryOptions()
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        self.ordered = ordered
        self.abort_after_signature_failures = abort_after_signature_failures
        self.bounds = FailureBounds(
            abort_after_failed_rows,
            abort_after_failed_requests,
            self.retry,
            streaks or FailureStreaks(),
            clock,
        )
        self.sleep = sleep
        #: set when the run stops (an abort, or ``stop()``): cuts retry waits short
        self._stopping: asyncio.Event | None = None
        self._on_stop: list[Callable[[], None]] = []
        self.stop_reason: str | None = None
        self.rng = rng or random.Random()
        self.abort_reason: str | None = None
        self.abort_errcode: int | None = None
        self._signature_failures = 0
        self._last: dict[Any, asyncio.Future[None]] = {}
        #: None: the keys a request comes with are already tokens (a ``--workers`` child: the
        #: parent linked them)
        self.links = KeyLinks() if link_keys else None
        self.requests = 0

    def __repr__(self) -> str:
        return f"Sender(path={self.path!r}, concurrency={self.concurrency})"

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
                order = keys if self.links is None else self.links.tokens(keys)
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
                    result = not_sent()
                else:
                    result = await self.deliver(request.body)
                for token in request.rows:
                    on_result(token, result)
            finally:
                if done is not None:
                    done.set_result(None)
                    for k in order:
                        if last.get(k) is done:
                            del last[k]

    async def _attempt(self, body: bytes) -> tuple[Outcome, bool]:
        """One request; returns the outcome and whether the policy should retry it."""
        if self.limiter is not None:
            await self.limiter.acquire()
        headers = self.profile.auth_headers(self._secret, body)
        self.requests += 1
        outcome = await self.transport.post(self.path, body, headers)
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
        retryable = self._observe(outcome)
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

    def _observe(self, outcome: Outcome) -> bool:
        """Classify one attempt (called exactly once per attempt); a fatal outcome aborts."""
        if isinstance(outcome, Response):
            code = ErrCode.lookup(int(outcome.errcode))
            if code is None:
                return False  # a code the seed does not define: report it, do not guess
            category = self.profile.category(code)
            if category is Category.SUCCESS:
                self._signature_failures = 0
                return False
            if category is Category.FATAL:
                # the platform's message may already start with the code's description
                said = outcome.errmsg
                if not said.startswith(code.description):
                    said = f"{code.description}: {said}"
                self.abort(f"{int(code)} {said}", int(code))
                return False
            if category is Category.FATAL_IF_REPEATED:
                self._signature_failures += 1
                if self._signature_failures >= self.abort_after_signature_failures:
                    self.abort(
                        f"{int(code)} {code.description} {self._signature_failures} times in a "
                        "row: check the SECRET and this machine's clock",
                        int(code),
                    )
                    return False
                return True
            return category is Category.RETRYABLE
        if outcome.fatal:
            self.abort(f"{outcome.message}: every request would fail the same way")
            return False
        return outcome.retryable

    async def deliver(self, body: bytes) -> RowResult:
        """Send one body with the retry policy; never raises for a network problem."""
        outcome, retryable, attempts = await self.attempts(body)
        if not self.aborted:
            reason = self.bounds.row(retryable, outcome)
            if reason is not None:
                self.abort(reason)
        return _result(outcome, attempts)

    async def attempts(self, body: bytes) -> tuple[Outcome, bool, int]:
        """Attempt ``body`` until an outcome is not retryable, the attempts run out, or the
        run stops: (last outcome, whether the policy would still retry it, attempts made).
        Before the n-th retry it waits ``wait_for(retry, n, last outcome)``, cut short by a
        stop; a wait cut short, or a bound reached meanwhile, makes no further attempt."""
        policy = self.retry
        attempts = 0
        while True:
            outcome, retryable = await self._attempt(body)
            attempts += 1
            if not retryable or attempts >= policy.max_attempts or self.stopping:
                return outcome, retryable, attempts
            await self._pause(wait_for(policy, attempts, outcome, self.rng))
            if self._bound_reached():
                return outcome, retryable, attempts


def _result(outcome: Outcome, attempts: int) -> RowResult:
    if isinstance(outcome, Response):
        code = int(outcome.errcode)
        status = Status.OK if code == ErrCode.OK else Status.FAILED
        return RowResult(status, code, outcome.errmsg, attempts, outcome.latency_ms)
    message = outcome.message
    if attempts > 1:
        message = f"{message} (after {attempts} attempts)"
    return RowResult(Status.FAILED, None, message, attempts, outcome.latency_ms)
