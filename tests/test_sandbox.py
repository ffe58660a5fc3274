"""The sandbox server: check order, store semantics, HTTP handling, faults, CLI, schema."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from wire import Api, code_of

from importer import protocol
from importer.errcodes import ErrCode
from importer.errors import ConfigError
from importer.outcomes import Response, TransportFailure
from importer.sandbox import FaultPlan, Faults, Sandbox, check, check_auth, load_schema
from importer.sandbox.faults import parse_fault_specs
from importer.sandbox.schema import PACKAGED_SCHEMA, Schema

ROOT = Path(__file__).resolve().parents[1]
SIGNED = protocol.SIGNED_PROFILE
Factory = Callable[..., Sandbox]
EV = {"phone": "1", "event_id": "e1", "create_time": "2018-08-08 08:08:08"}


def http(sb: Sandbox, raw: bytes, *, read_until_close: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; return what comes back (one read or all)."""
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as s:
        s.sendall(raw)
        if not read_until_close:
            return s.recv(65536)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def signed_request(sb: Sandbox, body: bytes, path: str = "/v1/user?debug=false") -> bytes:
    h = SIGNED.auth_headers(sb.secret, body)
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- rules.check: the body checks and their order ---------------------------------------------


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema(PACKAGED_SCHEMA, env={})


BODY_CASES = [
    ("user", b'{"properties": {"phone": NaN}}', 10001),
    ("user", b'{"properties": {"phone": Infinity}}', 10001),
    ("user", b'{"properties": {"phone": 1e999}}', 10001),
    ("user", b'{"properties": {"phone": "1", "phone": "2"}}', 10001),
    ("user", b'{"properties": {"phone": "\\ud800"}}', 10001),
    ("user", b'\xef\xbb\xbf{"properties": {"phone": "1"}}', 10001),
    ("user", '{"properties": {"phone": "1"}}'.encode("utf-16"), 10001),
    ("user", b'"properties"', 10001),
    ("event", b'{"properties": {}}', 20003),
    ("event", b'{"eventName": "  ", "properties": {}}', 20003),
    ("event", b'{"eventName": 5, "properties": {"phone": "1"}}', 20003),
    ("user", b'{"properties": []}', 10004),
    ("user", b'{"properties": {}}', 10004),
    ("user", b"{}", 10004),
    ("user", b'{"properties": {"age": "x"}}', 20001),
    ("event", b'{"eventName": "e", "properties": {"phone": "1", "create_time": 1}}', 20001),
    ("user", b'{"properties": {"phone": null, "email": " ", "age": "x"}}', 20002),
    ("event", b'{"eventName": "e", "properties": {"phone": "1", "event_id": ""}}', 20002),
    ("user", b'{"properties": {"phone": "1", "age": true}}', 10002),
    ("user", b'{"properties": {"phone": "1", "age": 1.0}}', 10002),
    ("user", b'{"properties": {"phone": 1}}', 10002),
    ("user", b'{"properties": {"phone": "1", "vip": 1}}', 10002),
    ("user", b'{"properties": {"phone": "1", "amount": false}}', 10002),
    ("user", b'{"properties": {"phone": "1", "orderTime": "2018-02-30 00:00:00"}}', 10002),
    ("user", b'{"properties": {"phone": "1", "create_time": "yesterday"}}', 10002),
    ("event", b'{"eventName": "e", "properties": {"phone": "1", "event_id": 7}}', 10002),
    ("event", b'{"eventName": "e", "properties": {"phone": "1", "event_id": "e"}}', 20003),
    (
        "event",
        b'{"eventName": "e", "properties": {"phone": "1", "event_id": "e", "create_time": 5}}',
        20003,
    ),
    (
        "event",
        b'{"eventName": "e", "properties": {"phone": "1", "event_id": "e", "age": "x", '
        b'"create_time": "2018-08-08"}}',
        10002,
    ),
    ("user", b'{"properties": {"phone": "1", "age": null, "amount": 2, "x": [1, {}]}}', 0),
    ("user", b'{"properties": {"phone": "", "email": "a@b"}}', 0),
    ("user_delete", b'{"properties": {"email": "a@b"}}', 0),
    ("event", json.dumps({"eventName": "e", "properties": EV}).encode(), 0),
]


