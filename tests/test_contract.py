"""One test per row of the API contract's errcode table, over real loopback HTTP.

The default profile ``import-api`` first (errors come with HTTP 404, as documented; success with
200); then the rows that exist only under ``signed`` (HMAC headers, 20004, 10002 for a value of
the wrong declared type), which answers everything with HTTP 200. Requests are built with the
protocol's helpers (``wire.Api``): the sandbox is what is tested here, not a client.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests
from wire import Api

from importer import protocol
from importer.errcodes import ErrCode
from importer.outcomes import Outcome, Response
from importer.sandbox import Faults, Sandbox

SIGNED = protocol.SIGNED_PROFILE


@pytest.fixture
def api(sandbox: Sandbox) -> Api:
    return Api(sandbox)


def event_props(unique: Callable[[str], str], **extra: object) -> dict[str, object]:
    props: dict[str, object] = {
        "phone": unique("phone"),
        "event_id": unique("ev"),
        "create_time": "2018-08-08 08:08:08",
    }
    props.update(extra)
    return props


def expect(outcome: Outcome, code: ErrCode, status: int | None = None) -> Response:
    assert isinstance(outcome, Response), outcome
    assert outcome.errcode is code, outcome
    assert outcome.http_status == (status or (200 if code is ErrCode.OK else 404))
    return outcome


# -- 0 ---------------------------------------------------------------------------------------


def test_0_successful(api: Api, unique: Callable[[str], str]) -> None:
    phone = unique("phone")
    r = expect(api.user({"phone": phone, "email": unique("mail"), "age": 80}), ErrCode.OK)
    assert r.errmsg == "请求成功"
    assert r.as_dict() == {"errcode": 0, "errmsg": "请求成功"}
    assert r.ok and not r.retryable and not r.fatal
    expect(api.user_batch([{"phone": unique("phone")}, {"phone": unique("phone")}]), ErrCode.OK)
    expect(api.event("order_detail", event_props(unique, amount=998)), ErrCode.OK)
    batch = [event_props(unique), event_props(unique)]
    expect(api.event_batch("order_detail", batch), ErrCode.OK)
    expect(api.user_delete({"phone": phone}), ErrCode.OK)


# -- 10000 -----------------------------------------------------------------------------------


def test_10000_system_error(fresh_sandbox: Callable[..., Sandbox], unique: Callable) -> None:
    sb = fresh_sandbox(faults=Faults(errcode_10000=1.0))
    r = expect(Api(sb).user({"phone": unique("phone")}), ErrCode.SYSTEM_ERROR)
    assert r.retryable and not r.ok
    assert sb.customers() == []


# -- 10001 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"type": "user", "properties": {"phone": "1"', b"\xff\xfe{}", b'[{"type": "user"}]'],
    ids=["truncated-json", "not-utf8", "array"],
)
def test_10001_json_format(api: Api, body: bytes) -> None:
    r = expect(api.post(body), ErrCode.JSON_FORMAT)
    assert r.errmsg == "json数据格式化失败"


# -- 10002 -----------------------------------------------------------------------------------


def test_10002_body_type_invalid(api: Api, unique: Callable[[str], str]) -> None:
    r = expect(api.post(b'{"type": "customer", "properties": {}}'), ErrCode.INVALID_TYPE)
    assert r.errmsg == (
        "invalid type value: type 'customer' is not valid "
        "(one of user, event, user_delete, user_batch, event_batch)"
    )
    batch_delete = b'{"type": "user_delete", "properties": [{"phone": "1"}]}'
    r = expect(api.post(batch_delete), ErrCode.INVALID_TYPE)
    assert r.errmsg == "invalid type value: properties of user_delete must be an object"
    # under import-api 10002 says the call type is refused: the run stops with advice
    assert protocol.DEFAULT_PROFILE.category(ErrCode.INVALID_TYPE).value == "fatal"


# -- 10003 -----------------------------------------------------------------------------------


def test_10003_secret_required(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    r = expect(Api(sandbox, "").user({"phone": unique("phone")}), ErrCode.SECRET_REQUIRED)
    assert r.fatal
    body = protocol.DEFAULT_PROFILE.record_body("user", {"phone": unique("phone")})
    resp = requests.post(sandbox.url + protocol.IMPORT_PATH, data=body)
    assert resp.status_code == 404
    assert protocol.parse_response(resp.content)[0] == 10003


# -- 10004 -----------------------------------------------------------------------------------


def test_10004_properties_empty(api: Api) -> None:
    expect(api.user({}), ErrCode.PROPERTIES_EMPTY)
    expect(api.event("order_detail", {}), ErrCode.PROPERTIES_EMPTY)
    r = expect(api.post(b'{"type": "user_batch", "properties": []}'), ErrCode.PROPERTIES_EMPTY)
    assert r.errmsg == "Properties are empty: properties is []"


# -- 20000 -----------------------------------------------------------------------------------


def test_20000_authentication_failed(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    other = Api(sandbox, "11111111-1111-4111-8111-111111111111")
    r = expect(other.user({"phone": unique("phone")}), ErrCode.AUTH_FAILED)
    assert r.fatal and r.errmsg == "Authentication failed: unknown secret"


# -- 20001 -----------------------------------------------------------------------------------


def test_20001_user_without_primary_key(api: Api) -> None:
    expect(api.user({"username": "tianshl", "age": 80}), ErrCode.PRIMARY_KEY_MISSING)


def test_20001_event_without_event_id(api: Api, unique: Callable[[str], str]) -> None:
    props = event_props(unique)
    del props["event_id"]
    expect(api.event("order_detail", props), ErrCode.PRIMARY_KEY_MISSING)


# -- 20002 -----------------------------------------------------------------------------------


def test_20002_primary_keys_all_empty(api: Api) -> None:
    expect(api.user({"phone": "  ", "email": None, "age": 3}), ErrCode.PRIMARY_KEY_EMPTY)


# -- 20003 -----------------------------------------------------------------------------------


def test_20003_bad_create_time(api: Api, unique: Callable[[str], str]) -> None:
    props = event_props(unique, create_time="2018/08/08 08:08")
    expect(api.event("order_detail", props), ErrCode.DATA_CHECK_FAILED)


def test_20003_missing_event_name(api: Api, unique: Callable[[str], str]) -> None:
    expect(api.event("", event_props(unique)), ErrCode.DATA_CHECK_FAILED)


def test_20003_value_too_long(api: Api, unique: Callable[[str], str]) -> None:
    long_name = "张" * 1025  # the limit counts characters, not bytes
    expect(api.user({"phone": unique("phone"), "username": long_name}), ErrCode.DATA_CHECK_FAILED)
    expect(api.user({"phone": unique("phone"), "username": "张" * 1024}), ErrCode.OK)


def test_20003_wrong_value_type(api: Api, unique: Callable[[str], str]) -> None:
    r = expect(api.user({"phone": unique("phone"), "age": "eighty"}), ErrCode.DATA_CHECK_FAILED)
    assert r.errmsg == "Data checking failed: property 'age' expects integer"


def test_20003_unknown_property(api: Api, unique: Callable[[str], str]) -> None:
    r = expect(api.user({"phone": unique("phone"), "shoe": 42}), ErrCode.DATA_CHECK_FAILED)
    assert (
        r.errmsg == "Data checking failed: property 'shoe' is not defined in the account's metadata"
    )


# -- signed: 10002 for a wrong value type, 20004, HTTP 200 ---------------------------------------


def raw_post(
    sb: Sandbox, kind: str, body: bytes, *, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST ``body`` to a signed path, signed by the protocol helpers (``headers`` override)."""
    h = SIGNED.auth_headers(sb.secret, body)
    h["Content-Type"] = "application/json; charset=utf-8"
    h.update(headers or {})
    resp = requests.post(sb.url + SIGNED.target(kind, False, sb.secret), data=body, headers=h)
    assert resp.status_code == 200
    return protocol.parse_response(resp.content)


