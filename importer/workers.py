"""``--workers N``: spread the sending over N processes, each owning a share of the customers.

One process (the parent) reads, maps and reports, as in a single-process run; it routes every
valid row to child ``hash(first primary-key value) % N`` and the children only send. A child is
a plain ``Sender`` in its own event loop, so it has its own core for the HTTP client, which is
where a run spends its CPU. Rows of one customer always go to the same child, whose sender
keeps their file order (for customers identified by several keys, the first non-empty one in
``job.primary_keys`` order decides the child).

Rows travel in chunks over pipes; each child has a bounded window of chunks in flight, so
memory stays flat. A fatal outcome in any child stops all of them; rows they had not sent come
back ``not_sent``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .protocol import Profile
from .sender import NOT_SENT_MESSAGE, RetryPolicy, RowResult, RowSource, Sender, Status
from .transport import StreamTransport, Transport

CHUNK_ROWS = 256
WINDOW_CHUNKS = 8


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a child needs to build its sender (picklable; the SECRET travels by pipe,
    never by command line or environment of the child)."""

    base_url: str
    timeout: float
    verify: bool
    ca_file: str | None
    secret: str
    path: str
    profile: Profile
    concurrency: int
    retry: RetryPolicy
    rate_limit: float | None
    ordered: bool
    abort_after_signature_failures: int
    abort_after_failed_rows: int = 0

    def __repr__(self) -> str:  # never show the secret
        return f"WorkerSpec(base_url={self.base_url!r}, path={self.path!r})"

    def build_sender(self, transport: Transport, rate_limit: float | None = None) -> Sender:
        """The sender this spec describes (the single-process path uses it too)."""
        return Sender(
            transport,
            secret=self.secret,
            path=self.path,
            profile=self.profile,
            concurrency=self.concurrency,
            retry=self.retry,
            rate_limit=self.rate_limit if rate_limit is None else rate_limit,
            ordered=self.ordered,
            abort_after_signature_failures=self.abort_after_signature_failures,
            abort_after_failed_rows=self.abort_after_failed_rows,
        )


def route(keys: tuple[str, ...], workers: int) -> int:
    """The child that owns a row: stable across runs and processes (crc32, not hash())."""
    if not keys:
        return 0
    return zlib.crc32(keys[0].encode()) % workers


class _PipeSource(RowSource):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Any, bytes, tuple[str, ...]] | None] = asyncio.Queue()

    async def next_row(self) -> tuple[Any, bytes, tuple[str, ...]] | None:
        return await self.queue.get()


def _child_main(conn: Connection) -> None:
    spec: WorkerSpec = pickle.loads(conn.recv_bytes())
    asyncio.run(_child(conn, spec))


async def _child(conn: Connection, spec: WorkerSpec) -> None:
    loop = asyncio.get_running_loop()
    transport = StreamTransport(
        spec.base_url, timeout=spec.timeout, verify=spec.verify, ca_file=spec.ca_file
    )
    sender = spec.build_sender(transport)
    source = _PipeSource()
    out: list[tuple[Any, int, int | None, str, int, float]] = []
    pending = 0
    inbox_done = asyncio.Event()

    def flush() -> None:
        if out:
            conn.send_bytes(pickle.dumps(("results", out[:])))
            out.clear()

    def on_result(token: Any, r: RowResult) -> None:
        nonlocal pending
        out.append((token, int(r.status), r.errcode, r.errmsg, r.attempts, r.latency_ms))
        pending -= 1
        if len(out) >= CHUNK_ROWS or pending == 0:
            flush()

    def on_readable() -> None:
        nonlocal pending
        try:
            kind, payload = pickle.loads(conn.recv_bytes())
        except EOFError:
            kind, payload = "end", None
        if kind == "rows":
            pending += len(payload)
            for item in payload:
                source.queue.put_nowait(item)
        else:  # "end" or "stop"
            loop.remove_reader(conn.fileno())
            for _ in range(spec.concurrency):
                source.queue.put_nowait(None)
            inbox_done.set()

    loop.add_reader(conn.fileno(), on_readable)
    try:
        await sender.run(source, on_result)
    finally:
        await transport.aclose()
    # rows still queued when the sender stopped (it aborted) go back as not_sent
    while not source.queue.empty():
        item = source.queue.get_nowait()
        if item is not None:
            out.append((item[0], int(Status.NOT_SENT), None, NOT_SENT_MESSAGE, 0, 0.0))
    if not inbox_done.is_set():
        loop.remove_reader(conn.fileno())
    flush()
    conn.send_bytes(pickle.dumps(("done", (sender.abort_reason, sender.requests))))
    # drain whatever the parent still sends until it says "end", answering not_sent
    while not inbox_done.is_set():
        try:
            kind, payload = pickle.loads(conn.recv_bytes())
        except EOFError:
            break
        if kind == "rows":
            conn.send_bytes(
                pickle.dumps(
                    ("results", [(t, int(Status.NOT_SENT), None, NOT_SENT_MESSAGE, 0, 0.0)
                                 for t, _, _ in payload])
                )
            )  # fmt: skip
        else:
            break
    conn.close()