@pytest.mark.parametrize(
    ("kind", "body", "code"),
    BODY_CASES,
    ids=[f"{i:02d}-{k}-{c}" for i, (k, _, c) in enumerate(BODY_CASES)],
)
def test_body_checks(schema: Schema, kind: str, body: bytes, code: int) -> None:
    got, message, parsed = check(kind, body, schema)
    assert (int(got), message if got else "") == (code, message if got else "")
    if code == 0:
        assert message == "请求成功" and isinstance(parsed, dict)
    elif code == 10001:
        assert message == "json数据格式化失败" and parsed is None
    else:
        assert message.startswith(ErrCode(code).description + ": ")


def test_length_limit_counts_characters(schema: Schema) -> None:
    ok = SIGNED.record_body("user", {"phone": "1", "username": "é" * 1024})
    too_long = SIGNED.record_body("user", {"phone": "1", "username": "é" * 1025})
    assert check("user", ok, schema)[0] is ErrCode.OK
    assert check("user", too_long, schema)[:2] == (
        ErrCode.DATA_CHECK_FAILED,
        "Data checking failed: property 'username' is longer than 1024 characters",
    )
    long_event = SIGNED.record_body("event", EV, "e" * 1025)
    assert check("event", long_event, schema)[0] is ErrCode.DATA_CHECK_FAILED


def test_header_checks_in_order(schema: Schema) -> None:
    body = b'{"properties": {"phone": "1"}}'
    good = {k.lower(): v for k, v in SIGNED.auth_headers(schema.secret, body).items()}
    assert check_auth(good, body, schema) is None
    cases = [
        ({}, 10003),
        ({**good, "x-secret": " "}, 10003),
        ({**good, "x-secret": "nobody"}, 20000),
        ({**good, "x-signature": ""}, 20004),
        ({k: v for k, v in good.items() if k != "x-timestamp"}, 20004),
        ({**good, "x-timestamp": "12e5"}, 20004),
        ({**good, "x-signature": good["x-signature"].upper()}, 20004),
    ]
    for headers, code in cases:
        result = check_auth(headers, body, schema)
        assert result is not None and int(result[0]) == code, headers
    now = int(good["x-timestamp"])
    assert check_auth(good, body, schema, now_ms=now + 299_000) is None
    assert check_auth(good, body, schema, now_ms=now - 301_000) is not None


def test_signature_check_can_be_off(schema: Schema) -> None:
    relaxed = Schema.from_dict({**schema.to_dict(), "verify_signature": False}, env={})
    assert check_auth({"x-secret": schema.secret}, b"{}", relaxed) is None


# -- store semantics ----------------------------------------------------------------------------


@pytest.fixture
def fresh(fresh_sandbox: Factory) -> tuple[Sandbox, Api]:
    sb = fresh_sandbox()
    return sb, Api(sb)


def props_of(sb: Sandbox) -> list[dict[str, Any]]:
    return [c["properties"] for c in sb.customers()]


def test_upsert_merges_records_sharing_a_phone(fresh: tuple[Sandbox, Api]) -> None:
    sb, c = fresh
    assert code_of(c.user({"phone": "1", "username": "a", "age": 1})) == 0
    assert code_of(c.user({"phone": "1", "age": 2, "vip": True})) == 0
    assert code_of(c.user({"phone": "1", "username": "a"})) == 0  # same record again
    assert props_of(sb) == [{"phone": "1", "username": "a", "age": 2, "vip": True}]


def test_upsert_matches_by_email_when_the_phone_differs(fresh: tuple[Sandbox, Api]) -> None:
    sb, c = fresh
    c.user({"phone": "1", "email": "a@x", "username": "a"})
    c.user({"phone": "2", "email": "a@x"})
    assert props_of(sb) == [{"phone": "2", "email": "a@x", "username": "a"}]
    c.user({"phone": "2", "age": 5})  # the new phone is indexed
    c.user({"phone": "1", "age": 6})  # the old one no longer is: a new customer
    assert props_of(sb) == [
        {"phone": "2", "email": "a@x", "username": "a", "age": 5},
        {"phone": "1", "age": 6},
    ]


