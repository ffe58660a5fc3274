"""The bulk transport against real loopback servers that answer in awkward but legal ways."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from importer.errcodes import ErrCode
from importer.outcomes import Response, TransportFailure, TransportKind
from importer.send import StreamTransport

OK_BODY = b'{"errcode":0,"errmsg":"\xe8\xaf\xb7\xe6\xb1\x82\xe6\x88\x90\xe5\x8a\x9f"}'

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


async def with_server(
    handler: Handler,
    scenario: Callable[[str], Awaitable[None]],
    ssl_ctx: ssl.SSLContext | None = None,
) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_ctx)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_ctx else "http"
    try:
        await scenario(f"{scheme}://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()


def scripted(
    replies: list[bytes],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A server handler answering each request of one connection with the next of ``replies``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for reply in replies:
                await read_request(reader)
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

    return handler


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_content_length_keep_alive_reuses_one_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY
                )
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        for _ in range(5):
            out = await t.post("/v1/user", b'{"properties":{"phone":"1"}}', {})
            assert isinstance(out, Response)
            assert out.errcode is ErrCode.OK
            assert out.errmsg == "请求成功"
        await t.aclose()

    run(with_server(handler, scenario))
    assert connections == 1


def test_chunked_response_is_reassembled() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"errcode":20001,"errmsg":"lack of primary key"}'
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:7], body[7:]))
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, Response)
        assert out.errcode is ErrCode.PRIMARY_KEY_MISSING
        await t.aclose()

    run(with_server(handler, scenario))


def test_close_delimited_body_and_connection_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK_BODY)
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        for _ in range(2):  # the second call must open a new connection
            out = await t.post("/v1/user", b"{}", {})
            assert isinstance(out, Response) and out.ok
        await t.aclose()

    run(with_server(handler, scenario))


def test_truncated_body_is_a_retryable_protocol_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK_BODY[:10])
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, TransportFailure)
        assert out.kind is TransportKind.PROTOCOL
        assert out.message == "truncated response"
        assert out.retryable
        await t.aclose()

    run(with_server(handler, scenario))


def test_reset_before_response_is_a_retryable_connection_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, TransportFailure)
        assert out.kind is TransportKind.CONNECTION
        assert out.retryable
        await t.aclose()

    run(with_server(handler, scenario))


def test_429_carries_retry_after_and_html_200_is_protocol_error() -> None:
    replies = [
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n<html></html>",
    ]

    handler = scripted(replies)

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        first = await t.post("/v1/user", b"{}", {})
        assert isinstance(first, TransportFailure)
        assert (first.kind, first.http_status, first.retry_after) == (
            TransportKind.HTTP_STATUS,
            429,
            "7",
        )
        second = await t.post("/v1/user", b"{}", {})
        assert isinstance(second, TransportFailure) and second.kind is TransportKind.PROTOCOL
        await t.aclose()

    run(with_server(handler, scenario))


def test_stalled_server_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url, timeout=0.3)
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, TransportFailure)
        assert out.kind is TransportKind.TIMEOUT and out.retryable
        await t.aclose()

    run(with_server(handler, scenario))


def _tls_server_ctx(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _ok_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def test_tls_unverifiable_certificate_fails_closed_and_is_not_retryable(
    self_signed: tuple[Path, Path],
) -> None:
    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, TransportFailure)
        assert out.kind is TransportKind.TLS
        assert out.message.startswith("TLS certificate verification failed")
        assert not out.retryable
        await t.aclose()

    run(with_server(_ok_handler, scenario, _tls_server_ctx(*self_signed)))


def test_tls_with_trusted_ca_file_works(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed

    async def scenario(url: str) -> None:
        t = StreamTransport(url, ca_file=str(cert))
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, Response) and out.ok
        await t.aclose()

    run(with_server(_ok_handler, scenario, _tls_server_ctx(*self_signed)))


def test_http_proxy_gets_absolute_form_target() -> None:
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        await reader.readexactly(2)  # the body: b"{}"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY)
        await writer.drain()
        writer.close()

    async def scenario(proxy_url: str) -> None:
        t = StreamTransport("http://platform.example:8080", proxy=proxy_url)
        out = await t.post("/v1/user?debug=false", b"{}", {})
        assert isinstance(out, Response) and out.ok
        await t.aclose()

    run(with_server(proxy, scenario))
    assert seen == [b"POST http://platform.example:8080/v1/user?debug=false HTTP/1.1"]


# -- framing per RFC 9112: anything else is a protocol failure, never a misread (issue 11 #10) --

CHUNKED_OK = b"%x\r\n%s\r\n0\r\n\r\n" % (len(OK_BODY), OK_BODY)
FRAMING_CASES: dict[str, tuple[bytes, str | None]] = {
    "103 Early Hints, then 200": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY),
        None,
    ),
    "chunked wins over Content-Length": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + CHUNKED_OK,
        None,
    ),
    "same Content-Length twice": (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%s"
        % (len(OK_BODY), len(OK_BODY), OK_BODY),
        None,
    ),
    "conflicting Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" + OK_BODY,
        "malformed HTTP response: conflicting Content-Length headers",
    ),
    "signed Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n" + OK_BODY,
        "malformed HTTP response: bad Content-Length",
    ),
    "0x chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
        "malformed HTTP response: bad chunk size",
    ),
    "chunk without CRLF": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXY0\r\n\r\n",
        "malformed HTTP response: chunk data not followed by CRLF",
    ),
    "101 unasked": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        "malformed HTTP response: 101 Switching Protocols, though no upgrade was asked for",
    ),
    "endless 100 Continue": (
        b"HTTP/1.1 100 Continue\r\n\r\n" * 20,
        "malformed HTTP response: more than 16 interim (1xx) responses",
    ),
    "not HTTP": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed HTTP response: bad status line"),
    "folded header": (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  continued\r\nContent-Length: 0\r\n\r\n",
        "malformed HTTP response: bad header line",
    ),
    # each was 'LimitOverrunError', a connection failure (second pass of issue 11 #10)
    "header section past 64 KiB": (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        "malformed HTTP response: header section larger than 65536 bytes",
    ),
    "chunk size line past 64 KiB": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 70_000 + b"5\r\n",
        "malformed HTTP response: chunk size line too long",
    ),
    "trailer past 64 KiB": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: "
        + b"a" * 70_000
        + b"\r\n\r\n",
        "malformed HTTP response: trailer line too long",
    ),
}


@pytest.mark.parametrize("case", list(FRAMING_CASES))
def test_response_framing(case: str) -> None:
    raw, failure = FRAMING_CASES[case]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/v1/user", b"{}", {})
        if failure is None:
            assert isinstance(out, Response) and out.ok, out
        else:
            assert isinstance(out, TransportFailure), out
            assert (out.kind, out.message, out.retryable) == (TransportKind.PROTOCOL, failure, True)
        await t.aclose()

    run(with_server(handler, scenario))


def test_bytes_arriving_on_an_idle_connection_retire_it() -> None:
    # The server answers, then (while the connection is idle in the pool) sends a second,
    # unsolicited answer: the next request must not read it; it goes on a new connection.
    connections = 0
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY))
        if connections == 1:
            await asyncio.sleep(0.05)
            stray = b'{"errcode":20003,"errmsg":"stray"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(stray), stray))
            sent.set()
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        assert (await t.post("/v1/user", b"{}", {})).ok
        await sent.wait()
        await asyncio.sleep(0.05)  # the stray bytes are in this process's socket now
        out = await t.post("/v1/user", b"{}", {})
        assert isinstance(out, Response) and out.ok, out
        await t.aclose()

    run(with_server(handler, scenario))
    assert connections == 2


def test_tls_keep_alive_reuses_one_connection(self_signed: tuple[Path, Path]) -> None:
    # TLS 1.3 session tickets and other records after the handshake are not "unsolicited
    # bytes": the connection stays in use
    cert, _ = self_signed
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url, ca_file=str(cert))
        for _ in range(5):
            out = await t.post("/v1/user", b"{}", {})
            assert isinstance(out, Response) and out.ok, out
            await asyncio.sleep(0.01)
        await t.aclose()

    run(with_server(handler, scenario, _tls_server_ctx(*self_signed)))
    assert connections == 1


def test_an_errcode_answer_is_a_response_whatever_the_status_and_a_bare_404_is_fatal() -> None:
    replies = [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 44\r\n\r\n"
        b'{"errcode":20003,"errmsg":"data check fail"}',
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
    ]

    handler = scripted(replies)

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        first = await t.post("/api/v1/api/import?secret=s", b"{}", {})
        assert isinstance(first, Response)
        assert (first.errcode, first.errmsg, first.http_status) == (
            ErrCode.DATA_CHECK_FAILED,
            "data check fail",
            404,
        )
        second = await t.post("/api/v1/api/import?secret=s", b"{}", {})
        assert isinstance(second, TransportFailure)
        assert (second.kind, second.http_status, second.fatal) == (
            TransportKind.HTTP_STATUS,
            404,
            True,
        )
        assert second.message == "HTTP 404 without the platform's errcode answer"
        await t.aclose()

    run(with_server(handler, scenario))


def test_a_connection_reset_while_the_body_is_sent_is_too_big() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(1000)  # some of the body, then the platform has had enough
        writer.transport.abort()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/api/v1/api/import?secret=s", b"x" * (16 << 20), {})
        assert isinstance(out, TransportFailure)
        assert out.message == "connection closed while the request was being sent"
        assert (out.kind, out.while_sending, out.too_big, out.sent) == (
            TransportKind.CONNECTION,
            True,
            True,
            False,
        )
        await t.aclose()

    run(with_server(handler, scenario))


@pytest.mark.parametrize("reads_the_body", [True, False])
def test_a_413_is_too_big_whether_or_not_the_server_reads_the_body(reads_the_body: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if reads_the_body:
            await read_request(reader)
        else:
            await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/api/v1/api/import?secret=s", b"x" * (16 << 20), {})
        assert isinstance(out, TransportFailure) and out.too_big
        if reads_the_body:
            assert (out.http_status, out.message, out.retryable) == (413, "HTTP 413", False)
        # else: the reset may discard the answer before it is read (while_sending)
        await t.aclose()

    run(with_server(handler, scenario))


def test_no_answer_after_the_whole_body_was_sent_is_marked_sent() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def closed(url: str) -> None:
        t = StreamTransport(url)
        out = await t.post("/api/v1/api/import?secret=s", b'{"type":"user"}', {})
        assert isinstance(out, TransportFailure)
        assert (out.kind, out.sent, out.while_sending, out.stale) == (
            TransportKind.CONNECTION,
            True,
            False,
            False,
        )
        await t.aclose()

    async def timed_out(url: str) -> None:
        t = StreamTransport(url, timeout=0.2)
        out = await t.post("/api/v1/api/import?secret=s", b'{"type":"user"}', {})
        assert isinstance(out, TransportFailure)
        assert (out.kind, out.sent, out.message) == (
            TransportKind.TIMEOUT,
            True,
            "no response within 0.2 s",
        )
        await t.aclose()

    run(with_server(handler, closed))
    run(with_server(stall, timed_out))


def test_a_base_url_with_a_path_prefixes_every_target_as_the_sdk_does() -> None:
    lines: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_BODY) + OK_BODY)
        await writer.drain()
        writer.close()

    async def scenario(url: str) -> None:
        t = StreamTransport(url + "/gateway/dmartech/")
        out = await t.post("/api/v1/api/import?secret=s", b"{}", {})
        assert isinstance(out, Response) and out.ok
        await t.aclose()

    run(with_server(handler, scenario))
    assert lines == [b"POST /gateway/dmartech/api/v1/api/import?secret=s HTTP/1.1"]
