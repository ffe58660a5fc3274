"""One client connection of the sandbox server: parse, dispatch, queue answers in order.

``Connection`` frames requests (``http.py``), draws each API request's fault, delays it when
the fault or the latency says so, and hands it to the server (``SandboxServer.answer``); its
answers go out in request order, after the group commit when one is pending. ``inject``
plays a drawn fault.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING, cast

from ..errcodes import ErrCode
from ..protocol import response_body
from .answers import (
    ADMIN_PATHS,
    NON_JSON_BODY,
    OK_BODY,
    OK_KEEP,
    TOO_BIG_BODY,
    debug_flag,
    json_bytes,
    named_customer,
    shown_query,
)
from .http import (
    HTML_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    BadRequest,
    Incomplete,
    Request,
    TooBig,
    http_response,
    parse_request,
)
from .openapi import OPENAPI_PATHS, answer_openapi

if TYPE_CHECKING:
    from .server import SandboxServer

#: how long a connection that sent a too-big body may keep sending before it is closed
DRAIN_TIMEOUT_S = 30.0

# what happens to the connection after a queued piece of output
KEEP, CLOSE, RESET = 0, 1, 2


class Output(asyncio.Protocol):
    """A connection's output side: answers queued in request order, written after the group
    commit when one is pending; closing, aborting, and draining a too-big body."""

    def __init__(self, server: SandboxServer) -> None:
        self.srv = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a delayed request is pending: parse nothing more until it is done
        self.closed = False  # no more output may be queued
        self.waiting = False  # listed in server._waiting
        self.outbox: list[tuple[bytes, int]] = []
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None
        self.continued = False
        #: after a too-big request: body bytes still to discard before closing (-1: unknown)
        self.draining: int | None = None
        #: the request the ``late_apply`` fault holds
        self.late: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.srv.connections.add(self)
        self.srv.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.srv.connections.discard(self)

    def queue(self, data: bytes, after: int = KEEP) -> None:
        if self.closed:
            return
        if after != KEEP:
            self.closed = True
        if self.outbox or self.srv.store.dirty:
            self.outbox.append((data, after))
            self.srv.wait_for_commit(self)
        else:
            self._emit(data, after)

    def flush(self) -> None:
        self.waiting = False
        outbox, self.outbox = self.outbox, []
        if not outbox or self.transport is None or self.transport.is_closing():
            return
        if len(outbox) == 1:
            self._emit(*outbox[0])
        else:
            chunks = [d for d, _ in outbox]
            self._emit(b"".join(chunks), outbox[-1][1])
        if self.eof and not self.busy and not self.closed:
            self.closed = True
            self.transport.close()

    def _emit(self, data: bytes, after: int) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if after == RESET and not data and not t.get_write_buffer_size():
            sock = t.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: the close sends a TCP RST, like a crashed peer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
            return
        if data:
            t.write(data)
        if after != KEEP:
            t.close()

    def close(self) -> None:
        """Stop taking requests and close once written (pending delays are cancelled)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def reset(self) -> None:
        """Close at once with a TCP RST, unread input and queued answers dropped."""
        self.closed = True
        self.outbox = []
        t = self.transport
        if t is None or t.is_closing():
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.abort()

    def abort(self) -> None:
        self.closed = True
        self.outbox = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()

    def _start_drain(self, remaining: int) -> None:
        self.closed = True
        self.draining = remaining
        loop = self.srv.loop
        if loop is not None and self.timer is None:
            self.timer = loop.call_later(DRAIN_TIMEOUT_S, self.close)

    def _drain(self, n: int) -> None:
        if self.draining is None or self.draining < 0:
            return
        self.draining -= n
        if self.draining <= 0:
            self.draining = None
            if self.outbox:  # the answer waits for a commit: close once it is written
                self.outbox.append((b"", CLOSE))
            else:
                self.close()