def test_a_record_matching_two_customers_merges_them_into_the_oldest(
    fresh: tuple[Sandbox, Api],
) -> None:
    sb, c = fresh
    c.user({"phone": "1", "username": "old", "age": 1})
    c.user({"email": "b@x", "username": "young"})
    c.user({"phone": "1", "email": "b@x", "vip": False})
    assert sb.customers() == [
        {
            "id": 1,
            "properties": {
                "phone": "1",
                "username": "young",
                "age": 1,
                "email": "b@x",
                "vip": False,
            },
        }
    ]


def test_null_neither_sets_nor_clears(fresh: tuple[Sandbox, Api]) -> None:
    sb, c = fresh
    c.user({"phone": "1", "username": "a"})
    c.user({"phone": "1", "username": None, "email": None})
    assert props_of(sb) == [{"phone": "1", "username": "a"}]


def test_delete_is_idempotent(fresh: tuple[Sandbox, Api]) -> None:
    sb, c = fresh
    c.user({"phone": "1"})
    c.user({"phone": "2"})
    assert code_of(c.user_delete({"phone": "1", "email": "nobody@x"})) == 0
    assert props_of(sb) == [{"phone": "2"}]
    assert code_of(c.user_delete({"phone": "1"})) == 0
    assert code_of(c.user_delete({"email": "never@x"})) == 0
    assert props_of(sb) == [{"phone": "2"}]


def test_events_are_deduplicated_on_name_and_event_id(fresh: tuple[Sandbox, Api]) -> None:
    sb, c = fresh
    assert code_of(c.event("order", {**EV, "amount": 1})) == 0
    assert code_of(c.event("order", {**EV, "amount": 2})) == 0
    assert code_of(c.event("refund", EV)) == 0
    stored = [(e["eventName"], e["event_id"], e["properties"].get("amount")) for e in sb.events()]
    assert stored == [("order", "e1", 1), ("refund", "e1", None)]


def test_debug_mode_returns_the_same_codes_and_stores_nothing(
    fresh: tuple[Sandbox, Api],
) -> None:
    sb, c = fresh
    c.debug = True
    assert code_of(c.user({"phone": "1"})) == 0
    assert code_of(c.user({"phone": "1", "age": "x"})) == 20003
    assert code_of(c.event("order", EV)) == 0
    assert code_of(c.event("order", {**EV, "create_time": "now"})) == 20003
    c.debug = False
    assert code_of(c.user({"phone": "2"})) == 0
    assert code_of(c.user_delete({"phone": "2"})) == 0
    c.user({"phone": "3"})
    c.debug = True
    assert code_of(c.user_delete({"phone": "3"})) == 0
    assert (props_of(sb), sb.events()) == ([{"phone": "3"}], [])


def test_everything_answered_0_is_committed(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    c = Api(sb)

    def send(i: int) -> int:
        return code_of(c.user({"phone": f"p{i}", "username": f"u{i}"}))

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(400)))
    assert codes == [0] * 400
    assert len(sb.customers()) == 400  # read by another connection, right after the answers
    stats = sb.stats()
    assert stats["customers"] == 400 and stats["by_errcode"]["0"] == 400


# -- HTTP ------------------------------------------------------------------------------------------


def test_chunked_request_body(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    phone = unique("phone")
    body = SIGNED.record_body("user", {"phone": phone, "username": "李四"})
    h = SIGNED.auth_headers(sandbox.secret, body)
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
    a, b = body[:10], body[10:]
    chunked = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(a), a, len(b), b)
    raw = f"POST /v1/user HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{head}\r\n".encode()
    reply = http(sandbox, raw + chunked)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(protocol.response_body(0))
    assert any(c["properties"] == {"phone": phone, "username": "李四"} for c in sandbox.customers())


def test_pipelined_requests_are_answered_in_order(
    sandbox: Sandbox, unique: Callable[[str], str]
) -> None:
    good = signed_request(sandbox, SIGNED.record_body("user", {"phone": unique("phone")}))
    bad = signed_request(sandbox, SIGNED.record_body("user", {"age": 1}))
    last = b"GET /_sandbox/health HTTP/1.1\r\nConnection: close\r\n\r\n"
    reply = http(sandbox, good + bad + good + last, read_until_close=True)
    assert reply.count(b"HTTP/1.1 200 OK") == 4
    codes = [int(x.split(b",")[0]) for x in reply.split(b'"errcode":')[1:]]
    assert codes == [0, 20001, 0]
    assert reply.endswith(b'{"status":"ok"}')


