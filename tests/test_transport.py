"""The bulk transport against real loopback servers that answer in awkward but legal ways."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from importer.client import Response, TransportFailure, TransportKind
from importer.errcodes import ErrCode
from importer.transport import StreamTransport

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

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for reply in replies:
                await read_request(reader)
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

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
