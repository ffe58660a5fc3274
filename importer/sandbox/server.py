"""The sandbox's HTTP/1.1 server: asyncio.Protocol, hand-written framing, group commit.

No framework: requests are parsed by ``http.py`` (Content-Length or chunked bodies,
keep-alive, pipelining) so that a single core answers thousands of requests a second; each
connection is a ``connection.Connection``.

Both profiles are served at once: ``import-api`` at the schema's ``import_path``, ``signed`` at
its per-call ``paths``.

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
import sqlite3
import sys
import time
from collections.abc import Callable

from ..errcodes import ErrCode
from ..protocol import SECRET_PARAM, Headers, response_body
from . import rules
from .answers import (
    FAULTS_PATH,
    HEALTH_PATH,
    IMPORT,
    OK_BODY,
    STATS_PATH,
    TOO_BIG_BODY,
    json_bytes,
    query_value,
)
from .connection import Connection, Output
from .faults import FaultPlan, Faults
from .http import JSON_TYPE, TEXT_TYPE, Request
from .limits import Limits
from .schema import Schema
from .stats import Stats
from .store import Store

__all__ = ["FAULTS_PATH", "HEALTH_PATH", "STATS_PATH", "SandboxServer", "stderr_log"]


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
        self.routes[schema.import_path] = IMPORT
        self.limits = Limits(schema)
        #: requests held by the ``late_apply`` fault, to be applied when their time comes
        self.held: set[asyncio.TimerHandle] = set()
        self.set_faults(faults or Faults())
        self.log = log
        self._server: asyncio.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[Output] = set()
        self._waiting: list[Output] = []
        self._commit_scheduled = False
        self.port = 0

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; the draw restarts from the new seed (attempt counts from 1)."""
        self.faults = faults
        self.plan = FaultPlan(faults)
        #: rows stored since the faults were set (``drop_after_ok`` counts them)
        self.kept = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def shutdown(self) -> None:
        """Stop listening, answer what is committed, close every connection, commit. Requests
        the ``late_apply`` fault still holds are dropped (never applied)."""
        for handle in self.held:
            handle.cancel()
        self.held.clear()
        if self._server is not None:
            self._server.close()
        if self._commit_scheduled or self.store.dirty:
            self._commit()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
        for _ in range(10):  # let closing transports flush and run connection_lost
            if not self.connections:
                break
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)
        self.store.commit()

    # -- group commit -------------------------------------------------------------------

    def wait_for_commit(self, conn: Output) -> None:
        if not conn.waiting:
            conn.waiting = True
            self._waiting.append(conn)
        self.schedule_commit()

    def schedule_commit(self) -> None:
        """Commit at the end of this event-loop iteration (once, whoever asks)."""
        if not self._commit_scheduled:
            self._commit_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._commit)

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
        stats = self.stats
        failed = rules.check_auth(headers, body, self.schema, names=self.header_names)
        if failed is not None:
            code, message = failed
        else:
            code, message, obj = rules.check(kind, body, self.schema)
            stats.count_type(self.schema.paths[kind], kind)
            if obj is not None:
                stats.items_received += 1
                stats.today["items"] += 1
            if code is ErrCode.OK and not debug and obj is not None and self._keep(1):
                try:
                    self.store.apply(kind, obj)
                    stats.items_stored += 1
                except Exception as exc:  # a storage failure is the contract's "system error"
                    code, message = self._store_failed(exc)
        stats.by_errcode[str(int(code))] += 1
        if code is ErrCode.OK:
            return OK_BODY
        return response_body(code, message)

    def handle_import(self, query: str, debug: bool, body: bytes) -> tuple[int, bytes, bytes]:
        """Checks and storage for one ``import-api`` request: ``(status, body, content type)``.
        Success is HTTP 200; an errcode answer has ``error_http_status``; too many items, 413."""
        stats = self.stats
        schema = self.schema
        secret = query_value(query, SECRET_PARAM)
        if not secret:
            code, message = (
                ErrCode.SECRET_REQUIRED,
                "Secret parameters required: no secret query parameter",
            )
        elif secret not in schema.secrets:
            code, message = ErrCode.AUTH_FAILED, "Authentication failed: unknown secret"
        else:
            result = rules.check_import(body, schema)
            body_type = result.body_type
            if body_type is None:
                body_type = "<not_json>" if result.code is ErrCode.JSON_FORMAT else "<invalid>"
            stats.count_type(schema.import_path, body_type)
            stats.items_received += result.received
            stats.today["items"] += result.received
            if result.too_many:
                return 413, TOO_BIG_BODY, TEXT_TYPE
            code, message = result.code, result.message
            valid = result.valid
            if valid and not debug:
                valid = valid[: self._keep(len(valid))]
            if valid and not debug and result.kind is not None:
                try:
                    self.store.apply_items(result.kind, valid, result.event)
                    stats.items_stored += len(valid)
                except Exception as exc:
                    code, message = self._store_failed(exc)
        stats.by_errcode[str(int(code))] += 1
        if code is ErrCode.OK:
            return 200, OK_BODY, JSON_TYPE
        return schema.error_http_status, response_body(code, message), JSON_TYPE

    def _keep(self, rows: int) -> int:
        """How many of ``rows`` accepted rows to store: all, or under ``drop_after_ok`` those
        still within its count (the others are answered ok and dropped: counted in
        ``by_fault["drop_after_ok"]``)."""
        limit = self.faults.drop_after_ok
        keep = rows if not limit else max(0, min(rows, limit - self.kept))
        self.kept += keep
        if keep < rows:
            self.stats.by_fault["drop_after_ok"] += rows - keep
        return keep

    def admit(self) -> tuple[int, bytes] | None:
        """The account's limits, asked once per API request before anything else: None, or
        ``(Retry-After seconds, plain-text body)`` of a 429 (nothing counted, nothing stored)."""
        limits = self.limits
        refused = limits.admit()
        today = self.stats.today
        if self.stats.by_day.get(limits.day) is not today:
            today = self.stats.on_day(limits.day)
        if refused is None:
            today["requests"] += 1
            return None
        today["429"] += 1
        return refused, limits.describe(refused).encode()

    def answer(self, kind: str, req: Request, debug: bool) -> tuple[int, bytes, bytes]:
        """``(status, body, content type)`` of an API request on either profile's path."""
        if kind == IMPORT:
            return self.handle_import(req.query, debug, req.body)
        return 200, self.handle(kind, debug, req.headers, req.body), JSON_TYPE

    def error_status(self, kind: str) -> int:
        """The HTTP status of an errcode answer on ``kind``'s path."""
        return self.schema.error_http_status if kind == IMPORT else 200

    def _store_failed(self, exc: Exception) -> tuple[ErrCode, str]:
        # a storage failure is the contract's "system error"
        self._note(f"store failed: {type(exc).__name__}: {exc}")
        self._abandon_group()
        return ErrCode.SYSTEM_ERROR, "system error: storage failure"

    def stats_body(self) -> bytes:
        customers, events = self.store.counts()
        return json_bytes(self.stats.snapshot(customers, events, len(self.connections)))

    def admin(self, req: Request) -> tuple[int, bytes, bytes]:
        """Answer a ``/_sandbox/`` call: ``(status, body, extra header lines)``."""
        if req.path == HEALTH_PATH and req.method == "GET":
            return 200, json_bytes({"status": "ok"}), b""
        if req.path == STATS_PATH and req.method == "GET":
            return 200, self.stats_body(), b""
        if req.path == FAULTS_PATH and req.method == "GET":
            return 200, json_bytes(self.faults.to_dict()), b""
        if req.path == FAULTS_PATH and req.method == "POST":
            try:
                data = json.loads(req.body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("faults must be a JSON object")
                faults = Faults.from_dict(data)
            except (ValueError, TypeError) as exc:
                return 400, json_bytes({"error": str(exc)}), b""
            self.set_faults(faults)
            return 200, json_bytes(faults.to_dict()), b""
        allow = b"GET, POST" if req.path == FAULTS_PATH else b"GET"
        return 405, json_bytes({"error": "method not allowed"}), b"Allow: " + allow + b"\r\n"

    def _note(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


def stderr_log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
