"""Per-customer order when the platform applies a timed-out request late.

A request the client gave up on (no answer after the whole body went out: ``RowResult``
``ambiguous``) may still be applied by an overloaded backend, after the client's retry and
after the customer's next row: the customer would end with the older values. The client
cannot tell when, or whether, that happens; it can make sure the newest values land last.

``LateApplies`` watches the answers of ordered kinds (``user``, ``user_delete``) as the sender
gives them: a customer's rows are answered in file order, one at a time (the sender holds a
row back until its customer's earlier row has its final outcome), so "later" is "answered
after". A customer is *affected* once a row of theirs was ambiguous and a later row (or the
ambiguous row itself, after an earlier ambiguous one) was delivered ``ok``. Once the run has
otherwise finished, and ``send.settle_s`` has passed, the pipeline re-sends each affected
customer's last delivered row once (``resends``), batched and ordered like any other row.

Memory: one entry per customer that had an ambiguous row (rare: timeouts), holding the item of
their last delivered row.
"""

from __future__ import annotations

from typing import NamedTuple


class Resend(NamedTuple):
    """A row to send again: its item, and its customer tokens (already linked)."""

    item: bytes
    tokens: tuple[int, ...]


class _Watch:
    __slots__ = ("affected", "last")

    def __init__(self) -> None:
        self.affected = False
        self.last: Resend | None = None


class LateApplies:
    """The customers a late-applied request could leave with older values (see the module
    docstring); ``answered`` once per row, in the order the sender answers them."""

    def __init__(self) -> None:
        self._watch: dict[int, _Watch] = {}

    def __len__(self) -> int:
        """Customers watched (they had an ambiguous row)."""
        return len(self._watch)

    def concerns(self, ambiguous: bool) -> bool:
        """Whether an answer needs ``answered`` at all: only once some row was ambiguous
        (a run without timeouts pays nothing per row)."""
        return ambiguous or bool(self._watch)

    def answered(
        self, tokens: tuple[int, ...], item: bytes | None, ok: bool, ambiguous: bool
    ) -> None:
        """One row's final result: its customer tokens (``KeyLinks``, the first being the
        customer's from now on), its item, whether it was delivered, whether some attempt
        of it went unanswered after it was sent."""
        if not tokens:
            return
        watch = self._watch
        found = None
        if watch:
            for t in tokens:
                w = watch.pop(t, None)
                if w is not None:
                    if found is None:
                        found = w
                    else:  # the row links two watched customers: one watch from now on
                        found.affected = found.affected or w.affected
                        found.last = found.last or w.last
        if found is None:
            if not ambiguous:
                return
            found = _Watch()
        elif ok:
            # an earlier request of this customer may land after this row
            found.affected = True
        if ok and item is not None:
            found.last = Resend(item, tokens[:1])
        watch[tokens[0]] = found

    def resends(self) -> list[Resend]:
        """The last delivered row of every affected customer (once each), in no particular
        order; forgets them."""
        out = [w.last for w in self._watch.values() if w.affected and w.last is not None]
        self._watch = {}
        return out