class Connection(Output):
    """One client connection: parse, dispatch, queue responses in order."""

    def data_received(self, data: bytes) -> None:
        if self.draining is not None:
            self._drain(len(data))
            return
        if self.closed:
            return
        self.buf += data
        if not self.busy:
            self.process()

    def eof_received(self) -> bool:
        # Half-closed by the client: answer what it sent, then close.
        self.eof = True
        if self.draining is not None:
            return False
        return bool(self.busy or self.outbox)

    def _error(self, status: int, message: str) -> None:
        self.srv.stats.by_http_status[str(status)] += 1
        self.queue(http_response(status, json_bytes({"error": message}), close=True), CLOSE)

    def process(self) -> None:
        while not self.busy and not self.closed and self.buf:
            try:
                req = self._parse()
            except TooBig as exc:
                self._too_big(exc)
                return
            except BadRequest as exc:
                self.buf.clear()
                self._error(exc.status, str(exc))
                return
            if req is None:
                return
            self._dispatch(req)
        if self.eof and not self.busy and not self.outbox and not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> Request | None:
        parsed = parse_request(self.buf, self.srv.schema.max_body_bytes)
        if isinstance(parsed, Incomplete):
            if parsed.expects_continue and not self.continued:
                self.continued = True
                if self.transport is not None and not self.outbox:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        self.continued = False
        return parsed

    def _dispatch(self, req: Request) -> None:
        srv = self.srv
        stats = srv.stats
        path = req.path
        kind = srv.routes.get(path)
        if not path.startswith("/_sandbox/"):
            # admin calls (stats, health, faults) are not traffic: a test that counts the
            # requests the importer made must not count its own look at the counters
            stats.requests += 1
        known = kind is not None or path.startswith("/_sandbox/") or path in OPENAPI_PATHS
        stats.by_path[path if known else "<other>"] += 1
        close = not req.keep_alive
        after = CLOSE if close else KEEP
        if path in OPENAPI_PATHS:
            self._openapi(req, close)
            return
        if kind is None:
            if path in ADMIN_PATHS:
                self._admin(req, close)
            else:
                self._reply(404, json_bytes({"error": "not found", "path": path[:200]}), close)
            return
        if req.method != "POST":
            self._reply(
                405,
                json_bytes({"error": "method not allowed", "allow": "POST"}),
                close,
                extra=b"Allow: POST\r\n",
            )
            return
        debug = debug_flag(req.query)
        if debug is None:
            self._reply(400, json_bytes({"error": "debug must be true or false"}), close)
            return
        refused = srv.admit()
        if refused is not None:
            extra = b"Retry-After: %d\r\n" % refused[0]
            self._reply(429, refused[1], close, content_type=TEXT_TYPE, extra=extra)
            return
        fault = srv.plan.draw(path, req.body)
        delay = srv.plan.latency_s()
        if fault is not None:
            stats.by_fault[fault] += 1
            if fault == "stall":
                delay += srv.faults.stall_s
            elif fault == "late_apply":
                self._hold(req, kind, debug, delay + srv.faults.late_apply_s)
                return
        if delay > 0:
            self.busy = True
            loop = srv.loop
            assert loop is not None
            self.timer = loop.call_later(delay, self._delayed, req, kind, debug, fault)
            return
        self._execute(req, kind, debug, fault, after)

    def _delayed(self, req: Request, kind: str, debug: bool, fault: str | None) -> None:
        self.timer = None
        self.busy = False
        if self.closed:
            return
        self._execute(req, kind, debug, fault, KEEP if req.keep_alive else CLOSE)
        self.process()

    def _hold(self, req: Request, kind: str, debug: bool, delay: float) -> None:
        """The ``late_apply`` fault: apply ``req`` in ``delay`` seconds whatever becomes of
        this connection (a timer of the server's, not cancelled when the client gives up)."""
        self.busy = True
        loop = self.srv.loop
        assert loop is not None
        self.late = loop.call_later(delay, self._late, req, kind, debug)
        self.srv.held.add(self.late)

    def _late(self, req: Request, kind: str, debug: bool) -> None:
        srv = self.srv
        if self.late is not None:
            srv.held.discard(self.late)
            self.late = None
        self.busy = False
        if srv.log is not None:
            srv.log(f"{req.method} {req.path}?{shown_query(req.query)} applied late")
        status, body, content_type = srv.answer(kind, req, debug)
        if srv.store.dirty:
            srv.schedule_commit()  # nobody may be waiting for it: the client may be gone
        if self.closed:
            return
        srv.stats.by_http_status[str(status)] += 1
        close = not req.keep_alive
        data = http_response(status, body, content_type=content_type, close=close)
        self.queue(data, CLOSE if close else KEEP)
        self.process()

    def _execute(self, req: Request, kind: str, debug: bool, fault: str | None, after: int) -> None:
        close = after == CLOSE
        srv = self.srv
        if srv.log is not None:
            shown = f"{req.method} {req.path}?{shown_query(req.query)}"
            srv.log(shown + (f" fault={fault}" if fault else ""))
        if fault is None:
            status, body, content_type = srv.answer(kind, req, debug)
            if status == 413 and srv.schema.too_big == "close":
                srv.stats.closed_too_big += 1
                self.reset()
                return
            srv.stats.by_http_status[str(status)] += 1
            if body is OK_BODY and not close:
                self.queue(OK_KEEP)
            else:
                data = http_response(status, body, content_type=content_type, close=close)
                self.queue(data, after)
            return
        inject(self, req, kind, debug, fault, close)

    def _reply(
        self,
        status: int,
        body: bytes,
        close: bool,
        *,
        content_type: bytes = JSON_TYPE,
        extra: bytes = b"",
    ) -> None:
        self.srv.stats.by_http_status[str(status)] += 1
        data = http_response(status, body, content_type=content_type, close=close, extra=extra)
        self.queue(data, CLOSE if close else KEEP)

    def _too_big(self, exc: TooBig) -> None:
        """A body over ``max_body_bytes``: answer 413 (plain text) at once, then read and drop
        the rest of the body before closing, so that the client, still sending, gets to read
        the answer instead of a reset."""
        self.buf.clear()
        stats = self.srv.stats
        stats.requests += 1
        stats.by_path[exc.path if exc.path in self.srv.routes else "<other>"] += 1
        if self.srv.schema.too_big == "close":
            # no answer: the connection is reset while the client is still sending
            stats.closed_too_big += 1
            self.reset()
            return
        stats.by_http_status["413"] += 1
        data = http_response(413, TOO_BIG_BODY, content_type=TEXT_TYPE, close=True)
        if not exc.remaining:  # all of it is here (or unknown and the client may be done)
            self.queue(data, CLOSE)
            if exc.remaining is None:
                self._start_drain(-1)
            return
        self.queue(data)
        self.closed = True
        self._start_drain(exc.remaining)

    def _openapi(self, req: Request, close: bool) -> None:
        """An Open API call: the account's limits (shared with the import API), then the
        answer (``openapi.answer_openapi``). No fault is drawn for it."""
        srv = self.srv
        if req.method == "GET":
            refused = srv.admit()
            if refused is not None:
                extra = b"Retry-After: %d\r\n" % refused[0]
                self._reply(429, refused[1], close, content_type=TEXT_TYPE, extra=extra)
                return
        status, body = answer_openapi(
            req.path, req.method, req.query, req.headers, srv.schema, srv.store
        )
        extra = b"Allow: GET\r\n" if status == 405 else b""
        self._reply(status, body, close, extra=extra)

    def _admin(self, req: Request, close: bool) -> None:
        status, body, extra = self.srv.admin(req)
        self._reply(status, body, close, extra=extra)


