"""Failures in a row, counted for the whole run (all sender processes together), and the
bounds on them that stop a run when the platform is down."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ..config import RetryOptions
from ..outcomes import Outcome, Response, describe


class FailureStreaks:
    """Failures in a row, for the whole run: rows that used every attempt, and requests.

    One process: plain numbers. ``--workers``: a shared ``multiprocessing`` array, so the
    children count together and the bounds hold per run, not per process. A success resets a
    count; with the array, it takes the lock only when there is something to reset.
    """

    ROWS, REQUESTS, SINCE = 0, 1, 2

    def __init__(self, shared: Any = None) -> None:
        # reads and resets-to-zero checks go to the raw array, without the lock
        self._v: Any = shared.get_obj() if shared is not None else [0.0, 0.0, 0.0]
        self._lock: Any = shared.get_lock() if shared is not None else contextlib.nullcontext()

    def peek(self) -> tuple[int, int, float]:
        """(rows failed in a row, requests failed in a row, when the requests' run began)."""
        v = self._v
        return int(v[self.ROWS]), int(v[self.REQUESTS]), v[self.SINCE]

    @staticmethod
    def shared(ctx: Any) -> Any:
        """The array to hand to child processes (as a ``Process`` argument)."""
        return ctx.Array("d", 3)

    def row(self, failed: bool, rows: int = 1) -> int:
        """Count the final outcome of ``rows`` rows (one request's); the rows failed in a row
        so far."""
        v = self._v
        if not failed:
            if v[self.ROWS]:
                with self._lock:
                    v[self.ROWS] = 0
            return 0
        with self._lock:
            v[self.ROWS] += rows
            return int(v[self.ROWS])

    def request(self, failed: bool, now: float) -> tuple[int, float]:
        """Count one attempt; the requests failed in a row so far and since when (seconds)."""
        v = self._v
        if not failed:
            if v[self.REQUESTS]:
                with self._lock:
                    v[self.REQUESTS] = 0
            return 0, 0.0
        with self._lock:
            if not v[self.REQUESTS]:
                v[self.SINCE] = now
            v[self.REQUESTS] += 1
            return int(v[self.REQUESTS]), now - v[self.SINCE]


class FailureBounds:
    """The run-wide bounds on failures in a row (``send.abort_after_failed_rows`` and
    ``send.abort_after_failed_requests``; 0: no bound), counted in ``streaks``.

    ``row`` and ``request`` count one outcome and return the reason to abort when this
    process's count reached a bound; ``reached`` says whether any process's did.
    """

    def __init__(
        self,
        rows: int,
        requests: int,
        retry: RetryOptions,
        streaks: FailureStreaks,
        clock: Callable[[], float],
        same_refusals: int = 0,
    ) -> None:
        self.rows = rows
        self.requests = requests
        self.retry = retry
        self.streaks = streaks
        self.clock = clock
        self.same_refusals = same_refusals
        #: the platform's last refusal (errcode, errmsg), and how many rows in a row got it
        self._refusal: tuple[int, str] | None = None
        self._refused = 0

    def settled(self, failed: bool, refused: bool, outcome: Outcome, rows: int) -> str | None:
        """Count the final outcome of ``rows`` rows for both row bounds (``row``,
        ``refusal``); the reason to abort, if one is reached."""
        return self.row(failed, outcome, rows) or self.refusal(outcome, refused, rows)

    def refusal(self, outcome: Outcome, refused: bool, rows: int = 1) -> str | None:
        """Rows the platform refused (a row errcode) with the very same answer, one after
        another, and no row delivered between them: a mistake of the job, not of the rows
        (a property the account does not define, a value format it never takes). Resolving a
        batch whose every row is refused costs about two requests a row (bisection), so the
        run stops after ``same_refusals`` of them instead of spending the day's requests on
        the rest, which stay ``not_sent`` for the run after the fix. Counted per sender
        process. An ok row resets the count; a failure without an answer leaves it."""
        if not isinstance(outcome, Response):
            return None
        if not refused:
            if outcome.ok:
                self._refusal, self._refused = None, 0
            return None
        said = (int(outcome.errcode), outcome.errmsg)
        if said != self._refusal:
            self._refusal, self._refused = said, 0
        self._refused += rows
        if not self.same_refusals or self._refused < self.same_refusals:
            return None
        return (
            f"the platform refused {self._refused} rows in a row with the same answer "
            f"({describe(outcome)}): that is the job's mistake, not the rows' (a property "
            "the account does not define, a format it does not take); stopped before the "
            "day's requests go to the rest (finding the refused rows of a batch costs about "
            "two requests a row): fix the cause, then run the same command again: a fix on "
            "the platform (the property defined in the account) leaves the config as it is, "
            "and the run resumes without sending the delivered rows again; a fix in the "
            "config starts a new run that sends every row (send.abort_after_same_refusals)"
        )

    def row(self, failed: bool, outcome: Outcome, rows: int = 1) -> str | None:
        """Rows that end on a retryable failure, every attempt used, one after another: the
        platform is down (or unreachable). Stop after ``rows`` of them rather than spend the
        night failing every row in turn; the rest stay ``not_sent``, for the next run to
        resume. Any answer that is not a retryable failure resets the count. A batch counts
        its rows: a request of 500 rows that used every attempt is 500 rows failed."""
        count = self.streaks.row(failed, rows)
        if not self.rows or count < self.rows:
            return None
        return (
            f"the platform failed {self.rows} rows in a row after "
            f"{self.retry.max_attempts} attempt{'s' if self.retry.max_attempts > 1 else ''} "
            f"each (last: {describe(outcome)}); "
            "stopped so that the rest can be sent when it is back: run the same command again"
        )

    def request(self, failed: bool, outcome: Outcome) -> str | None:
        """Requests that failed one after another (429, 5xx, 10000, no answer): the platform
        is down, or turns every request away. Rows wait between attempts (a ``Retry-After``
        up to ``retry_after_cap_s``), so with long waits the row bound takes hours to be
        reached; this one stops the run after ``requests`` such requests in a row, once they
        span at least ``max_backoff_s`` (an outage shorter than the longest backoff is what
        retries are for)."""
        count, span = self.streaks.request(failed, self.clock())
        if not self.requests or count < self.requests or span < self.retry.max_backoff_s:
            return None
        return (
            f"the platform failed the last {self.requests} requests in a row "
            f"(last: {describe(outcome)}); stopped so that the rest can be sent when it is "
            "back: run the same command again"
        )

    def reached(self) -> bool:
        """Whether the failures of any process of the run reached a bound."""
        rows, requests, since = self.streaks.peek()
        return bool(self.rows and rows >= self.rows) or bool(
            self.requests
            and requests >= self.requests
            and self.clock() - since >= self.retry.max_backoff_s
        )
