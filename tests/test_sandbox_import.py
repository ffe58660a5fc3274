"""The sandbox's ``import-api`` profile: the documented endpoint, the secret query parameter,
body dispatch on ``type``, batches under both ``batch_errors``, the 413 limits, the error HTTP
status, and the stats. Everything over real loopback HTTP, except the table of body checks,
which also runs through the pure ``check_import``."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from wire import Api, answer_of, code_of

from importer import protocol
from importer.errors import ConfigError
from importer.outcomes import Response, TransportFailure
from importer.sandbox import Sandbox, Schema, check_import, load_schema
from importer.sandbox.schema import PACKAGED_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
Factory = Callable[..., Sandbox]
IMPORT = protocol.DEFAULT_PROFILE
SIGNED = protocol.SIGNED_PROFILE
EV = {"phone": "1", "event_id": "e1", "create_time": "2018-08-08 08:08:08"}
OK = (0, "请求成功")


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema(PACKAGED_SCHEMA, env={})


@pytest.fixture(params=["reject_all", "store_valid"])
def batch_errors(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def target(sb: Sandbox, query: str) -> str:
    return f"{sb.url}{protocol.IMPORT_PATH}?{query}"


# -- both profiles on one server; auth by the secret query parameter ---------------------------


def test_both_profiles_are_served_at_once(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    assert code_of(Api(sb).user({"phone": "1", "username": "import"})) == 0
    assert code_of(Api(sb, profile=SIGNED).user({"phone": "2", "username": "signed"})) == 0
    assert code_of(Api(sb, profile=SIGNED).event("order", EV)) == 0
    assert [c["properties"]["username"] for c in sb.customers()] == ["import", "signed"]
    assert len(sb.events()) == 1
    # under signed, the HMAC headers are still required
    r = requests.post(sb.url + "/v1/user", data=b'{"properties":{"phone":"3"}}')
    assert (r.status_code, protocol.parse_response(r.content)[0]) == (200, 10003)


def test_secret_query_parameter(fresh_sandbox: Factory, tmp_path: Path) -> None:
    odd = "a%b&c+d=e/f?g"  # every character that must be percent-encoded
    sb = fresh_sandbox(schema=load_schema(PACKAGED_SCHEMA, env={}).replace(secrets=[odd]))
    body = IMPORT.record_body("user", {"phone": "1"})
    cases = [
        ("", 404, (10003, "Secret parameters required: no secret query parameter")),
        ("secret=", 404, (10003, "Secret parameters required: no secret query parameter")),
        ("debug=false", 404, (10003, "Secret parameters required: no secret query parameter")),
        ("secret=a%25b", 404, (20000, "Authentication failed: unknown secret")),
        (f"secret={odd}", 404, (20000, "Authentication failed: unknown secret")),  # not encoded
        (IMPORT.target("user", False, odd).partition("?")[2], 200, OK),
    ]
    for query, status, expected in cases:
        r = requests.post(target(sb, query), data=body)
        assert (r.status_code, protocol.parse_response(r.content)) == (status, expected), query
    assert len(sb.customers()) == 1
    # no HMAC header is asked for, and X-Secret is not a way in
    r = requests.post(target(sb, ""), data=body, headers=SIGNED.auth_headers(odd, body))
    assert protocol.parse_response(r.content)[0] == 10003


def test_debug_checks_and_stores_nothing(fresh_sandbox: Factory, batch_errors: str) -> None:
    sb = fresh_sandbox(batch_errors=batch_errors)
    api = Api(sb, debug=True)
    assert code_of(api.user_batch([{"phone": "1"}, {"phone": "2"}])) == 0
    assert answer_of(api.user_batch([{"phone": "3"}, {"phone": "4", "age": "x"}])) == (
        20003,
        "Data checking failed: property 'age' expects integer",
    )
    assert code_of(api.event_batch("order", [EV, {**EV, "event_id": "e2"}])) == 0
    assert code_of(api.user_delete({"phone": "1"})) == 0
    assert (sb.customers(), sb.events()) == ([], [])
    assert sb.stats()["items"] == {"received": 7, "stored": 0}
    r = requests.post(target(sb, f"secret={sb.secret}&debug=yes"), data=b"{}")
    assert r.status_code == 400


# -- the body checks, in order ---------------------------------------------------------------

BAD_TYPE = "invalid type value: "
TYPES = "(one of user, event, user_delete, user_batch, event_batch)"
EMPTY = "Properties are empty: "
CHECK = "Data checking failed: "
PK = "Lack of property which is primary key: "
PK_EMPTY = "At least one valid value is needed in property which is primary key: "
JSON = (10001, "json数据格式化失败")

BODY_CASES: list[tuple[Any, tuple[int, str]]] = [
    (b'{"type": "user", "properties": {"phone": "1"', JSON),
    (b"[]", JSON),
    (b'{"type": "user", "type": "user", "properties": {"phone": "1"}}', JSON),
    ({"properties": {"phone": "1"}}, (10002, f"{BAD_TYPE}type is missing {TYPES}")),
    (
        {"type": "users", "properties": {"phone": "1"}},
        (10002, f"{BAD_TYPE}type 'users' is not valid {TYPES}"),
    ),
    ({"type": 5, "properties": {"phone": "1"}}, (10002, f"{BAD_TYPE}type 5 is not valid {TYPES}")),
    (
        {"type": "user_delete_batch", "properties": [{"phone": "1"}]},
        (10002, f"{BAD_TYPE}type 'user_delete_batch' is not valid {TYPES}"),
    ),
    (
        {"type": "user_batch", "properties": {"phone": "1"}},
        (10002, f"{BAD_TYPE}properties of user_batch must be a list of objects"),
    ),
    (
        {"type": "event_batch", "event": "e", "properties": "x"},
        (10002, f"{BAD_TYPE}properties of event_batch must be a list of objects"),
    ),
    (
        {"type": "user", "properties": [{"phone": "1"}]},
        (10002, f"{BAD_TYPE}properties of user must be an object"),
    ),
    (
        {"type": "user_delete", "properties": [{"phone": "1"}]},
        (10002, f"{BAD_TYPE}properties of user_delete must be an object"),
    ),
    ({"type": "event", "properties": EV}, (20003, f"{CHECK}event is missing or empty")),
    (
        {"type": "event_batch", "event": " ", "properties": [EV]},
        (20003, f"{CHECK}event is missing or empty"),
    ),
    (
        {"type": "event", "event": "e" * 1025, "properties": EV},
        (20003, f"{CHECK}event is longer than 1024 characters"),
    ),
    ({"type": "user"}, (10004, f"{EMPTY}properties is missing")),
    ({"type": "user", "properties": None}, (10004, f"{EMPTY}properties is missing")),
    ({"type": "user", "properties": {}}, (10004, f"{EMPTY}properties is {{}}")),
    ({"type": "user_batch", "properties": []}, (10004, f"{EMPTY}properties is []")),
    ({"type": "event_batch", "event": "e", "properties": []}, (10004, f"{EMPTY}properties is []")),
    (
        {"type": "user_batch", "properties": [{"phone": "1"}, 7]},
        (10004, f"{EMPTY}properties is not an object"),
    ),
    (
        {"type": "user_batch", "properties": [{"phone": "1"}, {}]},
        (10004, f"{EMPTY}properties is {{}}"),
    ),
    (
        {"type": "user", "properties": {"age": 1}},
        (20001, f"{PK}no primary-key property (phone, email)"),
    ),
    (
        {
            "type": "event",
            "event": "e",
            "properties": {"phone": "1", "create_time": "2018-08-08 08:08:08"},
        },
        (20001, f"{PK}event_id is missing"),
    ),
    (
        {"type": "user", "properties": {"phone": " ", "email": None}},
        (20002, f"{PK_EMPTY}every primary-key value is empty (phone, email)"),
    ),
    (
        {"type": "user", "properties": {"phone": "1", "age": "x"}},
        (20003, f"{CHECK}property 'age' expects integer"),
    ),
    (
        {"type": "user", "properties": {"phone": 1}},
        (20003, f"{CHECK}property 'phone' expects string"),
    ),
    (
        {"type": "user", "properties": {"phone": "1", "colour": "red"}},
        (20003, f"{CHECK}property 'colour' is not defined in the account's metadata"),
    ),
    (
        {"type": "user", "properties": {"phone": "1", "colour": None}},
        (20003, f"{CHECK}property 'colour' is not defined in the account's metadata"),
    ),
    (
        {"type": "user", "properties": {"phone": "1", "username": "x" * 1025}},
        (20003, f"{CHECK}property 'username' is longer than 1024 characters"),
    ),
    (
        {"type": "event", "event": "e", "properties": {**EV, "create_time": "2018-02-30 00:00:00"}},
        (20003, f"{CHECK}create_time is not YYYY-MM-DD HH:MM:SS"),
    ),
    (
        {"type": "event_batch", "event": "e", "properties": [EV, {**EV, "create_time": None}]},
        (20003, f"{CHECK}create_time is missing"),
    ),
    ({"type": "user", "properties": {"phone": "1", "age": None}}, OK),
    ({"type": "user_batch", "properties": [{"phone": "1"}]}, OK),
    ({"type": "user_batch", "properties": [{"phone": "1"}, {"email": "a@b", "vip": True}]}, OK),
    ({"type": "event", "event": "e", "properties": EV}, OK),
    ({"type": "event_batch", "event": "e", "properties": [EV, {**EV, "event_id": "e2"}]}, OK),
    ({"type": "user_delete", "properties": {"email": "a@b"}}, OK),
]


def encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    BODY_CASES,
    ids=[f"{i:02d}-{code}" for i, (_, (code, _)) in enumerate(BODY_CASES)],
)
def test_body_checks(schema: Schema, body: Any, expected: tuple[int, str]) -> None:
    for setting in ("reject_all", "store_valid"):
        result = check_import(encoded(body), schema.replace(batch_errors=setting))
        assert (int(result.code), result.message) == expected


def test_body_checks_over_http(fresh_sandbox: Factory, batch_errors: str) -> None:
    sb = fresh_sandbox(batch_errors=batch_errors)
    api = Api(sb)
    for body, expected in BODY_CASES:
        assert answer_of(api.post(encoded(body))) == expected, body
        assert api.status == (200 if expected == OK else 404)


def test_unknown_properties_can_be_accepted(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(unknown_properties="accept")
    api = Api(sb)
    assert code_of(api.user({"phone": "1", "colour": "red", "age": 1})) == 0
    assert answer_of(api.user({"phone": "1", "age": "x"})) == (
        20003,
        "Data checking failed: property 'age' expects integer",
    )
    assert [c["properties"] for c in sb.customers()] == [{"phone": "1", "colour": "red", "age": 1}]


def test_signed_keeps_its_rules(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    api = Api(sb, profile=SIGNED)
    assert code_of(api.user({"phone": "1", "colour": "red"})) == 0  # undeclared: accepted
    assert answer_of(api.user({"phone": "1", "age": "x"})) == (
        10002,
        "invalid type value: property 'age' expects integer",
    )
    assert api.status == 200  # signed answers errors with 200, whatever error_http_status says


# -- batches: reject_all and store_valid -------------------------------------------------------


def test_a_bad_batch_answers_its_first_bad_item(fresh_sandbox: Factory, batch_errors: str) -> None:
    sb = fresh_sandbox(batch_errors=batch_errors)
    api = Api(sb)
    items = [
        {"phone": "1", "username": "a"},
        {"username": "no key"},  # 20001: the first bad item
        {"phone": "3", "age": "x"},  # 20003
        {"phone": "4"},
    ]
    assert answer_of(api.user_batch(items)) == (
        20001,
        "Lack of property which is primary key: no primary-key property (phone, email)",
    )
    assert api.status == 404
    stored = [c["properties"] for c in sb.customers()]
    if batch_errors == "reject_all":
        assert stored == []
        assert sb.stats()["items"] == {"received": 4, "stored": 0}
    else:
        assert stored == [{"phone": "1", "username": "a"}, {"phone": "4"}]
        assert sb.stats()["items"] == {"received": 4, "stored": 2}


def test_a_bad_event_batch(fresh_sandbox: Factory, batch_errors: str) -> None:
    sb = fresh_sandbox(batch_errors=batch_errors)
    items = [EV, {**EV, "event_id": "e2", "create_time": "now"}, {**EV, "event_id": "e3"}]
    assert answer_of(Api(sb).event_batch("order", items)) == (
        20003,
        "Data checking failed: create_time is not YYYY-MM-DD HH:MM:SS",
    )
    ids = [e["event_id"] for e in sb.events()]
    assert ids == ([] if batch_errors == "reject_all" else ["e1", "e3"])


def test_batches_store_in_order_and_deduplicate_events(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    api = Api(sb)
    batch = [{"phone": "1", "age": 1}, {"phone": "2"}, {"phone": "1", "age": 2, "vip": True}]
    assert code_of(api.user_batch(batch)) == 0
    assert [c["properties"] for c in sb.customers()] == [
        {"phone": "1", "age": 2, "vip": True},
        {"phone": "2"},
    ]
    events = [EV, {**EV, "event_id": "e2", "amount": 1}, {**EV, "amount": 9}]
    assert code_of(api.event_batch("order", events)) == 0
    assert code_of(api.event_batch("order", events)) == 0  # resent: nothing new
    stored = [(e["eventName"], e["event_id"], e["properties"].get("amount")) for e in sb.events()]
    assert stored == [("order", "e1", None), ("order", "e2", 1)]
    assert code_of(api.user_delete({"phone": "2"})) == 0
    assert len(sb.customers()) == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_store_valid_stores_what_single_requests_would(fresh_sandbox: Factory, seed: int) -> None:
    """A store_valid batch leaves the store as sending its items one at a time does, and a
    reject_all batch that answered 0 too."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for i in range(60):
        item: dict[str, Any] = {"phone": f"{rng.randrange(20)}", "age": i}
        bad = rng.random()
        if bad < 0.1:
            item["age"] = "x"
        elif bad < 0.2:
            del item["phone"]
        elif bad < 0.25:
            item["colour"] = "red"
        items.append(item)
    batched = fresh_sandbox(batch_errors="store_valid")
    single = fresh_sandbox()
    Api(batched).user_batch(items)
    codes = [code_of(Api(single).user(item)) for item in items]
    assert any(codes) and not all(codes)
    assert batched.customers() == single.customers()


