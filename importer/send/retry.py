"""The waits between attempts, from the retry settings.

The settings are the config's ``send.retry`` section (``importer.config.RetryOptions``), used
as is: the pipeline hands it to the sender, and ``--workers`` children receive it pickled. The
sender's loop (``Sender.attempts``) asks ``wait_for`` how long to wait before each retry.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime

from ..config import RetryOptions
from ..outcomes import Outcome, TransportFailure


def backoff(retry: RetryOptions, retry_number: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, initial * 2**(n-1))] for the n-th retry."""
    ceiling = min(retry.max_backoff_s, retry.initial_backoff_s * (2 ** (retry_number - 1)))
    return rng.uniform(0.0, ceiling)


def wait_for(retry: RetryOptions, retry_number: int, outcome: Outcome, rng: random.Random) -> float:
    """How long to wait before the ``retry_number``-th retry after ``outcome``.

    A usable ``Retry-After`` wins (capped at ``retry_after_cap_s``); a garbage one falls back
    to the normal backoff. A stale keep-alive connection is retried at once.
    """
    if isinstance(outcome, TransportFailure):
        if outcome.stale:
            return 0.0
        hinted = parse_retry_after(outcome.retry_after)
        if hinted is not None:
            return min(hinted, retry.retry_after_cap_s)
    return backoff(retry, retry_number, rng)


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
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        return max(0.0, when.timestamp() - current)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds
