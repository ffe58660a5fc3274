"""The retry settings (``send.retry`` in the config) and the waits they give.

``RetryOptions`` is the config section itself: the config validates it, the pipeline hands it
to the sender as is, and ``--workers`` children receive it pickled. The sender's loop
(``Sender.attempts``) asks it how long to wait before each retry.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from ..outcomes import Outcome, TransportFailure


class RetryOptions(BaseModel):
    """How many attempts a row gets for a retryable outcome, and the waits between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: attempts per row, the first included (1: never retry)
    max_attempts: int = Field(default=5, ge=1, le=100)
    #: the first backoff; doubles per retry, with full jitter
    initial_backoff_s: float = Field(default=0.5, ge=0)
    #: cap on one backoff
    max_backoff_s: float = Field(default=30.0, ge=0)
    #: cap on a server's ``Retry-After``
    retry_after_cap_s: float = Field(default=120.0, ge=0)

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(n-1))] for the n-th retry."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * (2 ** (retry_number - 1)))
        return rng.uniform(0.0, ceiling)

    def wait_for(self, retry_number: int, outcome: Outcome, rng: random.Random) -> float:
        """How long to wait before the ``retry_number``-th retry after ``outcome``.

        A usable ``Retry-After`` wins (capped at ``retry_after_cap_s``); a garbage one falls
        back to the normal backoff. A stale keep-alive connection is retried at once.
        """
        if isinstance(outcome, TransportFailure):
            if outcome.stale:
                return 0.0
            hinted = parse_retry_after(outcome.retry_after)
            if hinted is not None:
                return min(hinted, self.retry_after_cap_s)
        return self.backoff(retry_number, rng)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), else None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        return max(0.0, when.timestamp() - current)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds
