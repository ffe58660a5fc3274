"""The sender's retry policy and abort rules, against the real sandbox, with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from importer.config import RetryOptions
from importer.outcomes import RowResult, Status, TransportFailure, TransportKind
from importer.protocol import DEFAULT_PROFILE, IMPORT_PATH, Headers, Profile
from importer.sandbox import FaultPlan, Faults, Sandbox
from importer.send import Request, RequestSource, Sender, StreamTransport
from importer.send.budget import RequestBudget
from importer.send.keylinks import KeyLinks
from importer.send.ratelimit import RateLimiter
from importer.send.retry import parse_retry_after, wait_for


def phone_item(i: int) -> bytes:
    return b'{"phone":"0100%07d"}' % i


class ListSource(RequestSource):
    """One record per request, each its own customer."""

    def __init__(self, items: list[bytes]) -> None:
        self.items = list(enumerate(items))

    async def next_request(self) -> Request | None:
        if not self.items:
            return None
        i, item = self.items.pop(0)
        return Request((i,), (item,), (f"k{i}",))


class FakeClock:
    """Records every wait the sender asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def deliver_all(
    sb: Sandbox, n: int, *, profile: Profile = DEFAULT_PROFILE, concurrency: int = 4,
    retry: RetryOptions | None = None, clock: FakeClock | None = None,
) -> tuple[Sender, dict[int, RowResult]]:  # fmt: skip
    bodies = [phone_item(i) for i in range(n)]
    results: dict[int, RowResult] = {}

    async def main() -> Sender:
        transport = StreamTransport(sb.url, timeout=5)
        sender = Sender(
            transport,
            secret=sb.secret,
            kind="user",
            target=profile.target("user", False, sb.secret),
            profile=profile,
            concurrency=concurrency,
            retry=retry or RetryOptions(),
            sleep=(clock or FakeClock()).sleep,
            rng=random.Random(1),
        )
        await sender.run(ListSource(bodies), lambda tok, res: results.__setitem__(tok, res))
        await transport.aclose()
        return sender

    return asyncio.run(main()), results


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 11, 29, 2, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90.0)
    past = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, now=now.timestamp()) == 0.0
    for garbage in ("soon", "", "-5", "nan", "inf", None):
        assert parse_retry_after(garbage) is None


def test_wait_honours_retry_after_caps_it_and_falls_back_on_garbage() -> None:
    policy = RetryOptions(initial_backoff_s=0.5, max_backoff_s=8, retry_after_cap_s=120)
    rng = random.Random(0)

    def failure(retry_after: str | None) -> TransportFailure:
        return TransportFailure(TransportKind.HTTP_STATUS, "HTTP 429", 429, retry_after)

    assert wait_for(policy, 1, failure("3"), rng) == 3.0
    assert wait_for(policy, 1, failure("86400"), rng) == 120.0  # absurd: capped
    for n in range(1, 12):
        w = wait_for(policy, n, failure("garbage"), rng)
        assert 0.0 <= w <= min(8.0, 0.5 * 2 ** (n - 1))
    stale = TransportFailure(TransportKind.CONNECTION, "stale", stale=True)
    assert wait_for(policy, 3, stale, rng) == 0.0


def test_429_with_retry_after_is_retried_with_those_waits_until_the_budget_ends(
    fresh_sandbox: Callable[..., Sandbox],
) -> None:
    sb = fresh_sandbox(faults=Faults(http_429=1.0, retry_after="3"))
    clock = FakeClock()
    sender, results = deliver_all(sb, 5, retry=RetryOptions(max_attempts=4), clock=clock)
    assert clock.waits == [3.0] * 15  # 3 waits per row, each the server's Retry-After
    for r in results.values():
        assert (r.status, r.attempts, r.errcode) == (Status.FAILED, 4, None)
        assert r.errmsg == "HTTP 429 (after 4 attempts)"
    assert sb.stats()["requests"] == 20 == sender.requests
    assert not sender.aborted


