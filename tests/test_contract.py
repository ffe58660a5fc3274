"""One test per row of the API contract's errcode table, over real loopback HTTP.

Every request goes through ``Client`` except where the client cannot produce the fault on
purpose (invalid JSON, bad signatures): those are built with the protocol helpers directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from importer import protocol
from importer.client import Client, Response
from importer.errcodes import ErrCode
from importer.sandbox import Faults, Sandbox


def raw_post(
    sb: Sandbox, kind: str, body: bytes, *, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST ``body`` signed by the protocol helpers (``headers`` override them)."""
    h = protocol.auth_headers(sb.secret, body)
    h["Content-Type"] = "application/json; charset=utf-8"
    h.update(headers or {})
    resp = requests.post(sb.url + protocol.DEFAULT_PROFILE.path(kind, False), data=body, headers=h)
    assert resp.status_code == 200
    return protocol.parse_response(resp.content)


def event_props(unique: Callable[[str], str], **extra: object) -> dict[str, object]:
    props: dict[str, object] = {
        "phone": unique("phone"),
        "event_id": unique("ev"),
        "create_time": "2018-08-08 08:08:08",
    }
    props.update(extra)
    return props


def expect(outcome: object, code: ErrCode) -> Response:
    assert isinstance(outcome, Response), outcome
    assert outcome.errcode is code, outcome
    assert outcome.http_status == 200
    return outcome


# -- 0 ---------------------------------------------------------------------------------------


def test_0_successful(client: Client, unique: Callable[[str], str]) -> None:
    phone = unique("phone")
    r = expect(client.user({"phone": phone, "email": unique("mail"), "age": 80}), ErrCode.OK)
    assert r.errmsg == "请求成功"
    assert r.as_dict() == {"errcode": 0, "errmsg": "请求成功"}
    assert r.ok and not r.retryable and not r.fatal
    expect(client.event("order_detail", event_props(unique, amount=998)), ErrCode.OK)
    expect(client.user_delete({"phone": phone}), ErrCode.OK)


# -- 10000 -----------------------------------------------------------------------------------


def test_10000_system_error(fresh_sandbox: Callable[..., Sandbox], unique: Callable) -> None:
    sb = fresh_sandbox(faults=Faults(errcode_10000=1.0))
    with Client(sb.secret, sb.url) as c:
        r = expect(c.user({"phone": unique("phone")}), ErrCode.SYSTEM_ERROR)
    assert r.retryable and not r.ok
    assert sb.customers() == []


# -- 10001 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"properties": {"phone": "1"', b"\xff\xfe{}", b'[{"properties": {"phone": "1"}}]'],
    ids=["truncated-json", "not-utf8", "array"],
)
def test_10001_json_format(sandbox: Sandbox, body: bytes) -> None:
    assert raw_post(sandbox, "user", body) == (10001, "json数据格式化失败")


# -- 10002 -----------------------------------------------------------------------------------


def test_10002_invalid_type(client: Client, unique: Callable[[str], str]) -> None:
    r = expect(client.user({"phone": unique("phone"), "age": "eighty"}), ErrCode.INVALID_TYPE)
    assert r.errmsg == "invalid type value: property 'age' expects integer"


# -- 10003 -----------------------------------------------------------------------------------


def test_10003_secret_required(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    with Client("", sandbox.url) as c:
        r = expect(c.user({"phone": unique("phone")}), ErrCode.SECRET_REQUIRED)
    assert r.fatal


# -- 10004 -----------------------------------------------------------------------------------


def test_10004_properties_empty(client: Client) -> None:
    expect(client.user({}), ErrCode.PROPERTIES_EMPTY)
    expect(client.event("order_detail", {}), ErrCode.PROPERTIES_EMPTY)


# -- 20000 -----------------------------------------------------------------------------------


def test_20000_authentication_failed(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    with Client("11111111-1111-4111-8111-111111111111", sandbox.url) as c:
        r = expect(c.user({"phone": unique("phone")}), ErrCode.AUTH_FAILED)
    assert r.fatal


# -- 20001 -----------------------------------------------------------------------------------


def test_20001_user_without_primary_key(client: Client) -> None:
    expect(client.user({"username": "tianshl", "age": 80}), ErrCode.PRIMARY_KEY_MISSING)


def test_20001_event_without_event_id(client: Client, unique: Callable[[str], str]) -> None:
    props = event_props(unique)
    del props["event_id"]
    expect(client.event("order_detail", props), ErrCode.PRIMARY_KEY_MISSING)


# -- 20002 -----------------------------------------------------------------------------------


def test_20002_primary_keys_all_empty(client: Client) -> None:
    expect(client.user({"phone": "  ", "email": None, "age": 3}), ErrCode.PRIMARY_KEY_EMPTY)


# -- 20003 -----------------------------------------------------------------------------------


def test_20003_bad_create_time(client: Client, unique: Callable[[str], str]) -> None:
    props = event_props(unique, create_time="2018/08/08 08:08")
    expect(client.event("order_detail", props), ErrCode.DATA_CHECK_FAILED)


def test_20003_missing_event_name(client: Client, unique: Callable[[str], str]) -> None:
    expect(client.event("", event_props(unique)), ErrCode.DATA_CHECK_FAILED)


def test_20003_value_too_long(client: Client, unique: Callable[[str], str]) -> None:
    long_name = "张" * 1025  # the limit counts characters, not bytes
    r = client.user({"phone": unique("phone"), "username": long_name})
    expect(r, ErrCode.DATA_CHECK_FAILED)
    expect(client.user({"phone": unique("phone"), "username": "张" * 1024}), ErrCode.OK)


# -- 20004 -----------------------------------------------------------------------------------


def test_20004_tampered_body(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    signed = protocol.user_body({"phone": unique("phone"), "age": 1})
    sent = signed.replace(b'"age":1', b'"age":2')
    headers = protocol.auth_headers(sandbox.secret, signed)
    assert raw_post(sandbox, "user", sent, headers=headers)[0] == 20004
    assert raw_post(sandbox, "user", signed, headers=headers)[0] == 0


def test_20004_wrong_key(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    body = protocol.user_body({"phone": unique("phone")})
    headers = protocol.auth_headers("some-other-key", body)
    headers["X-Secret"] = sandbox.secret
    assert raw_post(sandbox, "user", body, headers=headers)[0] == 20004


def test_20004_stale_timestamp(sandbox: Sandbox, unique: Callable[[str], str]) -> None:
    body = protocol.user_body({"phone": unique("phone")})
    stale = str(int(time.time() * 1000) - 301_000)
    headers = protocol.auth_headers(sandbox.secret, body, timestamp=stale)
    code, message = raw_post(sandbox, "user", body, headers=headers)
    assert code == 20004
    assert "300 s" in message
