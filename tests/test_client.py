"""The SDK client against a real sandbox: outcomes, transport failures, aliases, secrecy."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from importer import protocol
from importer.client import (
    DEFAULT_BASE_URL,
    SDK,
    Client,
    PlainHttpWarning,
    Response,
    TransportFailure,
    TransportKind,
)
from importer.errcodes import ErrCode
from importer.sandbox import Faults, Sandbox
from importer.sandbox.schema import Schema

Factory = Callable[..., Sandbox]


def failure(outcome: object, kind: TransportKind) -> TransportFailure:
    assert isinstance(outcome, TransportFailure), outcome
    assert outcome.kind is kind, outcome
    assert not outcome.ok
    return outcome


def faulty(fresh_sandbox: Factory, **faults: Any) -> tuple[Sandbox, Client]:
    sb = fresh_sandbox(faults=Faults(**faults))
    return sb, Client(sb.secret, sb.url, timeout=5.0)


# -- responses and callbacks -------------------------------------------------------------------


def test_callback_gets_the_dict_and_the_call_returns_the_outcome(
    client: Client, unique: Callable[[str], str]
) -> None:
    seen: list[dict[str, Any]] = []
    outcome = client.user({"phone": unique("phone")}, seen.append)
    assert isinstance(outcome, Response)
    assert seen == [{"errcode": 0, "errmsg": "请求成功"}]
    assert outcome.latency_ms > 0


def test_callback_gets_a_failure_dict_with_errcode_none(fresh_sandbox: Factory) -> None:
    _, c = faulty(fresh_sandbox, http_503=1.0)
    seen: list[dict[str, Any]] = []
    failure(c.user({"phone": "1"}, seen.append), TransportKind.HTTP_STATUS)
    assert seen[0]["errcode"] is None
    assert seen[0]["kind"] == "http_status" and seen[0]["http_status"] == 503


def test_unknown_errcode_is_kept_as_an_int() -> None:
    r = Response(12345, "new code")
    assert r.errcode == 12345 and not r.ok and not r.retryable and not r.fatal
    assert r.category is None


def test_signature_problems_are_retryable_config_problems_fatal() -> None:
    assert Response(ErrCode.SIGNATURE_FAILED, "").retryable
    assert Response(ErrCode.AUTH_FAILED, "").fatal
    assert not Response(ErrCode.INVALID_TYPE, "").retryable


def test_chinese_text_round_trips_byte_for_byte(
    sandbox: Sandbox, client: Client, unique: Callable[[str], str]
) -> None:
    phone = unique("phone")
    props = {"phone": phone, "username": "张三丰 北京市"}
    body = protocol.DEFAULT_PROFILE.record_body("user", props)
    assert b"\\u" not in body and "张三丰".encode() in body
    assert client.user(props).ok
    stored = next(c for c in sandbox.customers() if c["properties"].get("phone") == phone)
    assert stored["properties"] == props
    raw = next(t for t in sandbox.stored_json() if phone in t)
    assert "张三丰" in raw and "\\u" not in raw


def test_url_shows_the_secret_as_stars_and_debug_in_the_query(sandbox: Sandbox) -> None:
    c = Client(sandbox.secret, sandbox.url + "/")
    assert c.protocol == "import-api"
    assert c.url("user") == f"{sandbox.url}/api/v1/api/import?secret=***"
    c.set_debug(True)
    assert c.url("user_delete") == f"{sandbox.url}/api/v1/api/import?secret=***&debug=true"
    s = Client(sandbox.secret, sandbox.url, protocol="signed")
    assert s.url("user") == f"{sandbox.url}/v1/user?debug=false"
    s.set_debug(True)
    assert s.url("user_delete") == f"{sandbox.url}/v1/userDelete?debug=true"


def test_send_posts_prebuilt_bytes(client: Client, unique: Callable[[str], str]) -> None:
    body = protocol.DEFAULT_PROFILE.record_body("user", {"phone": unique("phone")})
    assert client.send("user", body).ok
    with pytest.raises(ValueError, match="unknown call"):
        client.send("users", body)


# -- transport failures --------------------------------------------------------------------------


def test_503_is_retryable(fresh_sandbox: Factory) -> None:
    sb, c = faulty(fresh_sandbox, http_503=1.0)
    f = failure(c.user({"phone": "13800000000"}), TransportKind.HTTP_STATUS)
    assert f.http_status == 503 and f.retryable and not f.fatal
    assert sb.customers() == []


def test_500_is_retryable(fresh_sandbox: Factory) -> None:
    _, c = faulty(fresh_sandbox, http_500=1.0)
    f = failure(c.user({"phone": "13800000000"}), TransportKind.HTTP_STATUS)
    assert f.http_status == 500 and f.retryable


def test_429_carries_retry_after(fresh_sandbox: Factory) -> None:
    _, c = faulty(fresh_sandbox, http_429=1.0, retry_after="7")
    f = failure(c.user({"phone": "13800000000"}), TransportKind.HTTP_STATUS)
    assert (f.http_status, f.retry_after, f.retryable) == (429, "7", True)


def test_non_json_answer_is_a_protocol_failure(fresh_sandbox: Factory) -> None:
    _, c = faulty(fresh_sandbox, non_json=1.0)
    f = failure(c.user({"phone": "13800000000"}), TransportKind.PROTOCOL)
    assert f.http_status == 200 and f.retryable


def test_reset_is_a_connection_failure_after_storing(fresh_sandbox: Factory) -> None:
    sb, c = faulty(fresh_sandbox, reset=1.0)
    f = failure(c.user({"phone": "13800000000"}), TransportKind.CONNECTION)
    assert f.retryable
    # the unknown outcome: the record was stored although no answer came
    assert [x["properties"]["phone"] for x in sb.customers()] == ["13800000000"]


def test_truncated_answer_is_a_protocol_failure(fresh_sandbox: Factory) -> None:
    sb, c = faulty(fresh_sandbox, truncated=1.0)
    f = failure(c.user({"phone": "13800000000"}), TransportKind.PROTOCOL)
    assert f.retryable
    assert len(sb.customers()) == 1


def test_stall_times_out(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox(faults=Faults(stall=1.0, stall_s=2))
    with Client(sb.secret, sb.url, timeout=0.5) as c:
        f = failure(c.user({"phone": "13800000000"}), TransportKind.TIMEOUT)
    assert f.retryable and 400 < f.latency_ms < 2000
    assert sb.customers() == []


def test_closed_port_is_a_connection_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        c = Client("00000000-0000-4000-8000-000000000000", f"http://127.0.0.1:{port}")
        f = failure(c.user({"phone": "1"}), TransportKind.CONNECTION)
    assert f.retryable and f.http_status is None


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ({"path": "/api/v2/import"}, "/api/v2/import?secret=***"),
        ({"protocol": "signed", "paths": {"user": "/v2/user"}}, "/v2/user?debug=false"),
    ],
    ids=["import-api", "signed"],
)
def test_wrong_path_is_a_fatal_http_status_naming_the_url(
    sandbox: Sandbox, options: dict[str, Any], shown: str
) -> None:
    # a 404 without the contract's JSON: a wrong URL or a proxy, not an answer for the record
    c = Client(sandbox.secret, sandbox.url, **options)
    f = failure(c.user({"phone": "1"}), TransportKind.HTTP_STATUS)
    assert f.http_status == 404 and not f.retryable and f.fatal
    assert f.message == (
        f"HTTP 404 Not Found from POST {sandbox.url}{shown} (without the platform's errcode answer)"
    )


def test_faults_can_change_between_phases(fresh_sandbox: Factory) -> None:
    sb, c = faulty(fresh_sandbox, http_503=1.0)
    assert isinstance(c.user({"phone": "1"}), TransportFailure)
    sb.set_faults(Faults())
    assert c.user({"phone": "1"}).ok  # type: ignore[union-attr]


@pytest.fixture
def tls_port(self_signed: tuple[Path, Path]) -> Iterator[int]:
    """A TLS listener with a self-signed certificate (handshakes, then hangs up)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*self_signed)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        # the client refuses our certificate mid-handshake: that is the point
        with conn, contextlib.suppress(ssl.SSLError, OSError):
            ctx.wrap_socket(conn, server_side=True).close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1]
    listener.close()
    t.join(5)


def test_untrusted_certificate_is_tls_and_not_retryable(tls_port: int) -> None:
    c = Client("00000000-0000-4000-8000-000000000000", f"https://127.0.0.1:{tls_port}")
    f = failure(c.user({"phone": "1"}), TransportKind.TLS)
    assert not f.retryable and f.fatal


# -- the secret stays secret ---------------------------------------------------------------------


def test_secret_is_not_in_repr_or_failure_messages() -> None:
    secret = "5ecre7-0000-4000-8000-000000000000"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        c = Client(secret, f"http://user:pw@127.0.0.1:{s.getsockname()[1]}")
        f = c.user({"phone": "1"})
    assert secret not in repr(c) and "***" in repr(c)
    assert isinstance(f, TransportFailure)
    for text in (f.message, repr(f), str(f.as_dict())):
        assert secret not in text and "pw@" not in text


def test_secret_written_into_the_base_url_is_not_in_repr_or_failure_messages() -> None:
    secret = "5ecre7-0000-4000-8000-000000000000"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for url in (f"http://u:{secret}@127.0.0.1:{port}", f"http://127.0.0.1:{port}/{secret}"):
            c = Client(secret, url)
            f = c.user({"phone": "1"})
            assert isinstance(f, TransportFailure)
            for text in (repr(c), f.message, repr(f), str(f.as_dict())):
                assert secret not in text


