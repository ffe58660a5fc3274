"""Batches through the sender, against the real sandbox under ``import-api``: bisection of a
row error answered for a batch (each row ends as if sent alone, under both ``batch_errors``
behaviours), halving of a batch the platform finds too big (remembered for the run), the
request ids, and the rows an unanswered attempt makes ambiguous."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import random
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.config import RetryOptions
from importer.outcomes import RowResult, Status
from importer.protocol import DEFAULT_PROFILE, encode_body
from importer.sandbox import FaultPlan, Faults, Sandbox
from importer.send import Request, RequestSource, Sender, StreamTransport

BATCH_ERRORS = ("reject_all", "store_valid")


async def instant(seconds: float) -> None:
    await asyncio.sleep(0)


class ListSource(RequestSource):
    def __init__(self, requests: Sequence[Request]) -> None:
        self.requests = list(requests)

    async def next_request(self) -> Request | None:
        return self.requests.pop(0) if self.requests else None


def batches(records: Sequence[dict[str, object]], sizes: Sequence[int]) -> list[Request]:
    """``records`` as requests of ``sizes`` rows (cycled), each row its own customer."""
    out: list[Request] = []
    i = k = 0
    while i < len(records):
        n = sizes[k % len(sizes)]
        rows = tuple(range(i, min(i + n, len(records))))
        items = tuple(encode_body(records[j]) for j in rows)
        out.append(Request(rows, items, tuple(f"c{j}" for j in rows)))
        i += n
        k += 1
    return out


def send(
    url: str, secret: str, requests: Sequence[Request], *, concurrency: int = 2,
    retry: RetryOptions | None = None, kind: str = "user",
) -> tuple[Sender, dict[int, RowResult]]:  # fmt: skip
    results: dict[int, RowResult] = {}

    async def main() -> Sender:
        t = StreamTransport(url, timeout=5)
        s = Sender(
            t, secret=secret, kind=kind, profile=DEFAULT_PROFILE, concurrency=concurrency,
            target=DEFAULT_PROFILE.target(kind, False, secret), retry=retry, sleep=instant,
            rng=random.Random(3),
        )  # fmt: skip
        await s.run(ListSource(requests), results.__setitem__)
        await t.aclose()
        return s

    return asyncio.run(main()), results


#: rows only the platform can refuse (``record``), with the errcode sending one alone gives
BAD = {"no_key": 20001, "empty_key": 20002, "unknown_property": 20003, "wrong_type": 20003}


def record(n: int, tag: str, bad: str | None = None) -> dict[str, object]:
    """Customer ``n``'s row; ``bad``: a key of ``BAD``."""
    phone = f"139{n:08d}"
    if bad == "no_key":
        return {"username": tag}
    if bad == "empty_key":
        return {"phone": "", "username": tag}
    if bad == "unknown_property":
        return {"phone": phone, "colour": "red"}
    if bad == "wrong_type":
        return {"phone": phone, "age": "old"}
    return {"phone": phone, "username": tag}


@pytest.fixture(scope="module", params=BATCH_ERRORS)
def platform(request: pytest.FixtureRequest) -> Sandbox:
    with Sandbox(batch_errors=request.param) as sb:
        yield sb