def test_expect_100_continue(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    body = SIGNED.record_body("user", {"phone": unique("phone")})
    req = signed_request(sandbox, body)
    head, _, _ = req.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as s:
        s.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert s.recv(1024).endswith(protocol.response_body(0))


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /v1/user HTTP/1.1\r\n\r\n", b"405"),
        (b"DELETE /_sandbox/stats HTTP/1.1\r\n\r\n", b"405"),
        (b"POST /v1/user?debug=yes HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"400"),
        (b"POST /v1/user HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"POST /v1/user HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", b"413"),
        (b"POST /v1/user HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
    ],
    ids=["404", "405", "405-admin", "debug-value", "content-length", "request-line", "413", "501"],
)
def test_http_errors(sandbox: Sandbox, raw: bytes, status: bytes) -> None:
    reply = http(sandbox, raw)
    assert reply.startswith(b"HTTP/1.1 " + status)
    # a 413 is plain text (as a gateway would answer); the others are JSON
    assert (b"text/plain" if status == b"413" else b"application/json") in reply


def test_http_1_0_closes_after_the_answer(sandbox: Sandbox) -> None:
    reply = http(sandbox, b"GET /_sandbox/health HTTP/1.0\r\n\r\n", read_until_close=True)
    assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply


def test_stats_count_paths_codes_and_faults(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(http_503=0.5, seed=3))
    c = Api(sb)
    outcomes = [c.user({"phone": str(i)}) for i in range(20)]
    last = c.user({"age": 1})
    stats = sb.stats()
    n503 = sum(isinstance(o, TransportFailure) for o in [*outcomes, last])
    assert 0 < n503 < 20
    assert stats["by_fault"] == {"http_503": n503}
    assert stats["by_path"][protocol.IMPORT_PATH] == 21
    assert stats["by_http_status"]["503"] == stats["by_fault"]["http_503"]
    assert stats["customers"] == sum(isinstance(o, Response) for o in outcomes)
    assert stats["events"] == 0
    assert stats["requests"] == 21  # admin calls (this stats request) are not counted


def test_stop_closes_the_port_and_open_connections(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    conn = socket.create_connection(("127.0.0.1", sb.port), timeout=5)
    conn.sendall(b"GET /_sandbox/health HTTP/1.1\r\n\r\n")
    assert conn.recv(1024).startswith(b"HTTP/1.1 200")
    sb.stop()
    assert conn.recv(1024) == b""  # closed by the server
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sb.port), timeout=1).close()


def test_latency_and_stall_do_not_block_other_connections(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(latency_ms="150-200"))
    c = Api(sb)
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: c.user({"phone": f"l{i}"}), range(8)))
    elapsed = time.perf_counter() - start
    assert all(code_of(o) == 0 for o in outs)
    assert all(o.latency_ms >= 150 for o in outs)  # type: ignore[union-attr]
    assert elapsed < 1.0  # concurrent: one after another would take at least 1.2 s

    sb.set_faults(Faults(stall=1.0, stall_s=5))
    stalled = Api(sb, timeout=10)
    t = threading.Thread(target=stalled.user, args=({"phone": "s"},), daemon=True)
    t.start()
    time.sleep(0.1)
    sb.set_faults(Faults())
    start = time.perf_counter()
    assert code_of(c.user({"phone": "free"})) == 0
    assert time.perf_counter() - start < 3.0  # the stalled request holds 5 s


# -- faults ------------------------------------------------------------------------------------


