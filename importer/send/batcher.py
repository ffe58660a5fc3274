"""Rows into requests: how many records a request carries, and which rows may share one.

``Batcher`` is pure bookkeeping (no I/O, no clock): rows go in with ``add`` in file order, each
as ``(token, item, keys, event)`` -- an opaque token answered through ``on_result``, its encoded
properties object, its primary-key values, and (events) its event name as a JSON string
literal -- and ``Request`` objects come out, through ``pop`` (full ones) and ``flush``
(partial ones, when the caller decides: ``importer.pipeline`` flushes at the end of the input
and when the producer has had nothing for a while).

The rules, in the order they bind:

- **Size.** At most ``batch_rows`` records and ``batch_bytes`` bytes of body per request,
  whichever comes first; a record larger than ``batch_bytes`` on its own goes alone.
  ``Profile.max_items`` caps it further: one record a request for ``user_delete`` (no batch
  form is documented) and for every call of the ``signed`` profile. ``limit_rows`` lowers the
  row limit for the rest of the run (a batch the platform found too big, HTTP 413).
- **Events** are batched per event name: one open batch per name, each flushed when full.
  They carry no ordering keys (the platform de-duplicates events on ``event_id``), so one
  request may carry many events of one customer.
- **Customers** (``user``, ``user_delete``: ``ordered``): a request never carries two rows of
  the same customer. "The same customer" is ``KeyLinks``: values named together in one row
  belong to one customer, transitively (linked here, once, in file order; the sender gets the
  tokens and links nothing). A row whose customer already has a row in the open batch is
  deferred to a later batch, and so is every later row of that customer (and of any customer
  a deferred row names), so each customer's rows go in file order, one per request. The
  deferred rows open the next batch. ``Request.keys`` is the union of the rows' tokens and
  ``Request.row_keys`` each row's: the sender holds back a request that shares a token with
  an earlier one until that one's rows have their final outcome.

Memory stays bounded: the open batches, plus at most ``defer_limit`` deferred rows (past it the
open batch is closed early, partial, and the deferred rows open the next).
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from ..protocol import Profile
from .keylinks import KeyLinks
from .sender import Request


class _Row(NamedTuple):
    token: Any
    item: bytes
    tokens: tuple[int, ...]
    seq: int


class _Open:
    """One batch being filled: its rows, the customer tokens they carry, its body size."""

    __slots__ = ("event", "rows", "size", "tokens")

    def __init__(self, event: bytes | None, overhead: int) -> None:
        self.event = event
        self.rows: list[_Row] = []
        self.tokens: set[int] = set()
        #: the bytes of the body with the rows so far (the batch form, an upper bound)
        self.size = overhead

    @property
    def first(self) -> int:
        return self.rows[0].seq


class Batcher:
    """Packs rows into ``Request``s (see the module docstring for the rules)."""

    def __init__(
        self,
        kind: str,
        profile: Profile,
        *,
        batch_rows: int,
        batch_bytes: int,
        ordered: bool | None = None,
        defer_limit: int | None = None,
    ) -> None:
        self.kind = kind
        self.profile = profile
        cap = profile.max_items(kind)
        #: records per request, at most (``limit_rows`` lowers it)
        self.max_rows = max(1, min(batch_rows, cap) if cap is not None else batch_rows)
        self.max_bytes = batch_bytes
        #: per-customer rule (users and deletes; events are unordered)
        self.ordered = kind != "event" if ordered is None else ordered
        #: the run's customers (the pipeline's single-process sender and the --workers
        #: parent get these tokens, already linked)
        self.links: KeyLinks | None = KeyLinks() if self.ordered else None
        self.defer_limit = defer_limit if defer_limit is not None else max(1000, 4 * batch_rows)
        self._open: dict[bytes | None, _Open] = {}
        self._overheads: dict[bytes | None, int] = {}
        self._ready: deque[Request] = deque()
        #: rows whose customer was in the open batch (or behind such a row), in file order
        self._deferred: list[_Row] = []
        self._blocked: set[int] = set()
        self._seq = 0
        #: rows added and not yet in a request ``pop`` or ``flush`` gave
        self.held = 0

    # -- in --------------------------------------------------------------------------------------

    def link(self, keys: tuple[str, ...]) -> tuple[int, ...]:
        """The customer tokens of a row with primary-key values ``keys`` (``KeyLinks``:
        call it once per row, in file order); () for an unordered kind."""
        if self.links is None or not keys:
            return ()
        return self.links.tokens(keys)

    def add(
        self,
        token: Any,
        item: bytes,
        keys: tuple[str, ...] = (),
        event: bytes | None = None,
        *,
        tokens: tuple[int, ...] | None = None,
    ) -> None:
        """One row, in file order. ``keys``: its primary-key values (ordered kinds), or
        ``tokens``: what ``link`` gave for them; ``event``: its event name as a JSON string
        literal (events)."""
        if tokens is None:
            tokens = self.link(keys)
        self._seq += 1
        self.held += 1
        self._place(_Row(token, item, tokens, self._seq), event)

    def limit_rows(self, rows: int) -> None:
        """From now on at most ``rows`` records a request (the platform found a batch too
        big); batches already open are closed at the new size when they next grow."""
        self.max_rows = max(1, min(self.max_rows, rows))

    # -- out -------------------------------------------------------------------------------------

    @property
    def ready(self) -> int:
        """Full requests waiting for ``pop``."""
        return len(self._ready)

    def pop(self) -> Request | None:
        """The next full request, or None."""
        if not self._ready:
            return None
        request = self._ready.popleft()
        self.held -= len(request.rows)
        return request

    def flush(self) -> Request | None:
        """The next request, partial if need be: a full one if there is one, else the open
        batch holding the oldest row is closed. None when nothing is held."""
        if not self._ready:
            if not self._open:
                return None
            event = min(self._open.items(), key=lambda kv: kv[1].first)[0]
            again = self._close(event)
            if again:
                self._place_again(again, event)
        request = self._ready.popleft()
        self.held -= len(request.rows)
        return request

    @property
    def oldest(self) -> Any:
        """The token of the oldest row held (None when nothing is held): what a partial
        flush would send first."""
        if self._ready:
            return self._ready[0].rows[0]
        if not self._open:
            return None
        return min(self._open.values(), key=lambda b: b.first).rows[0].token

    def drain(self) -> list[Any]:
        """Every row held (in requests not handed out, open batches, deferred), forgotten:
        their tokens. The run stopped: they stay ``not_sent``."""
        out = [t for r in self._ready for t in r.rows]
        for batch in self._open.values():
            out.extend(row.token for row in batch.rows)
        out.extend(row.token for row in self._deferred)
        self._ready.clear()
        self._open.clear()
        self._deferred = []
        self._blocked = set()
        self.held = 0
        return out

    # -- the work --------------------------------------------------------------------------------

    def _overhead(self, event: bytes | None) -> int:
        """The bytes of a body around its items (the batch form: an upper bound), counting
        the separator of one item."""
        size = self._overheads.get(event)
        if size is None:
            if self.max_rows > 1 or self.profile.max_items(self.kind) is None:
                size = len(self.profile.body(self.kind, [b"", b""], event))
            else:
                size = len(self.profile.body(self.kind, [b""], event)) + 1
            self._overheads[event] = size
        return size

    def _place(self, row: _Row, event: bytes | None) -> None:
        """Put ``row`` in its open batch, or defer it; closing batches that fill."""
        again = self._place_one(row, event)
        if again:
            self._place_again(again, event)

    def _place_again(self, rows: list[_Row], event: bytes | None) -> None:
        """Place ``rows`` (a closed batch's deferred rows, in file order) before anything
        later."""
        todo = deque(rows)
        while todo:
            more = self._place_one(todo.popleft(), event)
            if more:
                todo.extendleft(reversed(more))

    def _place_one(self, row: _Row, event: bytes | None) -> list[_Row]:
        """Place or defer one row; the rows to place again (a batch closed)."""
        if self.ordered and row.tokens:
            blocked = self._blocked
            batch = self._open.get(event)
            if (blocked and any(t in blocked for t in row.tokens)) or (
                batch is not None and any(t in batch.tokens for t in row.tokens)
            ):
                self._deferred.append(row)
                blocked.update(row.tokens)
                if len(self._deferred) >= self.defer_limit:
                    return self._close(event)
                return []
        return self._put(row, event)

    def _put(self, row: _Row, event: bytes | None) -> list[_Row]:
        """Add ``row`` to the open batch of ``event``; the rows to place again if a batch
        closed (the deferred ones, in file order)."""
        again: list[_Row] = []
        size = len(row.item) + 1
        batch = self._open.get(event)
        if batch is not None and batch.size + size > self.max_bytes and batch.rows:
            again = self._close(event)
            if again:  # the deferred rows come first: place them, then this one
                return [*again, row]
            batch = None
        if batch is None:
            batch = self._open[event] = _Open(event, self._overhead(event))
        batch.rows.append(row)
        batch.tokens.update(row.tokens)
        batch.size += size
        if len(batch.rows) >= self.max_rows or batch.size > self.max_bytes:
            again = self._close(event)
        return again

    def _close(self, event: bytes | None) -> list[_Row]:
        """Turn the open batch of ``event`` into a ready request; the deferred rows, to be
        placed again (they open the next batch)."""
        batch = self._open.pop(event, None)
        if batch is not None and batch.rows:
            rows = batch.rows
            ordered = self.ordered
            keys: tuple[int, ...] = ()
            row_keys: tuple[tuple[int, ...], ...] = ()
            if ordered:
                # every token once, in the order met: a request waits for the earlier
                # requests of each customer it carries
                keys = tuple(dict.fromkeys(t for r in rows for t in r.tokens))
                row_keys = tuple(r.tokens for r in rows)
            self._ready.append(
                Request(
                    tuple(r.token for r in rows),
                    tuple(r.item for r in rows),
                    keys,
                    row_keys,
                    event,
                )
            )
        again, self._deferred, self._blocked = self._deferred, [], set()
        return again
