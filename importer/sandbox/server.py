"""The sandbox's HTTP/1.1 server: asyncio.Protocol, hand-written framing, group commit.

No framework: requests are parsed by ``http.py`` (Content-Length or chunked bodies,
keep-alive, pipelining) so that a single core answers thousands of requests a second.

Group commit: a request's SQL runs as soon as the request is parsed, inside one open
transaction; the first write of an event-loop iteration schedules a single ``COMMIT`` with
``loop.call_soon``, and every response queued meanwhile is written only after that commit. A
response with errcode 0 therefore always means the data is on disk (WAL, synchronous=NORMAL).
While a transaction is open every response waits for the commit, errors included, which keeps
the per-connection order trivially right.

Faults (``faults.py``) are drawn per API request before anything else; delays (latency, stall)
use ``loop.call_later`` so they never block other connections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from ..errcodes import ErrCode
from ..protocol import Headers, response_body
from . import rules
from .faults import FaultPlan, Faults
from .http import (
    HTML_TYPE,
    JSON_TYPE,
    BadRequest,
    Incomplete,
    Request,
    http_response,
    parse_request,
)
from .schema import Schema
from .store import Store

STATS_PATH = "/_sandbox/stats"
HEALTH_PATH = "/_sandbox/health"
FAULTS_PATH = "/_sandbox/faults"

# what happens to the connection after a queued piece of output
_KEEP, _CLOSE, _RESET = 0, 1, 2


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


_OK_BODY = response_body(ErrCode.OK)
_OK_KEEP = http_response(200, _OK_BODY)
_NON_JSON_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"


class Stats:
    """Counters served at ``GET /_sandbox/stats``."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_errcode: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.by_http_status: Counter[str] = Counter()
        self.connections = 0
        self.commits = 0

    def snapshot(self, customers: int, events: int, open_connections: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_errcode": dict(self.by_errcode),
            "by_fault": dict(self.by_fault),
            "by_http_status": dict(self.by_http_status),
            "connections": {"total": self.connections, "open": open_connections},
            "commits": self.commits,
            "customers": customers,
            "events": events,
        }


