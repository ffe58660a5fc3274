"""One request's way to its rows' results: splitting and bisection (contract, "Batches").

A ``Request`` usually becomes one HTTP request. It becomes several when:

- it carries more records than the platform takes: a batch answered HTTP 413, or whose
  connection closed while its body was being sent (``TransportFailure.too_big``), is halved
  and each half sent; the smaller size is remembered for the rest of the run
  (``Sender.batch_limit``), and every later request bigger than it is split into near-equal
  pieces before it is sent. One record that is too big alone fails with a message saying so;
- the platform answers a row error for a batch: one errcode comes back for the whole
  request, so which record failed, and whether the good ones were stored, is unknown. The
  batch is split in halves, each sent, down to single records. A record is ``ok`` when a
  request carrying it answered 0, otherwise it takes the errcode of its own single-record
  request: exactly what sending the records one at a time gives.

One shortcut keeps that equivalence and saves requests: when every record of the first half
of a failing batch ended ``ok``, the row error came from the second half, whose request
would answer it again; so it is not sent as a whole but bisected at once, and a single
record reached this way takes that errcode (and the id of the request that answered it)
without a request of its own. One bad record among ``n`` costs between ``log2(n)`` and
``2 log2(n)`` extra requests (about ``1.5 log2(n)`` on average), many bad records at most
``2n - 2``.

The pieces are sent one after another, in file order, by the worker that took the request,
each with the full retry policy; the customers' ordering future of the request resolves only
when every piece is final (``Sender._worker``). A piece never starts once the run stops: its
rows stay ``not_sent``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from ..outcomes import Outcome, RowResult, Status, TransportFailure, not_sent

if TYPE_CHECKING:
    from .sender import Attempts, Request, Sender


class Delivery:
    """Delivers one request through ``sender``; ``run()`` gives one result per row."""

    __slots__ = ("_ambiguous", "request", "results", "sender")

    def __init__(self, sender: Sender, request: Request) -> None:
        self.sender = sender
        self.request = request
        self.results: list[RowResult | None] = [None] * len(request.items)
        #: rows carried by a request that was split or bisected after an attempt of it got
        #: no answer (None: no such row, the common case)
        self._ambiguous: list[bool] | None = None

    async def run(self) -> list[RowResult]:
        n = len(self.request.items)
        await self._send(0, n, False)
        results = self.results
        ambiguous = self._ambiguous
        if ambiguous is None and None not in results:
            return results  # type: ignore[return-value]
        out: list[RowResult] = []
        for i, r in enumerate(results):
            if r is None:
                r = not_sent()
            if ambiguous is not None and ambiguous[i] and not r.ambiguous:
                r = replace(r, ambiguous=True)
            out.append(r)
        return out

    async def _send(self, lo: int, hi: int, bisecting: bool) -> None:
        """Send the records ``lo:hi`` as one request (split first when bigger than the
        run's ``batch_limit``) and settle them, splitting or bisecting as the answer says."""
        sender = self.sender
        size = hi - lo
        limit = sender.batch_limit
        if limit is not None and size > limit:
            for a, b in _pieces(lo, hi, -(-size // limit)):
                await self._send(a, b, bisecting)
            return
        if sender.stopping:
            return
        request = self.request
        items = request.items if size == len(request.items) else request.items[lo:hi]
        body = sender.profile.body(sender.kind, items, request.event)
        rid = sender.new_request_id()
        attempts = await sender.attempts(body, size, bisecting)
        outcome = attempts.outcome
        if outcome is None:
            return  # no answer to report: the run stopped; the rows stay not_sent
        if size > 1:
            if isinstance(outcome, TransportFailure) and outcome.too_big:
                self._mark(lo, hi, attempts)
                half = lo + (size + 1) // 2
                sender.lower_limit(half - lo)
                await self._send(lo, half, bisecting)
                await self._send(half, hi, bisecting)
                return
            if sender.verdicts.bisects(outcome):
                self._mark(lo, hi, attempts)
                await self._bisect(lo, hi, outcome, attempts, rid)
                return
        result = sender.settle(outcome, attempts, rid, size)
        self.results[lo:hi] = [result] * size

    async def _bisect(
        self, lo: int, hi: int, failed: Outcome, attempts: Attempts, rid: int
    ) -> None:
        """The records ``lo:hi`` (more than one) answered the row error ``failed`` (request
        ``rid``, or an ancestor's when this piece was never sent): send each half."""
        mid = lo + (hi - lo + 1) // 2
        await self._send(lo, mid, True)
        results = self.results
        if all(r is not None and r.status is Status.OK for r in results[lo:mid]):
            # the first half is good: the error is in the second, which would answer it again
            if hi - mid == 1:
                results[mid] = self.sender.settle(failed, attempts, rid, 1)
            else:
                await self._bisect(mid, hi, failed, attempts, rid)
        else:
            await self._send(mid, hi, True)

    def _mark(self, lo: int, hi: int, attempts: Attempts) -> None:
        if attempts.ambiguous:
            if self._ambiguous is None:
                self._ambiguous = [False] * len(self.results)
            self._ambiguous[lo:hi] = [True] * (hi - lo)


def _pieces(lo: int, hi: int, count: int) -> Iterator[tuple[int, int]]:
    """``lo:hi`` cut into ``count`` consecutive pieces whose sizes differ by one at most."""
    q, r = divmod(hi - lo, count)
    a = lo
    for j in range(count):
        b = a + q + (1 if j < r else 0)
        yield a, b
        a = b