class MultiProcessSender:
    """Same interface as ``Sender.run`` for the pipeline, over N child processes."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        self.spec = spec
        self.workers = workers
        self.abort_reason: str | None = None
        self.requests = 0

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    async def run(self, source: RowSource, on_result: Callable[[Any, RowResult], None]) -> None:
        loop = asyncio.get_running_loop()
        ctx = mp.get_context("spawn")
        conns: list[Connection] = []
        procs = []
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_child_main, args=(child,), daemon=True)
            p.start()
            child.close()
            parent.send_bytes(pickle.dumps(self.spec))
            conns.append(parent)
            procs.append(p)
        in_flight = [0] * self.workers  # chunks sent, not yet answered in full
        outstanding = [0] * self.workers  # rows sent, not yet answered
        window = [asyncio.Event() for _ in range(self.workers)]
        done = [asyncio.Event() for _ in range(self.workers)]
        tokens: dict[int, Any] = {}
        next_id = 0

        def reader(i: int) -> None:
            try:
                kind, payload = pickle.loads(conns[i].recv_bytes())
            except EOFError:
                loop.remove_reader(conns[i].fileno())
                if not done[i].is_set():
                    self.abort_reason = self.abort_reason or f"sender process {i} died"
                    done[i].set()
                window[i].set()
                return
            if kind == "results":
                for tid, status, code, msg, attempts, latency in payload:
                    on_result(
                        tokens.pop(tid), RowResult(Status(status), code, msg, attempts, latency)
                    )
                outstanding[i] -= len(payload)
                in_flight[i] = -(-outstanding[i] // CHUNK_ROWS)
                window[i].set()
            elif kind == "done":
                reason, requests = payload
                self.requests += requests
                if reason and not self.abort_reason:
                    self.abort_reason = reason
                done[i].set()
                window[i].set()

        for i, c in enumerate(conns):
            loop.add_reader(c.fileno(), reader, i)

        buffers: list[list[tuple[int, bytes, tuple[str, ...]]]] = [[] for _ in conns]

        async def ship(i: int) -> None:
            while in_flight[i] >= WINDOW_CHUNKS and not done[i].is_set():
                window[i].clear()
                await window[i].wait()
            if done[i].is_set():  # the child stopped: its share is not sent
                for tid, _, _ in buffers[i]:
                    on_result(
                        tokens.pop(tid), RowResult(Status.NOT_SENT, None, NOT_SENT_MESSAGE, 0, 0.0)
                    )
            else:
                conns[i].send_bytes(pickle.dumps(("rows", buffers[i])))
                in_flight[i] += 1
                outstanding[i] += len(buffers[i])
            buffers[i] = []

        try:
            while not self.aborted:
                item = await source.next_row()
                if item is None:
                    break
                token, body, keys = item
                tid = next_id
                next_id += 1
                tokens[tid] = token
                i = route(keys, self.workers)
                buffers[i].append((tid, body, keys))
                if len(buffers[i]) >= CHUNK_ROWS:
                    await ship(i)
            for i in range(self.workers):
                if buffers[i]:
                    await ship(i)
                if not done[i].is_set():
                    conns[i].send_bytes(pickle.dumps(("stop" if self.aborted else "end", None)))
            for i in range(self.workers):
                await done[i].wait()
            # results that arrive after "done" (rows the child answered not_sent while draining)
            while tokens and any(p.is_alive() for p in procs):
                await asyncio.sleep(0.01)
        finally:
            for c in conns:
                loop.remove_reader(c.fileno())
                c.close()
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
            for tid in list(tokens):
                on_result(tokens.pop(tid), _not_sent())


def _not_sent() -> RowResult:
    return RowResult(Status.NOT_SENT, None, NOT_SENT_MESSAGE, 0, 0.0)
