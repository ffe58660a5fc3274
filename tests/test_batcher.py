"""The batcher: rows into requests (sizes, event names, one row per customer per request); and
which customers' last rows go again after a timed-out request (``LateApplies``)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from importer.protocol import DEFAULT_PROFILE, SIGNED_PROFILE, encode_body
from importer.send import Request
from importer.send.batcher import Batcher
from importer.send.lateapply import LateApplies, Resend


def item(i: int, pad: int = 0) -> bytes:
    return encode_body({"phone": f"p{i}", **({"note": "x" * pad} if pad else {})})


def everything(b: Batcher) -> list[Request]:
    """The full requests, then the rest flushed (the end of the input)."""
    out = []
    while (r := b.pop()) is not None:
        out.append(r)
    while (r := b.flush()) is not None:
        out.append(r)
    assert b.held == 0
    return out


def users(batch_rows: int = 500, batch_bytes: int = 1 << 20, **kw: Any) -> Batcher:
    return Batcher("user", DEFAULT_PROFILE, batch_rows=batch_rows, batch_bytes=batch_bytes, **kw)


def test_full_batches_come_out_at_batch_rows_and_the_rest_at_the_end() -> None:
    b = users(batch_rows=500)
    for i in range(1200):
        b.add(i, item(i), (f"phone:{i}",))
    first, second = b.pop(), b.pop()
    assert first is not None and second is not None and b.pop() is None
    assert first.rows == tuple(range(500)) and second.rows == tuple(range(500, 1000))
    assert first.items == tuple(item(i) for i in range(500))
    assert b.held == 200
    last = b.flush()
    assert last is not None and last.rows == tuple(range(1000, 1200))
    assert b.flush() is None and b.held == 0


def test_batch_bytes_bounds_the_body_and_a_big_record_goes_alone() -> None:
    limit = 2000
    b = users(batch_rows=500, batch_bytes=limit)
    sizes = [10, 300, 50, 5000, 20, 400, 400, 400, 400, 400, 400, 30]
    for i, pad in enumerate(sizes):
        b.add(i, item(i, pad), (f"phone:{i}",))
    requests = everything(b)
    assert [r for q in requests for r in q.rows] == list(range(len(sizes)))
    for q in requests:
        body = DEFAULT_PROFILE.body("user", q.items)
        assert len(body) <= limit or q.rows == (3,), (q.rows, len(body))
    assert any(q.rows == (3,) for q in requests)
    # a batch closes only when the next record would not fit
    for q, nxt in itertools.pairwise(requests):
        together = DEFAULT_PROFILE.body("user", (*q.items, nxt.items[0]))
        assert len(together) > limit or len(q.rows) == 500


def test_events_are_batched_per_event_name_without_keys() -> None:
    b = Batcher("event", DEFAULT_PROFILE, batch_rows=3, batch_bytes=1 << 20)
    names = [b'"a"', b'"b"', b'"a"', b'"a"', b'"b"', b'"a"', b'"c"']
    for i, name in enumerate(names):
        b.add(i, item(i), ("phone:same",), name)  # one customer: events need no order
    full = b.pop()
    assert full is not None and full.rows == (0, 2, 3) and full.event == b'"a"'
    assert full.keys == () and full.row_keys == ()
    rest = everything(b)
    assert [(q.event, q.rows) for q in rest] == [(b'"b"', (1, 4)), (b'"a"', (5,)), (b'"c"', (6,))]
    body = DEFAULT_PROFILE.body("event", full.items, full.event)
    assert body.startswith(b'{"type":"event_batch","event":"a","properties":[{')


def test_deletes_and_the_signed_profile_send_one_record_a_request() -> None:
    deletes = Batcher("user_delete", DEFAULT_PROFILE, batch_rows=500, batch_bytes=1 << 20)
    signed = Batcher("user", SIGNED_PROFILE, batch_rows=500, batch_bytes=1 << 20)
    for b in (deletes, signed):
        for i in range(5):
            b.add(i, item(i), (f"phone:{i % 2}",))
        got = []
        while (r := b.pop()) is not None:
            got.append(r)
        assert [q.rows for q in got] == [(0,), (1,), (2,), (3,), (4,)]
        assert got[0].keys == got[2].keys != got[1].keys  # the same customer, ordered
        assert b.flush() is None


def test_a_customer_never_twice_in_a_request_and_keeps_file_order() -> None:
    b = users(batch_rows=10)
    rows = [("A",), ("B",), ("A",), ("C",), ("A",), ("B",), ("D",)]
    for i, keys in enumerate(rows):
        b.add(i, item(i), tuple(f"phone:{k}" for k in keys))
    assert [q.rows for q in everything(b)] == [(0, 1, 3, 6), (2, 5), (4,)]


def test_linked_values_are_one_customer_transitively() -> None:
    b = users(batch_rows=10)
    rows = [
        ("phone:1", "email:a"),  # 0: P1 and Ea are one customer from now on
        ("email:a",),  # 1: the same customer: deferred
        ("phone:2",),  # 2
        ("phone:1",),  # 3: the same customer again: deferred behind 1
        ("phone:3",),  # 4
    ]
    for i, keys in enumerate(rows):
        b.add(i, item(i), keys)
    requests = everything(b)
    assert [q.rows for q in requests] == [(0, 2, 4), (1,), (3,)]
    first = requests[0]
    assert len(first.row_keys[0]) == 2  # the two values' customers, merged from now on
    assert first.keys == tuple(t for keys in first.row_keys for t in keys)
    assert requests[1].keys == requests[2].keys == first.row_keys[0][:1]


def test_a_row_behind_a_deferred_row_is_deferred_too() -> None:
    # 3 links B (deferred, since 1 is open) with C: C's later row 4 must not overtake it
    b = users(batch_rows=10)
    rows = [("B",), ("B",), ("C",), ("B", "C"), ("C",), ("E",)]
    for i, keys in enumerate(rows):
        b.add(i, item(i), tuple(f"phone:{k}" for k in keys))
    assert [q.rows for q in everything(b)] == [(0, 2, 5), (1,), (3,), (4,)]


def test_deferred_rows_open_the_next_batch_before_later_rows() -> None:
    b = users(batch_rows=3)
    for i, k in enumerate(["A", "A", "B", "C", "D", "E", "F"]):
        b.add(i, item(i), (f"phone:{k}",))
    assert [q.rows for q in everything(b)] == [(0, 2, 3), (1, 4, 5), (6,)]


def test_defer_limit_closes_a_partial_batch() -> None:
    b = users(batch_rows=500, defer_limit=3)
    for i in range(8):
        b.add(i, item(i), ("phone:same",))
    got = everything(b)
    assert [q.rows for q in got] == [(i,) for i in range(8)]


def test_limit_rows_applies_to_later_requests() -> None:
    b = users(batch_rows=4)
    for i in range(4):
        b.add(i, item(i), (f"phone:{i}",))
    b.limit_rows(2)
    for i in range(4, 9):
        b.add(i, item(i), (f"phone:{i}",))
    assert [len(q.rows) for q in everything(b)] == [4, 2, 2, 1]


def test_drain_gives_back_every_row_held() -> None:
    b = users(batch_rows=2)
    for i, k in enumerate(["A", "A", "B", "C", "D"]):
        b.add(i, item(i), (f"phone:{k}",))
    assert b.held == 5
    assert sorted(b.drain()) == [0, 1, 2, 3, 4]
    assert b.held == 0 and b.pop() is None and b.flush() is None


def test_oldest_is_the_row_a_flush_sends_first() -> None:
    b = Batcher("event", DEFAULT_PROFILE, batch_rows=10, batch_bytes=1 << 20)
    assert b.oldest is None
    b.add("x", item(1), (), b'"b"')
    b.add("y", item(2), (), b'"a"')
    assert b.oldest == "x"
    first = b.flush()
    assert first is not None and first.rows == ("x",) and b.oldest == "y"


class Reference:
    """Customers as of each row, by a plain union-find over the values."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        while self.parent.get(x, x) != x:
            x = self.parent[x]
        return x

    def add(self, keys: tuple[str, ...]) -> set[str]:
        roots = {self.find(k) for k in keys}
        first = self.find(keys[0])
        for r in roots:
            self.parent[r] = first
        self.parent.setdefault(first, first)
        return roots


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=3, unique=True),
        max_size=60,
    ),
    batch_rows=st.integers(min_value=1, max_value=7),
    defer_limit=st.integers(min_value=1, max_value=10),
)
def test_any_rows_keep_the_customer_rules(
    rows: list[list[str]], batch_rows: int, defer_limit: int
) -> None:
    b = users(batch_rows=batch_rows, defer_limit=defer_limit)
    keys = [tuple(f"phone:{k}" for k in r) for r in rows]
    for i, k in enumerate(keys):
        b.add(i, item(i), k)
    requests = everything(b)
    where = {row: n for n, q in enumerate(requests) for row in q.rows}
    assert sorted(where) == list(range(len(rows)))  # every row exactly once
    assert all(len(q.rows) <= batch_rows for q in requests)
    # rows i < j of one customer (as known at row j): j goes in a later request
    ref = Reference()
    for j, k in enumerate(keys):
        before = {ref.find(v) for v in k}
        for i in range(j):
            if {ref.find(v) for v in keys[i]} & before:
                assert where[i] < where[j], (i, j, rows)
        ref.add(k)