class SandboxServer:
    """The contract's server over one ``Store``. Runs on the loop that calls ``start``."""

    def __init__(
        self,
        schema: Schema,
        store: Store,
        faults: Faults | None = None,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.schema = schema
        self.store = store
        self.stats = Stats()
        self.header_names = Headers()
        self.routes = {path: kind for kind, path in schema.paths.items()}
        self.set_faults(faults or Faults())
        self._log = log
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Connection] = set()
        self._waiting: list[_Connection] = []
        self._commit_scheduled = False
        self.port = 0

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; the draw restarts from the new seed (attempt counts from 1)."""
        self.faults = faults
        self.plan = FaultPlan(faults)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def shutdown(self) -> None:
        """Stop listening, answer what is committed, close every connection, commit."""
        if self._server is not None:
            self._server.close()
        if self._commit_scheduled or self.store.dirty:
            self._commit()
        for conn in list(self._conns):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
        for _ in range(10):  # let closing transports flush and run connection_lost
            if not self._conns:
                break
            await asyncio.sleep(0.01)
        for conn in list(self._conns):
            conn.abort()
        await asyncio.sleep(0)
        self.store.commit()

    # -- group commit -------------------------------------------------------------------

    def wait_for_commit(self, conn: _Connection) -> None:
        if not conn.waiting:
            conn.waiting = True
            self._waiting.append(conn)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_scheduled = False
        waiting, self._waiting = self._waiting, []
        try:
            if self.store.dirty:
                self.store.commit()
                self.stats.commits += 1
        except sqlite3.Error as exc:
            self._note(f"commit failed: {exc}")
            self._waiting = waiting
            self._abandon_group()
            return
        for conn in waiting:
            conn.flush()

    def _abandon_group(self) -> None:
        """Roll back the open transaction. Nothing queued may claim success now: drop the
        answers and close those connections (an unknown outcome, which the client retries)."""
        try:
            self.store.rollback()
        except sqlite3.Error as exc:
            self._note(f"rollback failed: {exc}")
        waiting, self._waiting = self._waiting, []
        for conn in waiting:
            conn.abort()

    # -- request handling ---------------------------------------------------------------

    def handle(self, kind: str, debug: bool, headers: dict[str, str], body: bytes) -> bytes:
        """Checks and storage for one API request; returns the response body."""
        failed = rules.check_auth(headers, body, self.schema, names=self.header_names)
        if failed is not None:
            code, message = failed
        else:
            code, message, obj = rules.check(kind, body, self.schema)
            if code is ErrCode.OK and not debug and obj is not None:
                try:
                    self.store.apply(kind, obj)
                except Exception as exc:  # a storage failure is the contract's "system error"
                    self._note(f"store failed: {type(exc).__name__}: {exc}")
                    self._abandon_group()
                    code, message = ErrCode.SYSTEM_ERROR, "system error: storage failure"
        self.stats.by_errcode[str(int(code))] += 1
        if code is ErrCode.OK:
            return _OK_BODY
        return response_body(code, message)

    def stats_body(self) -> bytes:
        customers, events = self.store.counts()
        return _json(self.stats.snapshot(customers, events, len(self._conns)))

    def admin(self, req: Request) -> tuple[int, bytes, bytes]:
        """Answer a ``/_sandbox/`` call: ``(status, body, extra header lines)``."""
        if req.path == HEALTH_PATH and req.method == "GET":
            return 200, _json({"status": "ok"}), b""
        if req.path == STATS_PATH and req.method == "GET":
            return 200, self.stats_body(), b""
        if req.path == FAULTS_PATH and req.method == "GET":
            return 200, _json(self.faults.to_dict()), b""
        if req.path == FAULTS_PATH and req.method == "POST":
            try:
                data = json.loads(req.body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("faults must be a JSON object")
                faults = Faults.from_dict(data)
            except (ValueError, TypeError) as exc:
                return 400, _json({"error": str(exc)}), b""
            self.set_faults(faults)
            return 200, _json(faults.to_dict()), b""
        allow = b"GET, POST" if req.path == FAULTS_PATH else b"GET"
        return 405, _json({"error": "method not allowed"}), b"Allow: " + allow + b"\r\n"

    def _note(self, message: str) -> None:
        if self._log is not None:
            self._log(message)


class _Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, queue responses in order."""

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

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.srv._conns.add(self)
        self.srv.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.srv._conns.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        if not self.busy:
            self.process()

    def eof_received(self) -> bool:
        # Half-closed by the client: answer what it sent, then close.
        self.eof = True
        return bool(self.busy or self.outbox)

    # -- output ---------------------------------------------------------------------------

    def queue(self, data: bytes, after: int = _KEEP) -> None:
        if self.closed:
            return
        if after != _KEEP:
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
        if after == _RESET and not data and not t.get_write_buffer_size():
            sock = t.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: the close sends a TCP RST, like a crashed peer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
            return
        if data:
            t.write(data)
        if after != _KEEP:
            t.close()

    def close(self) -> None:
        """Stop taking requests and close once written (pending delays are cancelled)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.outbox = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()

    def _error(self, status: int, message: str) -> None:
        self.srv.stats.by_http_status[str(status)] += 1
        self.queue(http_response(status, _json({"error": message}), close=True), _CLOSE)

    # -- parsing ----------------------------------------------------------------------------

    def process(self) -> None:
        while not self.busy and not self.closed and self.buf:
            try:
                req = self._parse()
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
        parsed = parse_request(self.buf)
        if isinstance(parsed, Incomplete):
            if parsed.expects_continue and not self.continued:
                self.continued = True
                if self.transport is not None and not self.outbox:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        self.continued = False
        return parsed

    # -- dispatch -----------------------------------------------------------------------

    def _dispatch(self, req: Request) -> None:
        srv = self.srv
        stats = srv.stats
        path = req.path
        kind = srv.routes.get(path)
        if not path.startswith("/_sandbox/"):
            # admin calls (stats, health, faults) are not traffic: a test that counts the
            # requests the importer made must not count its own look at the counters
            stats.requests += 1
        stats.by_path[path if kind is not None or path.startswith("/_sandbox/") else "<other>"] += 1
        close = not req.keep_alive
        after = _CLOSE if close else _KEEP
        if kind is None:
            if path in (STATS_PATH, HEALTH_PATH, FAULTS_PATH):
                self._admin(req, close)
            else:
                self._reply(404, _json({"error": "not found", "path": path[:200]}), close)
            return
        if req.method != "POST":
            self._reply(
                405,
                _json({"error": "method not allowed", "allow": "POST"}),
                close,
                extra=b"Allow: POST\r\n",
            )
            return
        debug = _debug_flag(req.query)
        if debug is None:
            self._reply(400, _json({"error": "debug must be true or false"}), close)
            return
        fault = srv.plan.draw(path, req.body)
        delay = srv.plan.latency_s()
        if fault is not None:
            stats.by_fault[fault] += 1
            if fault == "stall":
                delay += srv.faults.stall_s
        if delay > 0:
            self.busy = True
            loop = srv._loop
            assert loop is not None
            self.timer = loop.call_later(delay, self._delayed, req, kind, debug, fault)
            return
        self._execute(req, kind, debug, fault, after)

    def _delayed(self, req: Request, kind: str, debug: bool, fault: str | None) -> None:
        self.timer = None
        self.busy = False
        if self.closed:
            return
        self._execute(req, kind, debug, fault, _KEEP if req.keep_alive else _CLOSE)
        self.process()

    def _execute(self, req: Request, kind: str, debug: bool, fault: str | None, after: int) -> None:
        close = after == _CLOSE
        srv = self.srv
        if srv._log is not None:
            srv._log(f"{req.method} {req.path}?{req.query}" + (f" fault={fault}" if fault else ""))
        if fault is None:
            body = srv.handle(kind, debug, req.headers, req.body)
            srv.stats.by_http_status["200"] += 1
            if body is _OK_BODY and not close:
                self.queue(_OK_KEEP)
            else:
                self.queue(http_response(200, body, close=close), after)
            return
        faults = srv.faults
        if fault == "http_503":
            self._reply(503, _json({"error": "service unavailable (injected)"}), close)
        elif fault == "http_500":
            self._reply(500, _json({"error": "internal server error (injected)"}), close)
        elif fault == "http_429":
            extra = b"Retry-After: %s\r\n" % faults.retry_after.encode("latin-1")
            self._reply(429, _json({"error": "too many requests (injected)"}), close, extra=extra)
        elif fault == "errcode_10000":
            self._reply(200, response_body(ErrCode.SYSTEM_ERROR, "system error (injected)"), close)
        elif fault == "errcode_20004":
            msg = "Signature checking failed: (injected)"
            self._reply(200, response_body(ErrCode.SIGNATURE_FAILED, msg), close)
        elif fault == "blacklisted":
            customer = _named_customer(req.body, srv.schema)
            msg = f"Data checking failed: customer {customer} is blacklisted"
            self._reply(200, response_body(ErrCode.DATA_CHECK_FAILED, msg), close)
        elif fault == "non_json":
            self._reply(200, _NON_JSON_BODY, close, content_type=HTML_TYPE)
        elif fault == "stall":
            self._reply(503, _json({"error": "stalled (injected)"}), close)
        elif fault == "reset":
            self.srv.handle(kind, debug, req.headers, req.body)
            self.queue(b"", _RESET)
        elif fault == "truncated":
            body = self.srv.handle(kind, debug, req.headers, req.body)
            sent = body[: len(body) // 2]
            self.queue(http_response(200, sent, content_length=len(body) + 16), _CLOSE)
        else:  # pragma: no cover - FAULT_KINDS and this switch are kept in step
            raise AssertionError(fault)

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
        self.queue(data, _CLOSE if close else _KEEP)

    def _admin(self, req: Request, close: bool) -> None:
        status, body, extra = self.srv.admin(req)
        self._reply(status, body, close, extra=extra)


def _named_customer(body: bytes, schema: Schema) -> str:
    """The request's primary-key values as a platform's message names a customer:
    ``13812345678 / "alice.wang@corp.cn"`` (the first bare, the others in double quotes)."""
    try:
        properties = json.loads(body).get("properties")
        values = [str(properties[k]) for k in schema.primary_keys if properties.get(k)]
    except (ValueError, AttributeError, TypeError):
        values = []
    if not values:
        return "(unknown)"
    return " / ".join([values[0], *(f'"{v}"' for v in values[1:])])


def _debug_flag(query: str) -> bool | None:
    """``debug`` from the query string: absent -> False; anything but true/false -> None."""
    if not query:
        return False
    value = "false"
    for item in query.split("&"):
        name, _, v = item.partition("=")
        if name == "debug":
            value = v
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def stderr_log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