def test_503_backoff_stays_within_policy_bounds(fresh_sandbox: Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox(faults=Faults(http_503=1.0))
    clock = FakeClock()
    policy = RetryOptions(max_attempts=6, initial_backoff_s=0.25, max_backoff_s=2.0)
    _, results = deliver_all(sb, 8, retry=policy, clock=clock, concurrency=1)
    assert len(clock.waits) == 8 * 5
    for row in range(8):
        for n, w in enumerate(clock.waits[row * 5 : row * 5 + 5], start=1):
            assert 0.0 <= w <= min(2.0, 0.25 * 2 ** (n - 1))
    assert all(r.attempts == 6 for r in results.values())


def test_errcode_10000_is_retried_and_then_succeeds(fresh_sandbox: Callable[..., Sandbox]) -> None:
    faults = Faults(seed=5, errcode_10000=0.5)
    sb = fresh_sandbox(faults=faults)
    _, results = deliver_all(sb, 60, retry=RetryOptions(max_attempts=12))
    assert all(r.status is Status.OK for r in results.values())
    assert sum(r.attempts for r in results.values()) == sb.stats()["requests"] > 60
    assert len(sb.customers()) == 60
    # The draw depends on the row and the attempt, not on the arrival order: each row took
    # exactly the attempts a plan of the same seed predicts (9 at most), on every run.
    plan = FaultPlan(faults)
    for i, r in results.items():
        body = DEFAULT_PROFILE.body("user", [phone_item(i)])
        needed = 1
        while plan.draw(IMPORT_PATH, body) is not None:
            needed += 1
        assert r.attempts == needed, i


def test_row_errors_are_never_retried(fresh_sandbox: Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox()
    results: dict[int, RowResult] = {}

    async def main() -> None:
        t = StreamTransport(sb.url)
        target = DEFAULT_PROFILE.target("user", False, sb.secret)
        s = Sender(t, secret=sb.secret, kind="user", target=target, profile=DEFAULT_PROFILE)
        (results[0],) = await s.deliver(Request((0,), (b'{"name":"no key"}',)))
        await t.aclose()

    asyncio.run(main())
    assert (results[0].status, results[0].errcode, results[0].attempts) == (Status.FAILED, 20001, 1)
    assert sb.stats()["requests"] == 1


def test_signature_storm_aborts_after_a_bounded_number_of_requests(
    fresh_sandbox: Callable[..., Sandbox],
) -> None:
    sb = fresh_sandbox()
    # Sending the signature under a header name the server does not read: every call 20004.
    wrong = Profile(protocol="signed", headers=Headers(signature="X-Not-The-Signature"))
    # 20004 exists only under the signed profile
    sender, results = deliver_all(sb, 500, profile=wrong, concurrency=4)
    assert sender.aborted
    assert sender.abort_reason is not None
    assert sender.abort_reason.startswith("20004 Signature checking failed 5 times in a row")
    assert sb.stats()["requests"] <= 5 + 4
    assert len(results) < 20  # the other rows were never taken


def test_wrong_secret_aborts_at_once(fresh_sandbox: Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox()
    bodies = [phone_item(i) for i in range(100)]

    async def main() -> Sender:
        t = StreamTransport(sb.url)
        s = Sender(t, secret="wrong", kind="user", profile=DEFAULT_PROFILE,
                   target=DEFAULT_PROFILE.target("user", False, "wrong"),
                   concurrency=2, sleep=FakeClock().sleep)  # fmt: skip
        await s.run(ListSource(bodies), lambda tok, res: None)
        await t.aclose()
        return s

    sender = asyncio.run(main())
    assert sender.abort_errcode == 20000
    assert sb.stats()["requests"] <= 2


def test_rate_limiter_spaces_request_starts_across_workers() -> None:
    now = [100.0]
    starts: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(50.0, clock=lambda: now[0], sleep=fake_sleep)

    async def worker() -> None:
        for _ in range(10):
            await limiter.acquire()
            starts.append(now[0])

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(4)))

    asyncio.run(main())
    starts.sort()
    assert len(starts) == 40
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.02 - 1e-9  # never faster than 50/s, whatever the worker count
    assert starts[-1] - starts[0] == pytest.approx(39 * 0.02)


class _DictLinks:
    """The reference: the same union-find over a dict."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        while x in self.parent:
            x = self.parent[x]
        return x

    def tokens(self, keys: tuple[str, ...]) -> tuple[int, ...]:
        roots: list[int] = []
        for k in keys:
            r = self.find(hash(k))
            if r not in roots:
                roots.append(r)
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return tuple(roots)


@pytest.mark.parametrize("values", [5, 50, 5000])
def test_key_links_order_rows_as_a_union_find_does(values: int) -> None:
    rng = random.Random(values)
    links, reference = KeyLinks(), _DictLinks()
    for _ in range(values * 4):  # enough links to grow the table several times
        keys = tuple(f"v{rng.randrange(values)}" for _ in range(rng.randint(1, 3)))
        assert links.tokens(keys) == reference.tokens(keys), keys
    assert len(links) == len(reference.parent)


Answer = Callable[[bytes], tuple[int, bytes]]


def send_import_api(
    answer: Answer, requests: list[Request], *, secret: str = "s3cr&t", kind: str = "user",
    concurrency: int = 1, **kwargs: object,
) -> tuple[Sender, dict[int, RowResult], list[bytes]]:  # fmt: skip
    """Send ``requests`` under ``import-api`` to a loopback server whose every answer is
    ``answer(body)``: (HTTP status, body)."""
    results: dict[int, RowResult] = {}
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                seen.append(body)
                status, payload = answer(body)
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(payload), payload))  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> Sender:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        t = StreamTransport(url, timeout=5)
        profile = DEFAULT_PROFILE
        sender = Sender(
            t, secret=secret, kind=kind, profile=profile, concurrency=concurrency,
            target=profile.target(kind, False, secret),
            shown_url=url + profile.shown_target(kind, False),
            sleep=FakeClock().sleep, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        items = list(requests)

        class Source(RequestSource):
            async def next_request(self) -> Request | None:
                return items.pop(0) if items else None

        await sender.run(Source(), results.__setitem__)
        await t.aclose()
        server.close()
        await server.wait_closed()
        return sender

    return asyncio.run(main()), results, seen


def one_row_requests(n: int) -> list[Request]:
    return [Request((i,), (phone_item(i),), (f"k{i}",)) for i in range(n)]


def test_an_errcode_answered_with_http_404_is_the_rows_error_not_the_runs() -> None:
    def answer(body: bytes) -> tuple[int, bytes]:
        if phone_item(0) in body:
            return 404, b'{"errcode":20003,"errmsg":"data checking failed"}'
        return 200, b'{"errcode":0,"errmsg":"success"}'

    sender, results, _ = send_import_api(answer, one_row_requests(3))
    assert not sender.aborted
    assert (results[0].status, results[0].errcode, results[0].errmsg) == (
        Status.FAILED, 20003, "data checking failed",
    )  # fmt: skip
    assert [results[i].status for i in (1, 2)] == [Status.OK, Status.OK]
    assert [results[i].request_id for i in range(3)] == [1, 2, 3]


def test_a_404_without_the_platforms_answer_aborts_naming_the_url_with_the_secret_hidden(
    fresh_sandbox: Callable[..., Sandbox],
) -> None:
    sb = fresh_sandbox()
    secret = "s3cr&t/é"
    profile = Profile(import_path="/api/v1/wrong")
    results: dict[int, RowResult] = {}

    async def main() -> Sender:
        t = StreamTransport(sb.url, timeout=5)
        s = Sender(t, secret=secret, kind="user", profile=profile, concurrency=1,
                   target=profile.target("user", False, secret),
                   shown_url=sb.url + profile.shown_target("user", False))  # fmt: skip
        items = one_row_requests(5)

        class Source(RequestSource):
            async def next_request(self) -> Request | None:
                return items.pop(0) if items else None

        await s.run(Source(), results.__setitem__)
        await t.aclose()
        return s

    sender = asyncio.run(main())
    assert sender.abort_reason == (
        f"HTTP 404 without the platform's errcode answer from {sb.url}/api/v1/wrong?secret=***: "
        "check target.base_url and target.path"
    )
    assert sender.requests == 1
    assert (results[0].status, results[0].errcode) == (Status.FAILED, None)
    assert list(results) == [0]  # the other requests were never taken
    everything = repr(sender) + sender.abort_reason + "".join(r.errmsg for r in results.values())
    assert "s3cr" not in everything and "s3cr%26t" not in everything


def test_10002_under_import_api_aborts_with_advice() -> None:
    def answer(body: bytes) -> tuple[int, bytes]:
        return 404, '{"errcode":10002,"errmsg":"type取值不合法"}'.encode()

    batch = Request((0, 1), (phone_item(0), phone_item(1)), ("k0", "k1"))
    sender, results, seen = send_import_api(answer, [batch, *one_row_requests(3)[2:]])
    assert seen == [b'{"type":"user_batch","properties":[%s,%s]}' % (phone_item(0), phone_item(1))]
    assert sender.abort_errcode == 10002
    assert sender.abort_reason == (
        "10002 invalid type value: type取值不合法: the platform does not accept the body type "
        "'user' or 'user_batch' from this account or at this endpoint; if it refused batches, "
        "set send.batch_rows: 1 (one record per request); check target.path and "
        "target.protocol"
    )
    assert [(r.status, r.errcode) for r in results.values()] == [(Status.FAILED, 10002)] * 2


def test_a_retry_after_longer_than_the_cap_aborts_saying_when_to_resume(
    fresh_sandbox: Callable[..., Sandbox],
) -> None:
    sb = fresh_sandbox(faults=Faults(http_429=1.0, retry_after="3600"))
    clock = FakeClock()
    # one attempt only: no retry would follow, yet the platform's limit stops the run
    retry = RetryOptions(max_attempts=1, retry_after_cap_s=120)
    before = datetime.now().astimezone()
    sender, results = deliver_all(sb, 5, retry=retry, clock=clock, concurrency=1)
    assert clock.waits == []  # nothing waited for
    assert sb.stats()["requests"] == sender.requests == 1
    assert [(r.status, r.request_id) for r in results.values()] == [(Status.NOT_SENT, None)]
    reason = sender.abort_reason
    assert reason is not None
    head = (
        "the platform answered HTTP 429 with Retry-After 3600 s, longer than "
        "send.retry.retry_after_cap_s (120 s): stopped waiting; the rest is not sent: run the "
        "same command again after "
    )
    assert reason.startswith(head)
    when = datetime.strptime(reason.removeprefix(head)[:19], "%Y-%m-%d %H:%M:%S")
    expected = (before + timedelta(seconds=3600)).replace(tzinfo=None)
    assert abs((when - expected).total_seconds()) < 5
    assert reason.endswith(f" {before.tzname()}")
    assert sender.resume_at is not None


def test_the_budget_is_taken_before_every_attempt_and_its_end_stops_the_run(
    fresh_sandbox: Callable[..., Sandbox],
) -> None:
    sb = fresh_sandbox(faults=Faults(http_503=1.0))
    budget = RequestBudget(6)
    results: dict[int, RowResult] = {}

    async def main() -> Sender:
        t = StreamTransport(sb.url, timeout=5)
        s = Sender(t, secret=sb.secret, kind="user", profile=DEFAULT_PROFILE, concurrency=1,
                   target=DEFAULT_PROFILE.target("user", False, sb.secret), budget=budget,
                   retry=RetryOptions(max_attempts=4), sleep=FakeClock().sleep)  # fmt: skip
        await s.run(ListSource([phone_item(i) for i in range(10)]), results.__setitem__)
        await t.aclose()
        return s

    sender = asyncio.run(main())
    assert sb.stats()["requests"] == sender.requests == budget.used == 6
    assert sender.quota_exhausted and budget.exhausted and not sender.aborted
    assert sender.stop_reason == "the run's request budget (send.daily_quota) is spent"
    # row 0 used its 4 attempts; row 1 got 2 before the budget refused its third (it keeps
    # the outcome it has, as when a run is stopped); no later row was taken
    assert [(r.status, r.attempts) for r in results.values()] == [
        (Status.FAILED, 4),
        (Status.FAILED, 2),
    ]
    sb.set_faults(Faults())
    fresh = RequestBudget(1)
    results.clear()

    async def again() -> Sender:
        t = StreamTransport(sb.url, timeout=5)
        s = Sender(t, secret=sb.secret, kind="user", profile=DEFAULT_PROFILE, concurrency=1,
                   target=DEFAULT_PROFILE.target("user", False, sb.secret), budget=fresh,
                   sleep=FakeClock().sleep)  # fmt: skip
        await s.run(ListSource([phone_item(i) for i in range(10)]), results.__setitem__)
        await t.aclose()
        return s

    sender = asyncio.run(again())
    # the first row went; the second was taken, refused a request, and stays not_sent
    assert [r.status for r in results.values()] == [Status.OK, Status.NOT_SENT]
    assert sender.quota_exhausted and sender.requests == 1