def test_signed_10002_invalid_type(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    r = expect(
        Api(sandbox, profile=SIGNED).user({"phone": unique("phone"), "age": "eighty"}),
        ErrCode.INVALID_TYPE,
        200,
    )
    assert r.errmsg == "invalid type value: property 'age' expects integer"


def test_signed_10003_and_20000(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    body = SIGNED.record_body("user", {"phone": unique("phone")})
    assert raw_post(sandbox, "user", body, headers={"X-Secret": ""})[0] == 10003
    assert raw_post(sandbox, "user", body, headers={"X-Secret": "nobody"})[0] == 20000


def test_20004_tampered_body(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    signed = SIGNED.record_body("user", {"phone": unique("phone"), "age": 1})
    sent = signed.replace(b'"age":1', b'"age":2')
    headers = SIGNED.auth_headers(sandbox.secret, signed)
    assert raw_post(sandbox, "user", sent, headers=headers)[0] == 20004
    assert raw_post(sandbox, "user", signed, headers=headers)[0] == 0


def test_20004_wrong_key(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    body = SIGNED.record_body("user", {"phone": unique("phone")})
    headers = SIGNED.auth_headers("some-other-key", body)
    headers["X-Secret"] = sandbox.secret
    assert raw_post(sandbox, "user", body, headers=headers)[0] == 20004


def test_20004_stale_timestamp(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    body = SIGNED.record_body("user", {"phone": unique("phone")})
    stale = str(int(time.time() * 1000) - 301_000)
    headers = SIGNED.auth_headers(sandbox.secret, body, timestamp=stale)
    code, message = raw_post(sandbox, "user", body, headers=headers)
    assert code == 20004
    assert "300 s" in message
