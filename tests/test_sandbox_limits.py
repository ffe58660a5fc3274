"""The sandbox's limits and the faults of overload: the rate limit and the daily quota (HTTP 429
with Retry-After), a too-big body closed while it is being sent, and ``late_apply`` (a request
applied after the client gave up on it). Real server, real sockets."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from wire import Api, code_of

from importer import protocol
from importer.errors import ConfigError
from importer.outcomes import TransportFailure, TransportKind
from importer.sandbox import Faults, Sandbox, Schema, load_schema
from importer.sandbox.schema import PACKAGED_SCHEMA
from importer.send.transport import StreamTransport

ROOT = Path(__file__).resolve().parents[1]
Factory = Callable[..., Sandbox]


def seconds_to_midnight(zone: str) -> float:
    now = datetime.now(ZoneInfo(zone))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    return midnight.replace(tzinfo=ZoneInfo(zone)).timestamp() - now.timestamp()


def today(zone: str = "Asia/Shanghai") -> str:
    return datetime.now(ZoneInfo(zone)).date().isoformat()


def refused(api: Api, outcome: object) -> int:
    """The Retry-After seconds of a 429 answered by the limits (plain text, no errcode)."""
    assert isinstance(outcome, TransportFailure), outcome
    assert outcome.http_status == 429 and outcome.retry_after is not None
    assert api.body.startswith(b"429 Too Many Requests: ")
    return int(outcome.retry_after)


# -- rate limit and daily quota --------------------------------------------------------------


def test_limits_are_off_by_default(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    api = Api(sb)
    assert [code_of(api.user({"phone": str(i)})) for i in range(50)] == [0] * 50
    assert sb.stats()["by_day"] == {today(): {"requests": 50, "items": 50, "429": 0}}


def test_rate_limit(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(rate_limit_per_s=2)
    api = Api(sb)
    assert code_of(api.user({"phone": "1"})) == 0
    assert code_of(api.user({"phone": "2"})) == 0  # a burst of rate_limit_per_s
    assert refused(api, api.user({"phone": "3"})) == 1
    assert refused(api, api.user_batch([{"phone": "4"}, {"phone": "5"}])) == 1
    # signed calls are the same account: the same limit
    assert refused(api, Api(sb, profile=protocol.SIGNED_PROFILE).user({"phone": "6"})) == 1
    assert [c["properties"]["phone"] for c in sb.customers()] == ["1", "2"]
    time.sleep(0.6)  # a token is back
    assert code_of(api.user({"phone": "7"})) == 0
    stats = sb.stats()
    assert stats["by_day"] == {today(): {"requests": 3, "items": 3, "429": 3}}
    assert stats["by_http_status"] == {"200": 3, "429": 3}
    assert stats["requests"] == 6 and "429" not in stats["by_errcode"]


def test_paced_at_the_rate_nothing_is_refused(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(rate_limit_per_s=20)
    api = Api(sb)
    start = time.monotonic()
    for i in range(30):
        time.sleep(max(0.0, start + i / 20 - time.monotonic()))
        assert code_of(api.user({"phone": str(i)})) == 0, i


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
def test_daily_quota(fresh_sandbox: Factory, zone: str) -> None:
    sb = fresh_sandbox(daily_quota=3, quota_timezone=zone)
    api = Api(sb)
    assert code_of(api.user_batch([{"phone": "1"}, {"phone": "2"}])) == 0
    assert code_of(api.user({"age": 1})) == 20001  # an error answer counts too
    api.debug = True
    assert code_of(api.user({"phone": "3"})) == 0  # and so does debug mode
    outcome = api.user({"phone": "4"})
    expected = seconds_to_midnight(zone)
    assert abs(refused(api, outcome) - expected) <= 2
    assert api.body.decode() == (
        f"429 Too Many Requests: daily quota of 3 requests used ({today(zone)})"
    )
    assert len(sb.customers()) == 2
    assert sb.stats()["by_day"] == {today(zone): {"requests": 3, "items": 4, "429": 1}}


def test_a_refused_request_does_not_count_against_the_quota(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(rate_limit_per_s=1, daily_quota=2)
    api = Api(sb)
    assert code_of(api.user({"phone": "1"})) == 0
    assert refused(api, api.user({"phone": "2"})) == 1  # the rate: not counted
    time.sleep(1.05)
    assert code_of(api.user({"phone": "3"})) == 0  # the second of the quota
    assert refused(api, api.user({"phone": "4"})) > 60  # the quota: until midnight
    assert sb.stats()["by_day"][today()] == {"requests": 2, "items": 2, "429": 2}


# -- too big: close the connection while the body is being sent -----------------------------


def raw_post(sb: Sandbox, body: bytes) -> bytes:
    head = (
        f"POST {protocol.DEFAULT_PROFILE.target('user', False, sb.secret)} HTTP/1.1\r\n"
        f"Host: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as s:
        s.sendall(head + body)
        return s.recv(65536)


def test_too_big_close_resets_the_connection_while_sending(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(max_body_bytes=1000, too_big="close")
    big = protocol.DEFAULT_PROFILE.batch_body(
        "user", [{"phone": str(i), "username": "x" * 1000} for i in range(8000)]
    )  # about 8 MB: more than the kernel buffers of both ends hold
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        raw_post(sb, big)
    assert code_of(Api(sb).user({"phone": "1"})) == 0  # the server goes on
    stats = sb.stats()
    assert stats["closed_too_big"] == 1 and "413" not in stats["by_http_status"]
    assert len(sb.customers()) == 1


@pytest.mark.parametrize("too_big", ["close", "answer_413"])
def test_the_importers_transport_sees_too_big_either_way(
    fresh_sandbox: Factory, too_big: str
) -> None:
    """What the sender's transport makes of each setting: closed while sending, or a 413; both
    are ``too_big`` (the batch is halved)."""
    sb = fresh_sandbox(max_body_bytes=1000, too_big=too_big)
    body = b'{"type":"user","properties":{"username":"' + b"x" * (8 << 20) + b'"}}'

    async def post() -> TransportFailure:
        transport = StreamTransport(sb.url)
        try:
            target = protocol.DEFAULT_PROFILE.target("user", False, sb.secret)
            out = await transport.post(target, body, {})
        finally:
            await transport.aclose()
        assert isinstance(out, TransportFailure)
        return out

    out = asyncio.run(post())
    assert out.too_big
    if too_big == "close":
        assert (out.while_sending, out.http_status) == (True, None)
    else:
        assert (out.while_sending, out.http_status) == (False, 413)


def test_too_big_close_on_too_many_items(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(max_batch_rows=2, too_big="close")
    api = Api(sb)
    outcome = api.user_batch([{"phone": str(i)} for i in range(3)])
    assert isinstance(outcome, TransportFailure) and outcome.kind is TransportKind.CONNECTION
    assert sb.customers() == [] and sb.stats()["closed_too_big"] == 1
    assert code_of(api.user_batch([{"phone": "1"}, {"phone": "2"}])) == 0


# -- late_apply -------------------------------------------------------------------------------


def test_late_apply_stores_after_the_client_gave_up(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(late_apply=1.0, late_apply_s=1.5))
    impatient = Api(sb, timeout=0.3)
    outcome = impatient.user({"phone": "1", "username": "old"})
    assert isinstance(outcome, TransportFailure) and outcome.kind is TransportKind.TIMEOUT
    assert sb.customers() == []
    # meanwhile the customer's next row arrives and is stored
    sb.set_faults(Faults())
    assert code_of(Api(sb).user({"phone": "1", "username": "new"})) == 0
    assert [c["properties"]["username"] for c in sb.customers()] == ["new"]
    # then the backend finishes the request the client gave up on: the old row wins
    deadline = time.monotonic() + 5
    while sb.customers()[0]["properties"]["username"] == "new" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c["properties"]["username"] for c in sb.customers()] == ["old"]
    assert sb.stats()["by_fault"] == {"late_apply": 1}


def test_late_apply_answers_a_patient_client(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(late_apply=1.0, late_apply_s=0.3))
    api = Api(sb, timeout=5)
    start = time.perf_counter()
    assert code_of(api.event_batch("order", [
        {"phone": "1", "event_id": "e1", "create_time": "2018-08-08 08:08:08"},
        {"phone": "1", "event_id": "e2", "create_time": "2018-08-08 08:08:08"},
    ])) == 0  # fmt: skip
    assert time.perf_counter() - start >= 0.3
    assert [e["event_id"] for e in sb.events()] == ["e1", "e2"]


def test_late_apply_does_not_block_other_connections(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(late_apply=1.0, late_apply_s=5))
    Api(sb, timeout=0.1).user({"phone": "1"})
    sb.set_faults(Faults())
    start = time.perf_counter()
    assert code_of(Api(sb).user({"phone": "2"})) == 0
    assert time.perf_counter() - start < 1


# -- settings ---------------------------------------------------------------------------------


def test_limit_settings_are_validated() -> None:
    schema = load_schema(PACKAGED_SCHEMA, env={})
    assert (schema.rate_limit_per_s, schema.daily_quota, schema.quota_timezone) == (
        0,
        0,
        "Asia/Shanghai",
    )
    assert schema.too_big == "answer_413"
    with pytest.raises(ConfigError) as info:
        Schema.from_dict(
            {
                **schema.to_dict(),
                "too_big": "drop",
                "rate_limit_per_s": -1,
                "daily_quota": 1.5,
                "quota_timezone": "Mars/Olympus",
            },
            env={},
        )
    assert [p.path for p in info.value.problems] == [
        "too_big",
        "rate_limit_per_s",
        "daily_quota",
        "quota_timezone",
    ]
    with pytest.raises(ValueError, match="late_apply_s"):
        Faults(late_apply_s=-1)
    assert Faults(late_apply=0.5).to_dict()["late_apply"] == 0.5


def test_process_mode_carries_limits_and_late_apply(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(process=True, daily_quota=1, faults=Faults(late_apply=1.0, late_apply_s=0.2))
    api = Api(sb)
    assert code_of(api.user({"phone": "1"})) == 0
    assert refused(api, api.user({"phone": "2"})) > 1
    assert sb.stats()["by_fault"] == {"late_apply": 1}


def test_cli_limit_flags(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "importer.sandbox", "serve", "--port", "0",
           "--rate-limit-per-s", "100", "--daily-quota", "2", "--quota-timezone", "UTC",
           "--too-big", "close", "--fault", "late-apply=1", "--late-apply-s", "0.1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        api = Api(url, load_schema(None, env={}).secret)
        assert code_of(api.user({"phone": "1"})) == 0
        assert code_of(api.user({"phone": "2"})) == 0
        retry_after = refused(api, api.user({"phone": "3"}))
        assert math.isclose(retry_after, seconds_to_midnight("UTC"), abs_tol=2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
