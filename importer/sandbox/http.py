"""HTTP/1.1 framing for the sandbox server: parse a request out of a connection's buffer,
write a response. No I/O here; ``server.py`` owns the sockets.

Requests carry a Content-Length or a chunked body; stray CRLFs between pipelined requests are
skipped; oversized headers (431) and bodies (413) and malformed framing (400, 501) raise
``BadRequest`` with the status to answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

MAX_HEADER_BYTES = 64 * 1024
#: the default largest body (``max_body_bytes`` of the schema)
MAX_BODY_BYTES = 8 * 1024 * 1024

JSON_TYPE = b"application/json; charset=utf-8"
HTML_TYPE = b"text/html; charset=utf-8"
TEXT_TYPE = b"text/plain; charset=utf-8"

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}


def http_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON_TYPE,
    close: bool = False,
    extra: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    """One complete HTTP/1.1 response (``extra``: more header lines, each ending CRLF)."""
    length = len(body) if content_length is None else content_length
    reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b"Unknown"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, length),
            b"Connection: close\r\n" if close else b"",
            extra,
            b"\r\n",
            body,
        )
    )


class Request:
    """One parsed request: ``path`` without the query string, header names lower-cased."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class BadRequest(Exception):
    """The buffer holds no valid request: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TooBig(BadRequest):
    """The body is larger than allowed (413). ``remaining``: the body bytes the client has
    still to send (None: unknown, a chunked body); ``path``: the request's path."""

    def __init__(self, limit: int, remaining: int | None, path: str) -> None:
        super().__init__(413, f"body larger than {limit} bytes")
        self.remaining = remaining
        self.path = path


@dataclass(frozen=True)
class Incomplete:
    """Not a whole request yet. ``expects_continue``: the headers are in and ask for
    ``100 Continue`` before the client sends the body."""

    expects_continue: bool = False


_WAIT = Incomplete()


def parse_request(buf: bytearray, max_body: int = MAX_BODY_BYTES) -> Request | Incomplete:
    """Take the first complete request off the front of ``buf`` (which it consumes), or say
    that more bytes are needed. Raises ``BadRequest`` for framing no server should accept,
    ``TooBig`` (consuming the head and what came of the body) for a body over ``max_body``."""
    while buf[:2] == b"\r\n":  # stray CRLFs between requests are allowed
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER_BYTES:
            raise BadRequest(431, "request header too large")
        return _WAIT
    if end > MAX_HEADER_BYTES:
        raise BadRequest(431, "request header too large")
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t":
            raise BadRequest(400, "malformed header line")
        name = name.lower()
        value = value.strip()
        if name == "content-length" and name in headers and headers[name] != value:
            raise BadRequest(400, "conflicting Content-Length headers")
        headers[name] = value
    start = end + 4
    waiting = Incomplete(headers.get("expect", "").lower() == "100-continue")
    te = headers.get("transfer-encoding")
    if te is not None:
        if te.lower() != "chunked":
            raise BadRequest(501, f"unsupported Transfer-Encoding {te!r}")
        parsed = _chunked(buf, start, max_body, target)
        if parsed is None:
            return waiting
        body, consumed = parsed
    else:
        cl = headers.get("content-length", "0")
        if not cl.isascii() or not cl.isdigit():
            raise BadRequest(400, "bad Content-Length")
        length = int(cl)
        consumed = start + length
        if length > max_body:
            remaining = max(0, consumed - len(buf))
            del buf[:consumed]
            raise TooBig(max_body, remaining, target.partition("?")[0])
        if len(buf) < consumed:
            return waiting
        body = bytes(buf[start:consumed])
    del buf[:consumed]
    conn = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in conn if version == "HTTP/1.0" else "close" not in conn
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, body, keep_alive)


def _chunked(buf: bytearray, pos: int, max_body: int, target: str) -> tuple[bytes, int] | None:
    """A chunked body starting at ``pos``: ``(body, end position)``, or None if incomplete."""
    parts: list[bytes] = []
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = buf[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(400, "bad chunk size") from None
        if size < 0:
            raise BadRequest(400, "bad chunk size")
        pos = eol + 2
        if size == 0:
            if buf[pos : pos + 2] == b"\r\n":
                return b"".join(parts), pos + 2
            trailer_end = buf.find(b"\r\n\r\n", pos)
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        total += size
        if total > max_body:
            del buf[:]
            raise TooBig(max_body, None, target.partition("?")[0])
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise BadRequest(400, "chunk not followed by CRLF")
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2