def test_secret_that_cannot_be_a_header_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        Client("秘密-secret", DEFAULT_BASE_URL)
    assert "秘密" not in str(info.value)


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("s", "127.0.0.1:8080")


# -- the seed's spelling ---------------------------------------------------------------------------


def test_sdk_aliases(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, unique: Callable[[str], str]
) -> None:
    with pytest.warns(PlainHttpWarning):
        assert SDK("s").base_url == DEFAULT_BASE_URL == "http://data-api.dmartech.cn"
    monkeypatch.setenv("DMART_BASE_URL", sandbox.url)
    sdk = SDK(sandbox.secret)
    assert sdk.base_url == sandbox.url and sdk.protocol == "import-api"
    phone = unique("phone")
    sdk.setDebug(True)
    assert sdk.user({"phone": phone}).ok
    assert not any(c["properties"].get("phone") == phone for c in sandbox.customers())
    sdk.setDebug(False)
    assert sdk.user({"phone": phone}).ok
    assert any(c["properties"].get("phone") == phone for c in sandbox.customers())
    seen: list[dict[str, Any]] = []
    assert sdk.userDelete({"phone": phone}, seen.append).ok
    assert seen == [{"errcode": 0, "errmsg": "请求成功"}]
    assert not any(c["properties"].get("phone") == phone for c in sandbox.customers())
    assert Client(sandbox.secret).base_url == sandbox.url  # Client reads it too


def test_secret_with_an_em_dash_names_the_character_and_its_position() -> None:
    with pytest.raises(ValueError) as info:
        Client("a1b2c3d4\u2014e5f6", DEFAULT_BASE_URL)
    assert str(info.value) == (
        "the secret contains a character that cannot be sent in an HTTP header "
        "(U+2014 at position 9)"
    )


# -- both profiles, batches, the documented 404 answers ------------------------------------------


def names_of(sb: Sandbox, key: str = "phone") -> list[Any]:
    return sorted(c["properties"].get(key) for c in sb.customers())


@pytest.mark.parametrize("wire", ["import-api", "signed"])
def test_each_profile_upserts_records_and_deletes(fresh_sandbox: Factory, wire: str) -> None:
    sb = fresh_sandbox()
    with Client(sb.secret, sb.url, protocol=wire) as c:  # type: ignore[arg-type]
        assert c.protocol == wire
        assert c.user({"phone": "13800000001", "age": 30}).ok
        assert c.user({"phone": "13800000002"}).ok
        assert c.user_delete({"phone": "13800000002"}).ok
        ev = {"phone": "13800000001", "event_id": "e1", "create_time": "2018-08-08 08:08:08"}
        assert c.event("order_detail", ev).ok
    assert names_of(sb) == ["13800000001"]
    assert [(e["eventName"], e["event_id"]) for e in sb.events()] == [("order_detail", "e1")]
    paths = {p for p in sb.stats()["by_path"] if not p.startswith("/_sandbox/")}
    expected = {"/api/v1/api/import"} if wire == "import-api" else {
        "/v1/user", "/v1/userDelete", "/v1/event"
    }  # fmt: skip
    assert paths == expected