# -- late application: whose last row goes again -------------------------------------------


def test_no_timeout_no_resend_and_no_cost() -> None:
    late = LateApplies()
    assert not late.concerns(False)
    late.answered((1,), b"a1", ok=True, ambiguous=False)
    assert len(late) == 0 and late.resends() == []


def test_a_timed_out_row_then_a_later_row_resends_the_customers_last_row() -> None:
    late = LateApplies()
    late.answered((1,), b"a1", ok=True, ambiguous=True)  # retried ok; may still land late
    assert late.concerns(False)
    late.answered((2,), b"b1", ok=True, ambiguous=False)  # another customer: untouched
    late.answered((1,), b"a2", ok=True, ambiguous=False)
    late.answered((1,), b"a3-bad", ok=False, ambiguous=False)  # refused: not the last values
    late.answered((1,), b"a4", ok=True, ambiguous=False)
    assert late.resends() == [Resend(b"a4", (1,))]
    assert late.resends() == []  # once


def test_a_timed_out_last_row_needs_nothing_but_two_timed_out_rows_do() -> None:
    late = LateApplies()
    late.answered((1,), b"a1", ok=True, ambiguous=True)  # its own late landing: same values
    late.answered((2,), b"b1", ok=False, ambiguous=True)
    late.answered((2,), b"b2", ok=True, ambiguous=True)  # b1 may land after b2
    assert late.resends() == [Resend(b"b2", (2,))]


