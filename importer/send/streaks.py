"""Failures in a row, counted for the whole run (all sender processes together)."""

from __future__ import annotations

import contextlib
from typing import Any


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

    def row(self, failed: bool) -> int:
        """Count a row's final outcome; the rows failed in a row so far."""
        v = self._v
        if not failed:
            if v[self.ROWS]:
                with self._lock:
                    v[self.ROWS] = 0
            return 0
        with self._lock:
            v[self.ROWS] += 1
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
