"""The SDK client against a real sandbox: outcomes, transport failures, aliases, secrecy."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from importer import protocol
from importer.client import (
    DEFAULT_BASE_URL,
    SDK,
    Client,
    Response,
    TransportFailure,
    TransportKind,
)
from importer.errcodes import ErrCode
from importer.sandbox import Faults, Sandbox

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
    props = {"phone": phone, "username": "张三丰", "city": "北京市 海淀区"}
    assert b"\\u" not in protocol.user_body(props)
    assert "张三丰".encode() in protocol.user_body(props)
    assert client.user(props).ok  # type: ignore[union-attr]
    stored = next(c for c in sandbox.customers() if c["properties"].get("phone") == phone)
    assert stored["properties"] == props
    raw = next(t for t in sandbox.stored_json() if phone in t)
    assert "张三丰" in raw and "\\u" not in raw


def test_debug_flag_goes_in_the_query_string(sandbox: Sandbox) -> None:
    c = Client(sandbox.secret, sandbox.url + "/")
    assert c.url("user") == f"{sandbox.url}/v1/user?debug=false"
    c.set_debug(True)
    assert c.url("user_delete") == f"{sandbox.url}/v1/userDelete?debug=true"


def test_send_posts_prebuilt_bytes(client: Client, unique: Callable[[str], str]) -> None:
    body = protocol.user_body({"phone": unique("phone")})
    assert client.send("user", body).ok  # type: ignore[union-attr]
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


def test_wrong_path_is_a_fatal_http_status(sandbox: Sandbox) -> None:
    c = Client(sandbox.secret, sandbox.url, paths={"user": "/v2/user"})
    f = failure(c.user({"phone": "1"}), TransportKind.HTTP_STATUS)
    assert f.http_status == 404 and not f.retryable and f.fatal


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
    assert SDK("s").base_url == DEFAULT_BASE_URL
    monkeypatch.setenv("DMART_BASE_URL", sandbox.url)
    sdk = SDK(sandbox.secret)
    assert sdk.base_url == sandbox.url
    phone = unique("phone")
    sdk.setDebug(True)
    assert sdk.user({"phone": phone}).ok  # type: ignore[union-attr]
    sdk.setDebug(False)
    assert sdk.user({"phone": phone}).ok  # type: ignore[union-attr]
    seen: list[dict[str, Any]] = []
    assert sdk.userDelete({"phone": phone}, seen.append).ok  # type: ignore[union-attr]
    assert seen == [{"errcode": 0, "errmsg": "请求成功"}]
    assert not any(c["properties"].get("phone") == phone for c in sandbox.customers())


def test_secret_with_an_em_dash_names_the_character_and_its_position() -> None:
    with pytest.raises(ValueError) as info:
        Client("a1b2c3d4\u2014e5f6", DEFAULT_BASE_URL)
    assert str(info.value) == (
        "the secret contains a character that cannot be sent in an HTTP header "
        "(U+2014 at position 9)"
    )
