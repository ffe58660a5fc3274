"""Pacing: at most ``rate`` request starts per second, shared by a sender's workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """A shared pacing limiter: at most ``rate`` request starts per second across workers."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0

    async def acquire(self) -> None:
        """Reserve the next free slot (first come, first served), then wait for it."""
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self.sleep(slot - now)