_example = iter(range(10**6))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 90),
    bad_rate=st.sampled_from([0.0, 0.02, 0.1, 0.4, 1.0]),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_bisection_gives_each_row_what_sending_it_alone_gives_and_stores_exactly_the_good_rows(
    platform: Sandbox, rows: int, bad_rate: float, sizes: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    example = next(_example)
    base = example * 1000
    kinds = [rng.choice(sorted(BAD)) if rng.random() < bad_rate else None for _ in range(rows)]
    records = [record(base + i, f"e{example}", kind) for i, kind in enumerate(kinds)]
    before = {c["properties"].get("phone") for c in platform.customers()}

    sender, results = send(platform.url, platform.secret, batches(records, sizes))
    assert sorted(results) == list(range(rows))

    # the store holds exactly the good rows (and nothing of the bad ones)
    stored = {c["properties"].get("phone") for c in platform.customers()} - before
    good = {r["phone"] for r, kind in zip(records, kinds, strict=True) if kind is None}
    assert stored == good

    # each row as if it had been sent alone
    _, alone = send(platform.url, platform.secret, batches(records, [1]))
    for i in range(rows):
        got, ref = results[i], alone[i]
        assert (got.status, got.errcode, got.errmsg) == (ref.status, ref.errcode, ref.errmsg), (
            i, kinds[i],
        )  # fmt: skip
        expected = 0 if kinds[i] is None else BAD[kinds[i]]  # type: ignore[index]
        assert got.errcode == expected
    # a request id names one request: the rows it finally carried are consecutive
    carried: dict[int | None, list[int]] = {}
    for i in range(rows):
        carried.setdefault(results[i].request_id, []).append(i)
    assert None not in carried
    for ids in carried.values():
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert not sender.aborted
    assert sender.batch_requests <= sender.requests


@pytest.mark.parametrize("batch_errors", BATCH_ERRORS)
def test_one_bad_row_in_500_costs_between_log2_and_2_log2_bisection_requests(
    batch_errors: str,
) -> None:
    with Sandbox(batch_errors=batch_errors) as sb:
        counts = {}
        for where in (0, 137, 250, 499):
            records = [record(where * 1000 + i, "x", None) for i in range(500)]
            records[where] = record(where * 1000 + where, "x", "no_key")
            sent_before = sb.stats()["requests"]
            sender, results = send(sb.url, sb.secret, batches(records, [500]))
            assert [i for i, r in results.items() if r.status is not Status.OK] == [where]
            assert results[where].errcode == 20001
            counts[where] = sender.bisect_requests
            made = sb.stats()["requests"] - sent_before
            assert sender.requests == 1 + sender.bisect_requests == made
        # first row bad: both halves at every level; last row bad: one half at every level
        assert counts == {0: 18, 137: 15, 250: 17, 499: 8}
        assert sum(counts.values()) / len(counts) < 2 * math.log2(500)


def test_a_batch_too_big_is_halved_and_the_smaller_size_kept_for_the_run() -> None:
    with Sandbox(max_batch_rows=100) as sb:
        records = [record(i, "big", None) for i in range(1000)]
        sender, results = send(sb.url, sb.secret, batches(records, [500]), concurrency=1)
        assert {r.status for r in results.values()} == {Status.OK}
        assert len(sb.customers()) == 1000
        # 500 refused, its first 250 refused, their first 125 refused: from then on no
        # request carries more than 63 rows, so each 500 goes in 8 pieces of 62 or 63
        assert sender.batch_limit == 63
        assert sender.too_big_splits == 3
        assert sender.requests == 3 + 8 + 8 == sb.stats()["requests"]
        sizes = {}
        for r in results.values():
            sizes[r.request_id] = sizes.get(r.request_id, 0) + 1
        assert sorted(set(sizes.values())) == [62, 63]
        assert len(sizes) == 16


def test_a_record_too_big_alone_fails_with_a_clear_message() -> None:
    with Sandbox(max_body_bytes=400) as sb:
        records = [record(1, "small", None), record(2, "x" * 500, None), record(3, "ok", None)]
        sender, results = send(sb.url, sb.secret, batches(records, [3]), concurrency=1)
        assert [r.status for r in results.values()] == [Status.OK, Status.FAILED, Status.OK]
        assert (results[1].errcode, results[1].errmsg) == (
            None,
            "HTTP 413: the record is too big for the platform, even alone in a request",
        )
        assert sender.batch_limit == 1
        assert not sender.aborted


def test_a_connection_closed_while_a_batch_is_sent_halves_it() -> None:
    """A platform (or a proxy) that cuts the connection once a body passes 10 MB."""
    item = b'{"phone":"1","username":"%s"}' % (b"x" * (4 << 20))
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                seen.append(length)
                if length > 10 << 20:
                    writer.transport.abort()
                    return
                await reader.readexactly(length)
                ok = b'{"errcode":0,"errmsg":"success"}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ok), ok))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    results: dict[int, RowResult] = {}

    async def main() -> Sender:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        t = StreamTransport(url, timeout=20)
        s = Sender(t, secret="s", kind="user", profile=DEFAULT_PROFILE, concurrency=1,
                   target=DEFAULT_PROFILE.target("user", False, "s"), sleep=instant)  # fmt: skip
        rows = tuple(range(8))
        await s.run(ListSource([Request(rows, (item,) * 8, ())]), results.__setitem__)
        await t.aclose()
        server.close()
        await server.wait_closed()
        return s

    sender = asyncio.run(main())
    assert [r.status for r in results.values()] == [Status.OK] * 8
    assert not any(r.ambiguous for r in results.values())
    # 8 records refused, their first 4 refused: then 4 requests of 2 records each
    assert (sender.too_big_splits, sender.batch_limit, sender.requests) == (2, 2, 6)
    assert len(seen) == 6 and sum(1 for n in seen if n > 10 << 20) == 2


def test_rows_whose_request_went_unanswered_are_ambiguous(
    fresh_sandbox: Callable[..., Sandbox],
) -> None:
    faults = Faults(seed=11, reset=0.3)
    sb = fresh_sandbox(faults=faults)
    records = [record(i, "amb", None) for i in range(60)]
    requests = batches(records, [1])
    _, results = send(sb.url, sb.secret, requests, retry=RetryOptions(max_attempts=10))
    assert {r.status for r in results.values()} == {Status.OK}
    # the draw depends on the request body and the attempt: a row is ambiguous exactly when
    # one of its attempts was reset after the platform had it
    plan = FaultPlan(faults)
    target = DEFAULT_PROFILE.target("user", False, sb.secret).split("?")[0]
    for i, request in enumerate(requests):
        body = DEFAULT_PROFILE.body("user", request.items)
        reset = False
        while plan.draw(target, body) == "reset":
            reset = True
        assert results[i].ambiguous is reset, i
    assert any(r.ambiguous for r in results.values())
    assert not all(r.ambiguous for r in results.values())


def test_a_batch_orders_each_of_its_customers_apart_not_all_of_them_together() -> None:
    """Request 2 carries customers A and C; request 3 carries B alone, who was in request 1
    with A. Request 3 waits for request 1 (B's earlier row), not for request 2: the rows of
    a batch are different customers. Request 4 (C) waits for request 2."""
    a, b, c = (encode_body(record(n, "order")) for n in (1, 2, 3))
    requests = [
        Request((0, 1), (a, b), ("A", "B"), (("A",), ("B",))),
        Request((2, 3), (a, c), ("A", "C"), (("A",), ("C",))),
        Request((4,), (b,), ("B",), (("B",),)),
        Request((5,), (c,), ("C",), (("C",),)),
    ]
    events: list[str] = []
    b_alone = asyncio.Event()
    ok = b'{"errcode":0,"errmsg":"success"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                name = "".join(n for n, item in (("A", a), ("B", b), ("C", c)) if item in body)
                events.append(f"got {name}")
                if name == "B":
                    b_alone.set()
                if name == "AC":  # held until B alone has arrived (or 3 s: the bug)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(b_alone.wait(), 3)
                events.append(f"answered {name}")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ok), ok))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        t = StreamTransport(url, timeout=10)
        s = Sender(t, secret="s", kind="user", profile=DEFAULT_PROFILE, concurrency=4,
                   target=DEFAULT_PROFILE.target("user", False, "s"), sleep=instant)  # fmt: skip
        await s.run(ListSource(requests), lambda token, result: None)
        await t.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert events.index("got B") < events.index("answered AC")
    assert events.index("answered AB") < events.index("got AC")
    assert events.index("answered AB") < events.index("got B")
    assert events.index("answered AC") < events.index("got C")


