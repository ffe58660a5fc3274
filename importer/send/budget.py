"""The requests a run may still make today: the daily quota, counted for the whole run (all
sender processes together).

The sender calls ``take()`` before every attempt (the first and each retry, bisection halves
included: each is a request the platform counts). ``take()`` says False once the budget is
spent, and the sender stops: the rest stays ``not_sent`` for the next run to resume.

One process: plain numbers. ``--workers``: the parent calls ``share(ctx)`` before it starts
its children and hands the result to each child (a ``Process`` argument, as for
``FailureStreaks``); a child builds ``RequestBudget(shared=...)`` from it. Parent and children
then count in one shared array: ``used`` is the run's requests, whichever process made them.

The parent may move the limit while the run goes (``limit = ...``): the pipeline's tick does,
from the ledger, when another job of the same account spent requests or a new quota day began.
``limit=None`` is no limit (``send.daily_quota: 0``): ``take()`` only counts.
"""

from __future__ import annotations

import contextlib
from typing import Any

_NO_LIMIT = -1


class RequestBudget:
    """The requests a run may make: ``take()`` one before every attempt; ``used``, ``left``.

    ``limit``: how many requests the run may make in all (None: no limit, only counting).
    ``shared``: the array ``share(ctx)`` returned in the parent (a child process's budget).
    """

    USED, LIMIT, REFUSED = 0, 1, 2

    def __init__(self, limit: int | None = None, *, shared: Any = None) -> None:
        if shared is not None:
            self._v: Any = shared.get_obj()
            self._lock: Any = shared.get_lock()
        else:
            self._v = [0, _NO_LIMIT if limit is None else max(0, int(limit)), 0]
            self._lock = contextlib.nullcontext()

    def share(self, ctx: Any) -> Any:
        """Move the counts into an array made by ``ctx`` (a ``multiprocessing`` context, the
        *spawn* one of ``--workers``) and return it, to hand to child processes. Call it before
        the children start; from then on this budget counts in the shared array too."""
        shared = ctx.Array("q", 3)
        with self._lock:
            shared[:] = list(self._v)
            self._v = shared.get_obj()
            self._lock = shared.get_lock()
        return shared

    def take(self) -> bool:
        """One request may start: True, and it is counted; False once the budget is spent
        (nothing counted, and ``exhausted`` becomes True)."""
        v = self._v
        with self._lock:
            limit = v[self.LIMIT]
            if limit != _NO_LIMIT and v[self.USED] >= limit:
                v[self.REFUSED] += 1
                return False
            v[self.USED] += 1
            return True

    @property
    def used(self) -> int:
        """Requests taken so far, by every process of the run."""
        return int(self._v[self.USED])

    @property
    def limit(self) -> int | None:
        """Requests the run may make in all (None: no limit)."""
        limit = int(self._v[self.LIMIT])
        return None if limit == _NO_LIMIT else limit

    @limit.setter
    def limit(self, value: int | None) -> None:
        with self._lock:
            self._v[self.LIMIT] = _NO_LIMIT if value is None else max(0, int(value))

    @property
    def left(self) -> int | None:
        """Requests the run may still make (None: no limit)."""
        limit = self.limit
        return None if limit is None else max(0, limit - self.used)

    @property
    def exhausted(self) -> bool:
        """Some process was refused a request: the budget ran out during the run."""
        return bool(self._v[self.REFUSED])

    def __repr__(self) -> str:
        return f"RequestBudget(used={self.used}, limit={self.limit})"