def inject(conn: Connection, req: Request, kind: str, debug: bool, fault: str, close: bool) -> None:
    srv = conn.srv
    faults = srv.faults
    error_status = srv.error_status(kind)
    if fault == "http_503":
        conn._reply(503, json_bytes({"error": "service unavailable (injected)"}), close)
    elif fault == "http_500":
        conn._reply(500, json_bytes({"error": "internal server error (injected)"}), close)
    elif fault == "http_429":
        extra = b"Retry-After: %s\r\n" % faults.retry_after.encode("latin-1")
        conn._reply(429, json_bytes({"error": "too many requests (injected)"}), close, extra=extra)
    elif fault == "errcode_10000":
        body = response_body(ErrCode.SYSTEM_ERROR, "system error (injected)")
        conn._reply(error_status, body, close)
    elif fault == "errcode_20004":
        msg = "Signature checking failed: (injected)"
        conn._reply(error_status, response_body(ErrCode.SIGNATURE_FAILED, msg), close)
    elif fault == "blacklisted":
        customer = named_customer(req.body, srv.schema)
        msg = f"Data checking failed: customer {customer} is blacklisted"
        conn._reply(error_status, response_body(ErrCode.DATA_CHECK_FAILED, msg), close)
    elif fault == "non_json":
        conn._reply(200, NON_JSON_BODY, close, content_type=HTML_TYPE)
    elif fault == "stall":
        conn._reply(503, json_bytes({"error": "stalled (injected)"}), close)
    elif fault == "reset":
        srv.answer(kind, req, debug)
        conn.queue(b"", RESET)
    elif fault == "truncated":
        status, body, _ = srv.answer(kind, req, debug)
        sent = body[: len(body) // 2]
        conn.queue(http_response(status, sent, content_length=len(body) + 16), CLOSE)
    else:  # pragma: no cover - FAULT_KINDS and this switch are kept in step
        raise AssertionError(fault)
