"""The sender: pushes prepared bodies through a transport, concurrently, with retries.

Design, and why:

- ``concurrency`` worker coroutines pull rows from one shared cursor, so at most
  ``concurrency`` requests are in flight and nothing is queued per row: memory is bounded by
  the batches the pipeline has handed over (a bounded queue), not by the file.
- Per-customer order: for ``user`` and ``user_delete`` a row waits until every earlier row of
  the same customer has finished. Rows are registered in file order at the moment they are
  taken, so a ``userDelete`` never overtakes the ``user`` before it for the same phone, while
  different customers go in parallel. "The same customer" is transitive, as on the platform,
  which merges the customers a record matches: once a row names phone P and e-mail E together,
  a later row with P alone and one with E alone are ordered too (``KeyLinks``). Events carry no
  such order: the platform de-duplicates them on ``(eventName, event_id)``.
- Retries use tenacity, built from the config (``RetryPolicy``): exponential backoff with full
  jitter, ``Retry-After`` honoured up to a cap, only outcomes the contract marks retryable. The
  first attempt runs outside tenacity so the common, successful path costs nothing extra.
- Fatal outcomes (10003, 20000, a repeated 20004, a TLS or path error that will fail every
  row) stop the run: workers stop taking rows, in-flight rows finish, the rest stay
  ``not_sent``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

from ..errcodes import Category, ErrCode
from ..outcomes import (
    Outcome,
    Response,
    RowResult,
    Status,
    TransportFailure,
    not_sent,
)
from ..protocol import ERRMSG_MAX_CHARS, Profile, auth_headers
from .keylinks import KeyLinks
from .ratelimit import RateLimiter
from .retry import RetryPolicy
from .streaks import FailureStreaks
from .transport import Transport


class RowSource:
    """What the sender pulls rows from. ``next_row`` returns ``(token, body, keys)`` or None.

    The pipeline implements it over mapped batches; tests can implement it over a list.
    ``token`` is opaque to the sender and handed back in ``on_result``.
    """

    async def next_row(self) -> tuple[Any, bytes, tuple[str, ...]] | None:  # pragma: no cover
        raise NotImplementedError


class Sender:
    """Delivers rows; calls ``on_result(token, RowResult)`` once per row it takes."""

    def __init__(
        self,
        transport: Transport,
        *,
        secret: str,
        path: str,
        profile: Profile,
        concurrency: int = 32,
        retry: RetryPolicy | None = None,
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
        self.path = path
        self.profile = profile
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        self.ordered = ordered
        self.abort_after_signature_failures = abort_after_signature_failures
        self.abort_after_failed_rows = abort_after_failed_rows
        self.abort_after_failed_requests = abort_after_failed_requests
        self.streaks = streaks or FailureStreaks()
        self.clock = clock
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
        #: None: the keys a row comes with are already tokens (a ``--workers`` child: the
        #: parent linked them)
        self.links = KeyLinks() if link_keys else None
        self.requests = 0

    def __repr__(self) -> str:
        return f"Sender(path={self.path!r}, concurrency={self.concurrency})"

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def stopping(self) -> bool:
        """Aborted, or told to stop: no new row is taken, no new attempt is made."""
        return self.abort_reason is not None or self.stop_reason is not None

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
        ``next_row`` can wait a long time wakes its waiters with it."""
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

    async def run(self, source: RowSource, on_result: Callable[[Any, RowResult], None]) -> None:
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

    async def _worker(self, source: RowSource, on_result: Callable[[Any, RowResult], None]) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            item = await source.next_row()
            if item is None:
                return
            token, body, keys = item
            if not self.ordered or not keys:
                if self._bound_reached():
                    on_result(token, not_sent())
                    continue
                on_result(token, await self.deliver(body))
                continue
            order: tuple[Hashable, ...] = keys
            if self.links is not None:
                order = self.links.tokens(keys)
            # Register in file order before any await, then wait for earlier rows of the same
            # customer.
            waits = [f for k in order if (f := self._last.get(k)) is not None]
            done: asyncio.Future[None] = loop.create_future()
            for k in order:
                self._last[k] = done
            try:
                for f in waits:
                    if not f.done():
                        await f
                if self._bound_reached():
                    on_result(token, not_sent())
                    continue
                on_result(token, await self.deliver(body))
            finally:
                done.set_result(None)
                for k in order:
                    if self._last.get(k) is done:
                        del self._last[k]

    async def _attempt(self, body: bytes) -> tuple[Outcome, bool]:
        """One signed request; returns the outcome and whether the policy should retry it."""
        if self.limiter is not None:
            await self.limiter.acquire()
        headers = auth_headers(self._secret, body, profile=self.profile)
        self.requests += 1
        outcome = await self.transport.post(self.path, body, headers)
        if isinstance(outcome, Response) and self._secret:
            # a platform (or a gateway before it) that echoes the request's headers in its
            # message would otherwise put the SECRET in the results, the summary, the screen
            errmsg = _without_secret(outcome.errmsg, self._secret)
            if errmsg is not outcome.errmsg:
                outcome = replace(outcome, errmsg=errmsg)
        retryable = self._observe(outcome)
        if not (isinstance(outcome, TransportFailure) and outcome.stale):
            self._count_failed_request(outcome, retryable)
        return outcome, retryable

    def _count_failed_request(self, outcome: Outcome, retryable: bool) -> None:
        """Requests that failed one after another (429, 5xx, 10000, no answer), all
        processes together: the platform is down, or turns every request away. Rows wait
        between attempts (a ``Retry-After`` up to ``retry_after_cap_s``), so with long waits
        ``abort_after_failed_rows`` takes hours to be reached; this bound stops the run after
        ``abort_after_failed_requests`` such requests in a row, once they span at least
        ``max_backoff_s`` (an outage shorter than the longest backoff is what retries are
        for). A stale keep-alive connection counts neither way."""
        count, span = self.streaks.request(retryable, self.clock())
        limit = self.abort_after_failed_requests
        if not limit or count < limit or span < self.retry.max_backoff_s or self.aborted:
            return
        self.abort(
            f"the platform failed the last {limit} requests in a row "
            f"(last: {_describe(outcome)}); stopped so that the rest can be sent when it is "
            "back: run the same command again"
        )

    def _bound_reached(self) -> bool:
        """True (and stop) when another process's failures reached a bound of the run: that
        process aborts with the reason; this one only stops taking rows and making attempts."""
        if self.stopping:
            return True
        rows, requests, since = self.streaks.peek()
        rows_limit = self.abort_after_failed_rows
        requests_limit = self.abort_after_failed_requests
        if (rows_limit and rows >= rows_limit) or (
            requests_limit
            and requests >= requests_limit
            and self.clock() - since >= self.retry.max_backoff_s
        ):
            self.stop("another sender process reached a failure bound")
            return True
        return False

    def _observe(self, outcome: Outcome) -> bool:
        """Classify one attempt (called exactly once per attempt); a fatal outcome aborts."""
        if isinstance(outcome, Response):
            code = ErrCode.lookup(int(outcome.errcode))
            if code is None:
                return False  # a code the seed does not define: report it, do not guess
            if code.category is Category.SUCCESS:
                self._signature_failures = 0
                return False
            if code.category is Category.FATAL:
                self.abort(f"{int(code)} {code.description}: {outcome.errmsg}", int(code))
                return False
            if code.category is Category.FATAL_IF_REPEATED:
                self._signature_failures += 1
                if self._signature_failures >= self.abort_after_signature_failures:
                    self.abort(
                        f"{int(code)} {code.description} {self._signature_failures} times in a "
                        "row: check the SECRET and this machine's clock",
                        int(code),
                    )
                    return False
                return True
            return code.category is Category.RETRYABLE
        if outcome.fatal:
            self.abort(f"{outcome.message}: every request would fail the same way")
            return False
        return outcome.retryable

    async def deliver(self, body: bytes) -> RowResult:
        """Send one body with the retry policy; never raises for a network problem."""
        outcome, retryable, attempts = await self._deliver(body)
        self._count_failed_row(outcome, retryable)
        return _result(outcome, attempts)

    def _count_failed_row(self, outcome: Outcome, retryable: bool) -> None:
        """Rows that end on a retryable failure, every attempt used, one after another: the
        platform is down (or unreachable). Stop after ``abort_after_failed_rows`` of them
        rather than spend the night failing every row in turn; the rest stay ``not_sent``,
        for the next run to resume. Any answer that is not a retryable failure resets it."""
        if self.aborted:
            return
        failed = self.streaks.row(retryable)
        limit = self.abort_after_failed_rows
        if limit and failed >= limit:
            self.abort(
                f"the platform failed {limit} rows in a row after "
                f"{self.retry.max_attempts} attempts each (last: {_describe(outcome)}); "
                "stopped so that the rest can be sent when it is back: run the same command "
                "again"
            )

    async def _deliver(self, body: bytes) -> tuple[Outcome, bool, int]:
        """(last outcome, whether the policy would still retry it, attempts)."""
        first = await self._attempt(body)
        if not first[1] or self.retry.max_attempts <= 1 or self.stopping:
            return first[0], first[1], 1

        policy = self.retry
        pending = [first]
        attempts = 0

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome.result()[0] if state.outcome else first[0]
            return policy.wait_for(state.attempt_number, outcome, self.rng)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait,
            retry=retry_if_result(lambda r: r[1] and not self.stopping),
            sleep=self._pause,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else first,
        )
        last = first
        async for attempt in retrying:
            with attempt:
                # The first attempt already happened outside tenacity (the fast path): replay
                # its outcome so the policy counts it, then make real attempts.
                if pending:
                    last = pending.pop()
                    attempts += 1
                elif not self._bound_reached():  # a wait cut short by a stop: no attempt
                    last = await self._attempt(body)
                    attempts += 1
            if attempt.retry_state.outcome is None or not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(last)
        return last[0], last[1], attempts


def _without_secret(errmsg: str, secret: str) -> str:
    """``errmsg`` with ``secret`` replaced by ``****``, also the start of it that a long message
    was cut after (``ERRMSG_MAX_CHARS``); ``errmsg`` itself when it holds no part of it."""
    head, tail = errmsg[:ERRMSG_MAX_CHARS], errmsg[ERRMSG_MAX_CHARS:]
    if tail.startswith("... ("):
        for k in range(len(secret) - 1, 3, -1):
            if head.endswith(secret[:k]):
                errmsg = f"{head[:-k]}****{tail}"
                break
    if secret in errmsg:
        errmsg = errmsg.replace(secret, "****")
    return errmsg


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, Response):
        return f"{int(outcome.errcode)} {outcome.errmsg}"
    return outcome.message


def _result(outcome: Outcome, attempts: int) -> RowResult:
    if isinstance(outcome, Response):
        code = int(outcome.errcode)
        status = Status.OK if code == ErrCode.OK else Status.FAILED
        return RowResult(status, code, outcome.errmsg, attempts, outcome.latency_ms)
    message = outcome.message
    if attempts > 1:
        message = f"{message} (after {attempts} attempts)"
    return RowResult(Status.FAILED, None, message, attempts, outcome.latency_ms)