def test_fault_plan_is_deterministic_whatever_the_arrival_order() -> None:
    f = Faults(seed=42, http_503=0.1, http_429=0.1, reset=0.05, non_json=0.05, stall=0.02)
    bodies = [b'{"properties": {"phone": "%d"}}' % i for i in range(200)]

    def fates(plan: FaultPlan, order: list[int], attempts: int = 3) -> dict[tuple[int, int], str]:
        """(body, attempt) -> fault, the bodies sent in ``order``, ``attempts`` rounds."""
        out = {}
        for attempt in range(1, attempts + 1):
            for i in order:
                out[i, attempt] = plan.draw("/v1/user", bodies[i]) or "none"
        return out

    forward = fates(FaultPlan(f), list(range(200)))
    shuffled = list(range(200))
    random.Random(1).shuffle(shuffled)
    assert forward == fates(FaultPlan(f), shuffled)  # each attempt's fate is the same
    # the attempt number counts: a body's retries are not all alike
    assert any(forward[i, 1] != forward[i, 2] for i in range(200))
    assert forward != fates(FaultPlan(Faults(**{**f.to_dict(), "seed": 7})), shuffled)
    # so is the path: the same body on another call is another request
    plan = FaultPlan(f)
    assert [plan.draw("/v1/event", b) or "none" for b in bodies] != [
        forward[i, 1] for i in range(200)
    ]
    # latency draws come from another generator: they do not change the faults
    with_latency = FaultPlan(Faults(**{**f.to_dict(), "latency_ms": "1-5"}))
    assert all(0.001 <= with_latency.latency_s() <= 0.005 for _ in range(20))
    assert forward == fates(with_latency, list(range(200)))
    counts = Counter(forward.values())
    assert 30 < counts["http_503"] < 90 and counts["none"] > 350
    assert FaultPlan(Faults()).draw("/v1/user", bodies[0]) is None


def outcome_kinds(sb: Sandbox, n: int) -> list[str]:
    c = Api(sb)
    kinds = []
    for i in range(n):
        o = c.user({"phone": f"d{i}"})
        kinds.append(f"errcode {int(o.errcode)}" if isinstance(o, Response) else str(o.kind))
    return kinds


def test_faults_are_deterministic_through_the_server(fresh_sandbox: Factory) -> None:
    f = Faults(seed=5, http_503=0.1, http_500=0.05, http_429=0.1, errcode_10000=0.1, non_json=0.05)
    f = Faults(**{**f.to_dict(), "reset": 0.05, "truncated": 0.05})
    first = outcome_kinds(fresh_sandbox(faults=f), 200)
    assert first == outcome_kinds(fresh_sandbox(faults=f), 200)
    assert first != outcome_kinds(fresh_sandbox(faults=Faults(**{**f.to_dict(), "seed": 6})), 200)
    assert {"errcode 0", "errcode 10000", "http_status", "protocol", "connection"} <= set(first)


def test_blacklisted_fault_names_the_customer_and_stores_nothing(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(blacklisted=1.0))
    c = Api(sb)
    o = c.user({"phone": "13812345678", "email": "alice.wang@corp.cn", "username": "x"})
    assert isinstance(o, Response)
    assert (int(o.errcode), o.errmsg) == (
        20003,
        'Data checking failed: customer 13812345678 / "alice.wang@corp.cn" is blacklisted',
    )
    o = c.user({"email": "bob@corp.cn"})
    assert o.errmsg == "Data checking failed: customer bob@corp.cn is blacklisted"
    assert sb.customers() == []
    assert sb.stats()["by_fault"] == {"blacklisted": 2}


def test_fault_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="sum"):
        Faults(http_503=0.6, reset=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Faults(stall=2)
    with pytest.raises(ValueError, match="range"):
        Faults(latency_ms="30-10")
    assert Faults(latency_ms="10-30").latency_ms == (10.0, 30.0)
    assert Faults(latency_ms=20).latency_ms == (20.0, 20.0)
    assert parse_fault_specs(["503=0.05", "non-json=0.1", "reset=0"]) == {
        "http_503": 0.05,
        "non_json": 0.1,
        "reset": 0.0,
    }
    with pytest.raises(ValueError, match="NAME=FRACTION"):
        parse_fault_specs(["404=0.1"])


# -- schema ------------------------------------------------------------------------------------


def test_checkout_and_packaged_schemas_are_the_same_file() -> None:
    packaged = PACKAGED_SCHEMA.read_text(encoding="utf-8")
    assert (ROOT / "configs" / "sandbox-schema.yaml").read_text(encoding="utf-8") == packaged


def test_bad_schema_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "secrets": [],
                "primary_keys": "phone",
                "properties": {"age": "int"},
                "max_value_length": 0,
                "paths": {"users": "v1/user"},
                "colour": "blue",
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        load_schema(bad, env={})
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "colour",
        "secrets",
        "primary_keys",
        "properties.age",
        "max_value_length",
        "paths.users",
        "paths.users",
    ]
    assert "DMART_SANDBOX_SECRETS" in str(info.value)