# -- limits: 413 -------------------------------------------------------------------------------


def test_max_batch_rows(fresh_sandbox: Factory, batch_errors: str) -> None:
    sb = fresh_sandbox(max_batch_rows=3, batch_errors=batch_errors)
    api = Api(sb)
    outcome = api.user_batch([{"phone": str(i)} for i in range(4)])
    assert isinstance(outcome, TransportFailure) and outcome.too_big
    assert api.status == 413 and api.body == b"413 Request Entity Too Large"
    assert sb.customers() == []
    assert code_of(api.user_batch([{"phone": str(i)} for i in range(3)])) == 0  # same connection
    assert len(sb.customers()) == 3
    assert sb.stats()["by_http_status"]["413"] == 1


def test_max_body_bytes(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(max_body_bytes=300)
    api = Api(sb)
    small = [{"phone": str(i)} for i in range(5)]
    big = [{"phone": str(i), "username": "x" * 50} for i in range(10)]
    assert code_of(api.user_batch(small)) == 0
    outcome = api.user_batch(big)
    assert isinstance(outcome, TransportFailure) and outcome.http_status == 413
    assert api.body == b"413 Request Entity Too Large"
    # the limit holds on every path, the signed ones included
    signed = Api(sb, profile=SIGNED)
    outcome = signed.user({"phone": "1", "username": "x" * 400})
    assert isinstance(outcome, TransportFailure) and outcome.http_status == 413
    assert len(sb.customers()) == 5


def test_a_much_too_big_body_still_gets_its_413(fresh_sandbox: Factory) -> None:
    """The server reads and drops the rest of the body after its 413, so the client, still
    sending several megabytes, reads the answer instead of a reset."""
    sb = fresh_sandbox(max_body_bytes=1000)
    big = [{"phone": str(i), "username": "x" * 1000} for i in range(4000)]  # about 4 MB
    api = Api(sb)
    outcome = api.user_batch(big)
    assert isinstance(outcome, TransportFailure) and outcome.http_status == 413, outcome
    assert code_of(Api(sb).user({"phone": "1"})) == 0


def test_a_too_big_chunked_body(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(max_body_bytes=100)
    head = f"POST {IMPORT.target('user', False, sb.secret)} HTTP/1.1\r\nHost: x\r\n"
    raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"c8\r\n" + b"x" * 200 + b"\r\n"
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as s:
        s.sendall(raw)
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"text/plain" in reply
    assert reply.endswith(b"\r\n\r\n413 Request Entity Too Large")


# -- the HTTP status of errors ------------------------------------------------------------------


def test_error_http_status(fresh_sandbox: Factory) -> None:
    for status in (404, 200, 400):
        sb = fresh_sandbox(error_http_status=status)
        api = Api(sb)
        assert code_of(api.user({"phone": "1"})) == 0 and api.status == 200
        assert code_of(api.user({"age": 1})) == 20001 and api.status == status
        assert code_of(Api(sb, "wrong").user({"phone": "1"})) == 20000 and api.status == status
        signed = Api(sb, profile=SIGNED)
        assert code_of(signed.user({"age": 1})) == 20001 and signed.status == 200


# -- stats ------------------------------------------------------------------------------------


def test_stats_count_items_and_body_types(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    api = Api(sb)
    api.user_batch([{"phone": "1"}, {"phone": "2"}, {"phone": "3"}])
    api.user({"phone": "4"})
    api.event_batch("order", [EV, {**EV, "event_id": "e2"}])
    api.event("order", {**EV, "event_id": "e3"})
    api.user_delete({"phone": "4"})
    api.post(b'{"type": "nope", "properties": {}}')
    api.post(b"not json")
    Api(sb, "wrong").user({"phone": "5"})  # refused before the body is read
    Api(sb, profile=SIGNED).user({"phone": "6"})
    stats = sb.stats()
    assert stats["by_type"] == {
        protocol.IMPORT_PATH: {
            "user_batch": 1,
            "user": 1,
            "event_batch": 1,
            "event": 1,
            "user_delete": 1,
            "<invalid>": 1,
            "<not_json>": 1,
        },
        "/v1/user": {"user": 1},
    }
    assert stats["items"] == {"received": 9, "stored": 9}
    assert stats["by_path"] == {protocol.IMPORT_PATH: 8, "/v1/user": 1, "/_sandbox/stats": 1}
    assert stats["requests"] == 9
    assert stats["by_http_status"] == {"200": 6, "404": 3}
    assert stats["customers"] == 4 and stats["events"] == 3


# -- schema, harness and command line ------------------------------------------------------------


def test_account_settings_are_validated(schema: Schema) -> None:
    with pytest.raises(ConfigError) as info:
        Schema.from_dict(
            {
                **schema.to_dict(),
                "batch_errors": "some",
                "unknown_properties": "ignore",
                "max_batch_rows": -1,
                "max_body_bytes": 0,
                "error_http_status": 413,
                "import_path": "/v1/user",
            },
            env={},
        )
    assert [p.path for p in info.value.problems] == [
        "import_path",
        "unknown_properties",
        "batch_errors",
        "max_batch_rows",
        "max_body_bytes",
        "error_http_status",
    ]
    with pytest.raises(ConfigError, match="unknown key"):
        schema.replace(batch_error="store_valid")
    changed = schema.replace(batch_errors="store_valid", max_batch_rows=500)
    assert (changed.batch_errors, changed.max_batch_rows, schema.batch_errors) == (
        "store_valid",
        500,
        "reject_all",
    )
    assert Schema.from_dict(changed.to_dict(), env={}) == changed
    assert "00000000" not in repr(changed)


def test_the_import_path_is_configurable(fresh_sandbox: Factory, schema: Schema) -> None:
    sb = fresh_sandbox(schema=schema.replace(import_path="/custom/import"))
    profile = protocol.Profile(import_path="/custom/import")
    assert code_of(Api(sb, profile=profile).user({"phone": "1"})) == 0
    r = requests.post(target(sb, f"secret={sb.secret}"), data=b"{}")
    assert r.status_code == 404 and b"not found" in r.content  # not the contract's JSON


def test_process_mode_carries_the_account_settings(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(process=True, batch_errors="store_valid", max_batch_rows=2)
    api = Api(sb)
    assert code_of(api.user_batch([{"phone": "1"}, {"age": 1}])) == 20001
    assert len(sb.customers()) == 1
    assert isinstance(api.user_batch([{"phone": "1"}] * 3), TransportFailure)


def test_cli_flags_override_the_schema(tmp_path: Path) -> None:
    schema_file = tmp_path / "s.yaml"
    schema_file.write_text(yaml.safe_dump({"secrets": ["s-1"], "properties": {"phone": "string"}}))
    cmd = [sys.executable, "-m", "importer.sandbox", "serve", "--port", "0", "-v",
           "--schema", str(schema_file), "--batch-errors", "store_valid", "--max-batch-rows", "3",
           "--unknown-properties", "accept", "--error-http-status", "200",
           "--max-body-bytes", "5000"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        api = Api(url, "s-1")
        assert code_of(api.user_batch([{"phone": "1", "x": 1}, {"x": 2}])) == 20001
        assert api.status == 200
        assert isinstance(api.user_batch([{"phone": "1"}] * 4), TransportFailure)
        assert api.status == 413
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    # the request log shows the query with the secret hidden
    assert f"POST {protocol.IMPORT_PATH}?secret=*** " not in err
    assert f"POST {protocol.IMPORT_PATH}?secret=***" in err and "s-1" not in err
    res = subprocess.run(
        [sys.executable, "-m", "importer.sandbox", "serve", "--batch-errors", "some"],
        capture_output=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2 and b"invalid choice: 'some'" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "importer.sandbox", "serve", "--error-http-status", "500"],
        capture_output=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2 and b"error_http_status: must be 200 or a 4xx" in res.stderr


def test_outcomes_are_the_contracts(fresh_sandbox: Factory) -> None:
    """What a client makes of the answers: the documented 404 with an errcode body is that
    errcode, not an HTTP failure."""
    sb = fresh_sandbox()
    outcome = Api(sb).user({"age": 1})
    assert isinstance(outcome, Response) and outcome.http_status == 404
    assert not outcome.fatal and not outcome.retryable