def test_a_row_linking_a_watched_customer_carries_the_watch_on() -> None:
    late = LateApplies()
    late.answered((7,), b"p1", ok=True, ambiguous=True)  # phone P (token 7)
    late.answered((9, 7), b"pe", ok=True, ambiguous=False)  # e-mail E with P: token 9 now
    late.answered((9,), b"e-last", ok=True, ambiguous=False)
    assert late.resends() == [Resend(b"e-last", (9,))]


def test_a_refused_row_linking_two_watched_customers_resends_each_ones_last_row() -> None:
    # The link row is refused: the platform keeps two customers, each with its own last row;
    # both go again (keeping one side's row left the other open to a late application).
    late = LateApplies()
    late.answered((1,), b"a1", ok=True, ambiguous=True)
    late.answered((1,), b"a2", ok=True, ambiguous=False)
    late.answered((2,), b"b1", ok=True, ambiguous=True)
    late.answered((2,), b"b2", ok=True, ambiguous=False)
    late.answered((1, 2), b"link-bad", ok=False, ambiguous=False)
    assert sorted(late.resends()) == [Resend(b"a2", (1,)), Resend(b"b2", (2,))]


def test_a_delivered_row_linking_two_watched_customers_is_the_one_resent() -> None:
    late = LateApplies()
    late.answered((1,), b"a1", ok=True, ambiguous=True)
    late.answered((2,), b"b1", ok=True, ambiguous=True)
    late.answered((2,), b"b2", ok=True, ambiguous=False)
    late.answered((2, 1), b"link", ok=True, ambiguous=False)
    assert late.resends() == [Resend(b"link", (2,))]


def test_a_last_row_naming_only_some_primary_keys_is_withheld_not_resent() -> None:
    # Sent again, a phone-only row could create a customer with its older values: the
    # platform may have moved that customer to another phone since (an e-mail an earlier run
    # gave it, named by a later row). Only a row naming every primary key goes again.
    late = LateApplies(("phone", "email"))
    late.answered((1,), b'{"phone":"1","email":"a@x.cn","v":1}', ok=True, ambiguous=True)
    late.answered((1,), b'{"phone":"1","v":2}', ok=True, ambiguous=False)
    late.answered((2,), b'{"phone":"2","v":1}', ok=True, ambiguous=True)
    late.answered((2,), b'{"phone":"2","email":"b@x.cn","v":2}', ok=True, ambiguous=False)
    late.answered((3,), b'{"phone":"3","email":" ","v":1}', ok=True, ambiguous=True)
    late.answered((3,), b'{"phone":"3","email":null,"v":2}', ok=True, ambiguous=False)
    assert late.resends() == [Resend(b'{"phone":"2","email":"b@x.cn","v":2}', (2,))]
    assert late.withheld == 2