def test_secrets_from_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("secrets: []\n")
    schema = load_schema(f, env={"DMART_SANDBOX_SECRETS": " a-1 , b-2,"})
    assert schema.secrets == ("a-1", "b-2")
    assert "a-1" not in repr(schema)
    with pytest.raises(ConfigError, match="YAML"):
        f.write_text("secrets: [\n")
        load_schema(f, env={})


# -- process mode and the command line -------------------------------------------------------------


def test_process_mode(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(process=True, faults=Faults(http_429=1.0, retry_after="3"))
    c = Api(sb)
    failure = c.user({"phone": "1"})
    assert isinstance(failure, TransportFailure) and failure.retry_after == "3"
    sb.set_faults(Faults())
    assert code_of(c.user({"phone": "1", "username": "王五"})) == 0
    assert sb.customers() == [{"id": 1, "properties": {"phone": "1", "username": "王五"}}]
    assert sb.stats()["customers"] == 1


def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "importer.sandbox", *args], capture_output=True, timeout=30, cwd=ROOT
    )


def test_cli_serve_then_dump(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "importer.sandbox", "serve", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        assert line.endswith(f"(db: {db})")
        url = line.split()[3]
        c = Api(url, load_schema(None, env={}).secret)
        assert code_of(c.user({"phone": "1", "username": "赵六"})) == 0
        assert code_of(c.event("order", EV)) == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "sandbox stopped: 2 requests, 1 customers, 1 events" in err

    dump = run_cli("dump", "--db", str(db))
    assert dump.returncode == 0
    lines = [json.loads(x) for x in dump.stdout.decode("utf-8").splitlines()]
    assert lines == [
        {"id": 1, "properties": {"phone": "1", "username": "赵六"}},
        {"eventName": "order", "event_id": "e1", "properties": EV},
    ]
    assert "赵六".encode() in dump.stdout  # not \u-escaped


@pytest.mark.parametrize("operator", ["", "op-secret-1,op-secret-2,op-secret-1"])
def test_cli_serve_prints_the_secrets_it_accepts(tmp_path: Path, operator: str) -> None:
    """The schema's SECRET is a demo value: printed, with the export line to copy; those of
    DMART_SANDBOX_SECRETS are the operator's: only counted."""
    db = tmp_path / "s.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMART_")}
    if operator:
        env["DMART_SANDBOX_SECRETS"] = operator
    proc = subprocess.Popen(
        [sys.executable, "-m", "importer.sandbox", "serve", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().rstrip("\n")
        url = first.split()[3]
        assert first == f"sandbox listening on {url} (db: {db})"
        count = 8 if operator else 7
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(count)]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    demo = "00000000-0000-4000-8000-000000000000"
    assert lines == [
        f"accepted SECRET (the schema's demo value): {demo}",
        *(["accepted 2 SECRETs from DMART_SANDBOX_SECRETS (not shown)"] if operator else []),
        "send to it with:",
        f"  export DMART_SECRET={demo}",
        f"  dmimport run CONFIG FILE --base-url {url}",
        "read back with (openapi.base_url: the same URL):",
        "  export DMIMPORT_OPENAPI_KEY=demo-access-key DMIMPORT_OPENAPI_SECRET=0123456789abcdef",
        f"  dmimport verify CONFIG RUN_ID --sample 100 --openapi-url {url}",
    ]
    assert out == "" and "op-secret" not in "\n".join(lines)


def test_cli_errors(tmp_path: Path) -> None:
    missing = run_cli("dump", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and b"no sandbox database" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("secrets: [x]\nproperties: {age: int}\n")
    res = run_cli("--schema", str(bad), "--port", "0")
    assert res.returncode == 2 and b"properties.age: unknown type 'int'" in res.stderr
    res = run_cli("serve", "--fault", "503=2", "--port", "0")
    assert res.returncode == 2 and b"between 0 and 1" in res.stderr


def test_every_cli_option_is_documented() -> None:
    from importer.sandbox.command import build_parser

    docs = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "serve" in a.choices)
    for name, sub in subparsers.choices.items():  # type: ignore[union-attr]
        assert name in docs
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in docs, option