def test_the_platforms_daily_quota_spent_stops_the_run_until_its_next_day() -> None:
    """The sandbox's ``daily_quota``: past it, 429 with Retry-After up to midnight in the
    platform's time zone, far past ``retry_after_cap_s``: the run stops, saying when."""
    with Sandbox(daily_quota=3, quota_timezone="Asia/Shanghai") as sb:
        records = [record(i, "quota") for i in range(10)]
        sender, results = send(sb.url, sb.secret, batches(records, [2]), concurrency=1)
    assert [r.status for r in results.values()] == [Status.OK] * 6 + [Status.NOT_SENT] * 2
    assert sender.requests == 4 and sender.aborted
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    wait = (midnight - now).total_seconds()
    reason = sender.abort_reason or ""
    assert reason.startswith("the platform answered HTTP 429 with Retry-After ")
    said = float(reason.split("Retry-After ")[1].split(" s,")[0])
    assert abs(said - wait) < 5
    when = reason.split("run the same command again after ")[1][:19]
    local = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").astimezone()
    assert abs((local - midnight).total_seconds()) < 5
    assert sender.resume_at is not None and abs(sender.resume_at - midnight.timestamp()) < 5


class RunSource(ListSource):
    """A source that takes each request's results at once (``RequestSource.answered``)."""

    def __init__(self, requests: Sequence[Request]) -> None:
        super().__init__(requests)
        self.calls: list[tuple[tuple[object, ...], list[RowResult]]] = []

    def answered(
        self, tokens: Sequence[object], results: Sequence[RowResult], on_result: object
    ) -> None:
        self.calls.append((tuple(tokens), list(results)))


