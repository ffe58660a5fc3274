"""Per-customer order when the platform applies a timed-out request late.

A request the client gave up on (no answer after the whole body went out: ``RowResult``
``ambiguous``) may still be applied by an overloaded backend, after the client's retry and
after the customer's next row: the customer would end with the older values. The client
cannot tell when, or whether, that happens; it can make sure the newest values land last.

A re-send must change nothing when nothing was applied late (the common case), and that holds
only for a row that names a value for every primary key: once the platform applied it, the
customer it updated holds exactly that row's key values, so no row outside this customer's rows
(``KeyLinks``) can touch it afterwards, and the row, the customer's newest, applies again as a
no-op. A row naming only some of them (a phone, no e-mail) updates a customer that may hold, for
the others, a value an earlier run gave it (the e-mail of a customer the file knows by other
rows): a later row of that other customer takes it over (its phone replaces this one), and the
row sent again would then create a customer with this row's older values, or undo that later
row. Such rows are not sent again (``withheld`` counts them, for a warning): a late-applied
request can leave their customer with older values, and ``--full`` puts it right. (Which rows
name every key is read from their items when ``resends`` picks them: nothing per row.)

``LateApplies`` watches the answers of ordered kinds (``user``, ``user_delete``) as the sender
gives them: a customer's rows are answered in file order, one at a time (the sender holds a
row back until its customer's earlier row has its final outcome), so "later" is "answered
after". A customer is *affected* once a row of theirs was ambiguous and a later row (or the
ambiguous row itself, after an earlier ambiguous one) was delivered ``ok``. Once the run has
otherwise finished, and ``send.settle_s`` has passed, the pipeline re-sends each affected
customer's last delivered row once (``resends``), batched and ordered like any other row.

A row that links two watched customers and is not delivered (refused, failed) leaves them two
customers on the platform: the watch that carries on keeps the last delivered row of each (the
older one of one side is still that side's newest values), and both go again; a delivered link
row replaces them (it is the newest row of both).

Memory: one entry per customer that had an ambiguous row (rare: timeouts), holding the item of
their last delivered row (one per side of an undelivered link).
"""

from __future__ import annotations

import json
from typing import NamedTuple


class Resend(NamedTuple):
    """A row to send again: its item, and its customer tokens (already linked)."""

    item: bytes
    tokens: tuple[int, ...]


class _Watch:
    __slots__ = ("affected", "last")

    def __init__(self) -> None:
        self.affected = False
        #: the last delivered row of each platform customer this watch covers (one, unless
        #: a link row between watched customers was not delivered)
        self.last: list[Resend] = []


class LateApplies:
    """The customers a late-applied request could leave with older values (see the module
    docstring); ``answered`` once per row, in the order the sender answers them."""

    def __init__(self, primary_keys: tuple[str, ...] = ()) -> None:
        self._watch: dict[int, _Watch] = {}
        #: the job's primary keys (upserts; () for deletes, always safe to send again): a
        #: row is sent again only if it names a value for each
        self.primary_keys = primary_keys
        #: affected customers whose last row ``resends`` left out: it names only some of the
        #: primary keys (see the module docstring)
        self.withheld = 0

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
                        # each side's last row stays (this row, if delivered, replaces both
                        # below; if not, the platform keeps them two customers)
                        found.last = found.last + w.last
        if found is None:
            if not ambiguous:
                return
            found = _Watch()
        elif ok:
            # an earlier request of this customer may land after this row
            found.affected = True
        if ok and item is not None:
            found.last = [Resend(item, tokens[:1])]
        watch[tokens[0]] = found

    def resends(self) -> list[Resend]:
        """The last delivered row of every affected customer (once each), in no particular
        order, if it names every primary key (the others are counted in ``withheld``);
        forgets them."""
        out = []
        for w in self._watch.values():
            if w.affected:
                for r in w.last:
                    if self._names_every_key(r.item):
                        out.append(r)
                    else:
                        self.withheld += 1
        self._watch = {}
        return out

    def _names_every_key(self, item: bytes) -> bool:
        """Whether the encoded row ``item`` has a value for every primary key (the
        platform's rule: not null, not blank)."""
        if not self.primary_keys:
            return True
        props = json.loads(item)
        for key in self.primary_keys:
            value = props.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                return False
        return True