def test_user_batch_and_event_batch_send_one_request_each(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    seen: list[dict[str, Any]] = []
    with Client(sb.secret, sb.url) as c:
        users = [{"phone": f"1380000000{i}", "username": f"u{i}"} for i in range(3)]
        r = c.user_batch(users, seen.append)
        assert isinstance(r, Response) and r.ok and r.http_status == 200
        events = [
            {"phone": "13800000000", "event_id": f"e{i}", "create_time": "2018-08-08 08:08:08"}
            for i in range(4)
        ]
        assert c.event_batch("order_detail", events).ok
    assert seen == [r.as_dict()]
    assert names_of(sb) == ["13800000000", "13800000001", "13800000002"]
    assert sorted(e["event_id"] for e in sb.events()) == ["e0", "e1", "e2", "e3"]
    assert sb.stats()["requests"] == 2


def test_a_batch_the_platform_finds_too_big_is_a_413_failure(
    fresh_sandbox: Factory, sandbox_schema: Schema
) -> None:
    # the SDK sends the list it is given; splitting is the importer's job
    sb = fresh_sandbox(schema=sandbox_schema.replace(max_batch_rows=2))
    with Client(sb.secret, sb.url) as c:
        f = failure(
            c.user_batch([{"phone": f"1380000000{i}"} for i in range(3)]), TransportKind.HTTP_STATUS
        )
        assert f.http_status == 413 and f.too_big and not f.retryable and not f.fatal
        assert f.message.startswith("HTTP 413 ")  # and the reason phrase
        assert f" from POST {sb.url}/api/v1/api/import?secret=***" in f.message
        assert c.user_batch([{"phone": "13800000001"}, {"phone": "13800000002"}]).ok
    assert names_of(sb) == ["13800000001", "13800000002"]


def test_batch_calls_are_refused_under_signed_before_sending(fresh_sandbox: Factory) -> None:
    sb = fresh_sandbox()
    c = Client(sb.secret, sb.url, protocol="signed")
    with pytest.raises(ValueError) as info:
        c.user_batch([{"phone": "13800000000"}])
    assert str(info.value) == (
        "user_batch: the signed profile has no batch call (one record per request); send each "
        "record with its single call, or use protocol='import-api'"
    )
    with pytest.raises(ValueError, match=r"^event_batch: the signed profile has no batch call"):
        c.event_batch("order_detail", [{"phone": "1", "event_id": "e"}])
    assert sb.stats()["requests"] == 0


def test_batch_arguments_are_checked_before_sending(client: Client) -> None:
    with pytest.raises(TypeError, match="user_batch takes a list of property dicts"):
        client.user_batch({"phone": "13800000000"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event_batch needs at least one record"):
        client.event_batch("order_detail", [])


def test_an_error_answered_with_404_and_an_errcode_is_a_response(
    client: Client, unique: Callable[[str], str]
) -> None:
    # the documented error answers: HTTP 404 with the contract's JSON, classified by errcode
    r = client.user({"username": "no primary key"})
    assert isinstance(r, Response) and r.http_status == 404
    assert r.errcode is ErrCode.PRIMARY_KEY_MISSING and not r.ok and not r.fatal
    good, bad = {"phone": unique("phone")}, {"phone": unique("phone"), "age": "eighty"}
    r = client.user_batch([good, bad])
    assert isinstance(r, Response) and r.http_status == 404
    assert r.errcode is ErrCode.DATA_CHECK_FAILED  # a wrong value type is 20003 here
    assert "'age' expects integer" in r.errmsg


def test_profile_arguments_that_contradict_are_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="protocol must be one of import-api, signed"):
        Client("s", sandbox.url, protocol="v1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"contradicts profile\.protocol='signed'"):
        Client("s", sandbox.url, protocol="import-api", profile=protocol.SIGNED_PROFILE)
    with pytest.raises(ValueError, match="import-api has one endpoint: use path="):
        Client("s", sandbox.url, paths={"user": "/v2/user"})
    assert Client("s", sandbox.url, profile=protocol.SIGNED_PROFILE).protocol == "signed"


# -- the SECRET in the query string ---------------------------------------------------------------

#: a canary SECRET whose percent-encoded form differs from the raw one
CANARY = "c4nary+S3CR3T/9f1c=4b7e&x"


def canary_forms() -> list[str]:
    return [CANARY, quote(CANARY, safe=""), quote(CANARY), quote_plus(CANARY)]


def assert_no_canary(*texts: str) -> None:
    for text in texts:
        for form in canary_forms():
            assert form not in text, text


def test_the_canary_secret_appears_in_no_log_line_message_or_repr(
    fresh_sandbox: Factory,
    sandbox_schema: Schema,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sb = fresh_sandbox(schema=sandbox_schema.replace(secrets=[CANARY]))
    texts: list[str] = []
    with Client(CANARY, sb.url) as c:
        assert c.user({"phone": "13800000000"}).ok  # the server got the SECRET...
        assert c.user_batch([{"phone": "13800000001"}, {"phone": "13800000002"}]).ok
        c.set_debug(True)
        r = c.event_batch("order_detail", [{"phone": "1"}])  # no event_id
        assert isinstance(r, Response) and r.errcode is ErrCode.PRIMARY_KEY_MISSING
        texts += [repr(c), c.url("user"), c.url("event")]
    wrong = Client(CANARY, sb.url, path="/api/v2/import")
    outcomes = [wrong.user({"phone": "1"})]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = Client(CANARY, f"http://127.0.0.1:{s.getsockname()[1]}")
        outcomes.append(refused.user({"phone": "1"}))
    assert [o.kind for o in outcomes] == ["http_status", "connection"]  # type: ignore[union-attr]
    for o in outcomes:
        assert isinstance(o, TransportFailure)
        texts += [o.message, repr(o), str(o.as_dict())]
    assert "secret=***" in outcomes[0].message  # type: ignore[union-attr]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts.append(repr(Client(CANARY, "http://dmart.invalid")))
    texts += [str(w.message) for w in caught]
    # ...and urllib3 logged every request line at DEBUG, with the query string masked
    lines = [r.getMessage() for r in caplog.records]
    assert sum("POST /api/v1/api/import?secret=****" in line for line in lines) >= 3
    assert_no_canary(caplog.text, *lines, *texts)
    assert len(caught) == 1 and "dmart.invalid" in texts[-1]


def test_a_gateway_echoing_the_secret_in_its_message_is_masked(
    fresh_sandbox: Factory, sandbox_schema: Schema
) -> None:
    # the sandbox's errmsg names what failed; a hostile or verbose gateway could echo the URL
    sb = fresh_sandbox(schema=sandbox_schema.replace(secrets=[CANARY]))
    with Client(CANARY, sb.url) as c:
        r = c.user({"phone": "1", CANARY: 1})
    assert isinstance(r, Response) and r.errcode is ErrCode.DATA_CHECK_FAILED
    assert "****" in r.errmsg
    assert_no_canary(r.errmsg, repr(r), str(r.as_dict()))


# -- plain http:// to a host that is not loopback ---------------------------------------------


def test_plain_http_to_a_remote_host_warns_once_at_construction() -> None:
    # the warning comes when the client is made, before any request: nothing is sent here
    # (``.invalid`` never resolves, and no call is made)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = SDK("00000000-0000-4000-8000-000000000000", "http://dmart.invalid:8080")
        c.set_debug(True)
        assert c.url("user") == "http://dmart.invalid:8080/api/v1/api/import?secret=***&debug=true"
    assert [w.category for w in caught] == [PlainHttpWarning]
    assert str(caught[0].message) == (
        "the SECRET travels UNENCRYPTED to dmart.invalid (base_url is plain http://, the SECRET "
        "is in every request's URL): anyone on the network path can read it and the data. Use "
        "https:// where the platform offers it."
    )
    assert caught[0].filename == __file__  # it points at the line that made the client
    with pytest.warns(
        PlainHttpWarning, match=r"UNENCRYPTED to 10\.1\.2\.3 \(.*the SECRET is in a header\)"
    ):
        Client("s-0000", "http://10.1.2.3", protocol="signed")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://localhost:8080",
        "http://LOCALHOST.",
        "http://[::1]:8080",
        "https://dmart.invalid",
        "https://data-api.dmartech.cn",
    ],
)
def test_loopback_and_https_do_not_warn(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Client("00000000-0000-4000-8000-000000000000", url)
