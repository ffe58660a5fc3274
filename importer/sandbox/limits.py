"""The account's call limits: ``rate_limit_per_s`` and ``daily_quota`` (both off by default).

``Limits.admit()`` is asked once per API request, before anything else (before the fault
draw): None admits the request and counts it against the quota; a number refuses it with
HTTP 429 and says how many seconds ``Retry-After`` should say. A refused request counts
against nothing and stores nothing.

- The rate limit is a token bucket holding ``rate_limit_per_s`` tokens (at least 1), refilled
  at that rate: N requests a second on average, a burst of at most N. A client that paces
  itself at N a second is never refused. ``Retry-After``: the seconds until a token is back,
  rounded up (at least 1).
- The daily quota counts the admitted requests of the account's day (midnight to midnight in
  ``quota_timezone``, Asia/Shanghai by default). Past it: ``Retry-After`` is the number of
  seconds to the next midnight there, rounded up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .schema import Schema


class Limits:
    """The limits of one account, and its day. ``clock``: seconds since the epoch."""

    def __init__(self, schema: Schema, clock: Callable[[], float] = time.time) -> None:
        self.rate = schema.rate_limit_per_s
        self.quota = schema.daily_quota
        self.zone = ZoneInfo(schema.quota_timezone)
        self.clock = clock
        self._capacity = max(1.0, self.rate)
        self._tokens = self._capacity
        self._last = clock()
        #: the account's current day (``YYYY-MM-DD``) and the requests admitted in it
        self.day = ""
        self.used = 0
        self._day_end = 0.0

    def today(self, now: float | None = None) -> str:
        """The account's day at ``now`` (default: the clock's now); a new day resets the
        quota count."""
        if now is None:
            now = self.clock()
        if now >= self._day_end:
            local = datetime.fromtimestamp(now, self.zone)
            self.day = local.date().isoformat()
            midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
            self._day_end = midnight.replace(tzinfo=self.zone).timestamp()
            self.used = 0
        return self.day

    def seconds_to_midnight(self, now: float) -> int:
        self.today(now)
        return max(1, math.ceil(self._day_end - now))

    def admit(self) -> int | None:
        """None: the request may go on (it is counted). Else the ``Retry-After`` seconds."""
        now = self.clock()
        self.today(now)
        if self.quota and self.used >= self.quota:
            return self.seconds_to_midnight(now)
        if self.rate:
            tokens = min(self._capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if tokens < 1.0:
                self._tokens = tokens
                return max(1, math.ceil((1.0 - tokens) / self.rate))
            self._tokens = tokens - 1.0
        self.used += 1
        return None

    def describe(self, retry_after: int) -> str:
        """The plain-text body of a 429."""
        if self.quota and self.used >= self.quota:
            return f"429 Too Many Requests: daily quota of {self.quota} requests used ({self.day})"
        return f"429 Too Many Requests: more than {self.rate:g} requests a second"