def test_a_requests_results_reach_its_source_at_once_in_row_order() -> None:
    records = [record(n, "run", "unknown_property" if n == 7 else None) for n in range(30)]
    requests = batches(records, [10])
    source = RunSource(requests)
    with Sandbox(batch_errors="store_valid") as sb:

        async def main() -> None:
            t = StreamTransport(sb.url, timeout=5)
            s = Sender(
                t, secret=sb.secret, kind="user", profile=DEFAULT_PROFILE, concurrency=1,
                target=DEFAULT_PROFILE.target("user", False, sb.secret), sleep=instant,
            )  # fmt: skip
            await s.run(source, lambda token, result: None)
            await t.aclose()

        asyncio.run(main())
    # one call per request, its rows in order; a clean request's rows share one result
    assert [tokens for tokens, _ in source.calls] == [r.rows for r in requests]
    clean = source.calls[1][1]
    assert all(r is clean[0] for r in clean) and clean[0].status is Status.OK
    bisected = source.calls[0][1]
    assert [r.errcode for r in bisected] == [0] * 7 + [20003] + [0] * 2


class _Row:
    """A row token that can be watched for collection (a run's tokens hold read batches)."""


def test_a_worker_waiting_for_its_next_request_keeps_nothing_of_the_last() -> None:
    # a sparse changed-only request spans many read batches through its row tokens: a worker
    # that kept its last request while it waits for the next would keep them all in memory
    token = _Row()
    watch = weakref.ref(token)
    given = [Request((token,), (encode_body(record(0, "keep")),), ("keep-0",))]
    del token
    seen: list[bool] = []

    class Source(RequestSource):
        def __init__(self) -> None:
            self.given = given

        async def next_request(self) -> Request | None:
            if self.given:
                return self.given.pop()
            gc.collect()
            seen.append(watch() is None)  # asked for the next one: the last is let go
            return None

    with Sandbox() as sb:

        async def main() -> None:
            t = StreamTransport(sb.url, timeout=5)
            s = Sender(
                t, secret=sb.secret, kind="user", profile=DEFAULT_PROFILE, concurrency=1,
                target=DEFAULT_PROFILE.target("user", False, sb.secret), sleep=instant,
            )  # fmt: skip
            await s.run(Source(), lambda token, result: None)
            await t.aclose()

        asyncio.run(main())
    assert seen == [True]
