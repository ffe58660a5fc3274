"""``--workers N``: spread the sending over N processes, each sending a share of the rows.

One process (the parent) reads, maps and reports, as in a single-process run; it routes every
valid row to a child and the children only send. A child is a plain ``Sender`` in its own
event loop, so it has its own core for the HTTP client, which is where a run spends its CPU.

Per-customer order. The parent turns each row's primary-key values into customer tokens
(``KeyLinks``: values named together in one row belong to one customer, transitively, as on the
platform), and a child's sender keeps file order among the rows it holds that share a token
(it chains them). Across children the parent keeps the rule that makes this enough: **two rows
of one customer are never unanswered in two children at the same time**. It counts, per token,
the rows shipped and not yet answered and which child holds them (``_Owners``: bounded by the
rows in flight, not by the file). A row goes to the child that holds its customer; a row whose
customer no child holds goes to ``crc32(first value) % N`` (the common case: one dict lookup).
A row that links two customers held by two children (a phone seen in one, an e-mail in the
other) waits until the other child has answered them, then goes to the first: every earlier
row of its customer has then been answered or sits before it in the same child. The parent
routes rows one at a time in file order, so while such a row waits, later rows wait behind it.

Requests (their encoded records) travel in chunks over pipes; each child has a bounded window
of rows and requests in flight, so memory stays flat, and answers come back, one per row
(runs of rows sharing one result sent once), at least every few milliseconds. A fatal outcome
in any child stops all of them; rows they had not sent come back ``not_sent``. The run's
request budget (``RequestBudget``) and its failure streaks live in shared memory, counted by
all children together; each child numbers its requests apart from the others (child ``i`` of
``n``: ``i + 1, i + 1 + n, ...``), and its counters are added up when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from ..config import RetryOptions
from ..exitcodes import STOP_SIGNALS
from ..outcomes import NOT_SENT_MESSAGE, RowResult, Status, not_sent
from ..protocol import Profile
from .budget import RequestBudget
from .keylinks import KeyLinks
from .sender import QUOTA_STOP, Budget, Request, RequestSource, Sender, _Stops, link_request
from .streaks import FailureStreaks
from .transport import StreamTransport, Transport

#: prctl option: the signal this process gets when its parent dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1

#: a chunk of requests is shipped to a child once it holds this many rows or requests
CHUNK_ROWS = 256
#: a child has at most this many rows in flight, unless it has fewer than two requests per
#: concurrent sender worker (a batch of 500 rows is one request)
WINDOW_ROWS = 8 * CHUNK_ROWS
#: a row's token in a child: its request's id shifted left, plus its index in the request
#: (``send.batch_rows`` is at most 100,000 < 2**17)
_ROW_BITS = 17
_ROW_MASK = (1 << _ROW_BITS) - 1
#: a child sends its answers back at least this often (seconds), so that a row waiting for
#: another child's answers (see ``_Owners``) does not wait for a whole chunk
FLUSH_S = 0.005


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a child needs to build its sender (picklable; the SECRET travels by pipe,
    never by command line or environment of the child)."""

    base_url: str
    timeout: float
    verify: bool
    ca_file: str | None
    secret: str
    #: the call (``user``, ``user_delete``, ``event``)
    kind: str
    #: ``profile.target(kind, debug, secret)``: carries the SECRET under ``import-api``
    target: str
    #: ``base_url`` + ``profile.shown_target(kind, debug)``: the endpoint as messages show it
    shown_url: str
    profile: Profile
    concurrency: int
    retry: RetryOptions
    rate_limit: float | None
    ordered: bool
    abort_after_signature_failures: int
    abort_after_failed_rows: int = 0
    abort_after_failed_requests: int = 0
    abort_after_same_refusals: int = 0

    def __repr__(self) -> str:  # never show the secret (the target carries it)
        return f"WorkerSpec(kind={self.kind!r}, url={self.shown_url!r})"

    def build_sender(
        self,
        transport: Transport,
        rate_limit: float | None = None,
        *,
        link_keys: bool = True,
        streaks: FailureStreaks | None = None,
        budget: Budget | None = None,
        request_ids: tuple[int, int] = (1, 1),
    ) -> Sender:
        """The sender this spec describes (the single-process path uses it too). A child
        gets rows whose keys the parent already turned into ``KeyLinks`` tokens."""
        return Sender(
            transport,
            secret=self.secret,
            kind=self.kind,
            target=self.target,
            shown_url=self.shown_url,
            profile=self.profile,
            concurrency=self.concurrency,
            retry=self.retry,
            rate_limit=self.rate_limit if rate_limit is None else rate_limit,
            ordered=self.ordered,
            abort_after_signature_failures=self.abort_after_signature_failures,
            abort_after_failed_rows=self.abort_after_failed_rows,
            abort_after_failed_requests=self.abort_after_failed_requests,
            abort_after_same_refusals=self.abort_after_same_refusals,
            link_keys=link_keys,
            streaks=streaks,
            budget=budget,
            request_ids=request_ids,
        )


def route(keys: tuple[Any, ...], workers: int, fallback: int = 0) -> int:
    """The child for a request no other child holds: by its first key (a value: crc32,
    stable across runs and processes, not hash(); a customer token the parent's source
    linked: the token); a request without keys (events) by ``fallback`` (its number: round
    robin)."""
    if not keys:
        return fallback % workers
    first = keys[0]
    if isinstance(first, int):
        return first % workers
    return zlib.crc32(first.encode()) % workers


class _Owners:
    """Which child holds unanswered rows with a given primary-key value, and how many."""

    def __init__(self) -> None:
        self._held: dict[int, list[int]] = {}  # token -> [child, unanswered rows]

    def holders(self, keys: tuple[int, ...]) -> set[int]:
        held = self._held
        return {o[0] for k in keys if (o := held.get(k)) is not None}

    def claim(self, child: int, keys: tuple[int, ...]) -> None:
        held = self._held
        for k in keys:
            o = held.get(k)
            if o is None:
                held[k] = [child, 1]
            else:
                assert o[0] == child, "a key value held by two children"
                o[1] += 1

    def release(self, keys: tuple[int, ...]) -> None:
        held = self._held
        for k in keys:
            o = held[k]
            o[1] -= 1
            if o[1] == 0:
                del held[k]


#: a request as it travels to a child: (its id in the parent, items, key tokens, event)
Shipped = tuple[int, tuple[bytes, ...], tuple[Any, ...], bytes | None]
#: a run of rows of one request sharing one result, as it travels back: (request id in the
#: parent, first row, rows, status, errcode, errmsg, attempts, latency, request id, ambiguous)
Answered = tuple[int, int, int, int, int | None, str, int, float, int | None, bool]


def _not_sent_run(item: Shipped) -> Answered:
    return (item[0], 0, len(item[1]), int(Status.NOT_SENT), None, NOT_SENT_MESSAGE, 0, 0.0,
            None, False)  # fmt: skip


class _PipeSource(RequestSource):
    """A child's requests, as the parent shipped them (``Shipped``); each row's token is
    its request's id shifted left by ``_ROW_BITS`` plus its index."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Shipped | None] = asyncio.Queue()

    async def next_request(self) -> Request | None:
        item = await self.queue.get()
        if item is None:
            return None
        tid, items, keys, event = item
        base = tid << _ROW_BITS
        return Request(tuple(range(base, base + len(items))), items, keys, (), event)


#: what a child tells its parent when it ends, besides its abort reason
COUNTERS = ("requests", "batch_requests", "bisect_requests", "too_big_splits")


def _orphaned() -> NoReturn:
    """The parent is gone (its end of the pipe closed without a word): stop at once. Nothing
    sent from now on could be reported or recorded, and the job's lock died with the parent."""
    os._exit(0)


def _tell_parent(conn: Connection, message: Any) -> None:
    try:
        conn.send_bytes(pickle.dumps(message))
    except OSError:  # BrokenPipeError: the parent is gone
        _orphaned()


def _child_main(conn: Connection, streaks: Any, budget: Any, parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group and systemd sends SIGTERM to the whole cgroup:
    # the parent decides, and tells the children ("stop")
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _die_with_parent(parent_pid)
    try:
        spec, index, workers = pickle.loads(conn.recv_bytes())
        shared = RequestBudget(shared=budget) if budget is not None else None
        asyncio.run(_child(conn, spec, FailureStreaks(streaks), shared, (index + 1, workers)))
    except (EOFError, OSError):  # the pipe broke: the parent is gone
        _orphaned()


def _die_with_parent(parent_pid: int) -> None:
    """On Linux the kernel SIGKILLs this process when the parent dies, however it dies (a
    SIGKILL, the OOM killer); elsewhere the closed pipe tells (``_orphaned``). A parent that
    died before this call is caught by its pid."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        _orphaned()


async def _child(
    conn: Connection,
    spec: WorkerSpec,
    streaks: FailureStreaks,
    budget: RequestBudget | None,
    request_ids: tuple[int, int],
) -> None:
    loop = asyncio.get_running_loop()
    transport = StreamTransport(
        spec.base_url, timeout=spec.timeout, verify=spec.verify, ca_file=spec.ca_file
    )
    sender = spec.build_sender(
        transport, link_keys=False, streaks=streaks, budget=budget, request_ids=request_ids
    )
    source = _PipeSource()

    def wake() -> None:  # the sender stopped: workers waiting for rows take None and end
        for _ in range(spec.concurrency):
            source.queue.put_nowait(None)

    sender.on_stop(wake)
    out: list[Answered] = []
    last: list[Any] = [None]  # the result of out[-1]: a run grows while rows share it
    pending = 0
    inbox_done = asyncio.Event()

    timer: asyncio.TimerHandle | None = None

    def flush() -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()
            timer = None
        if out:
            _tell_parent(conn, ("results", out[:]))
            out.clear()
            last[0] = None

    def on_result(token: int, r: RowResult) -> None:
        nonlocal pending, timer
        tid, j = token >> _ROW_BITS, token & _ROW_MASK
        pending -= 1
        if last[0] is r and (run := out[-1])[0] == tid and run[1] + run[2] == j:
            out[-1] = (tid, run[1], run[2] + 1, *run[3:])
            if pending == 0:
                flush()
            return
        out.append((tid, j, 1, int(r.status), r.errcode, r.errmsg, r.attempts, r.latency_ms,
                    r.request_id, r.ambiguous))  # fmt: skip
        last[0] = r
        if len(out) >= CHUNK_ROWS or pending == 0:
            flush()
        elif timer is None:
            timer = loop.call_later(FLUSH_S, flush)

    def on_readable() -> None:
        nonlocal pending
        try:
            kind, payload = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            _orphaned()
        if kind == "rows":
            for item in payload:
                pending += len(item[1])
                source.queue.put_nowait(item)
            return
        # "end": send what came (and keep listening: a "stop" may follow); "stop": the run
        # stops, what waits is not sent
        if kind == "stop":
            loop.remove_reader(conn.fileno())
            reading[0] = False
            sender.stop("the parent stopped the run")
        if not inbox_done.is_set():
            for _ in range(spec.concurrency):
                source.queue.put_nowait(None)
            inbox_done.set()

    reading = [True]
    loop.add_reader(conn.fileno(), on_readable)
    try:
        await sender.run(source, on_result)
    finally:
        await transport.aclose()
    # rows still queued when the sender stopped (it aborted) go back as not_sent
    while not source.queue.empty():
        item = source.queue.get_nowait()
        if item is not None:
            out.append(_not_sent_run(item))
    if reading[0]:
        loop.remove_reader(conn.fileno())
    flush()
    counters = {name: getattr(sender, name) for name in COUNTERS}
    ended = (sender.abort_reason, counters, sender.batch_limit, sender.quota_exhausted,
             sender.resume_at)  # fmt: skip
    _tell_parent(conn, ("done", ended))
    # drain whatever the parent still sends until it says "end", answering not_sent
    while not inbox_done.is_set():
        try:
            kind, payload = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break
        if kind == "rows":
            _tell_parent(conn, ("results", [_not_sent_run(item) for item in payload]))
        else:
            break
    conn.close()


class MultiProcessSender(_Stops):
    """Same interface as ``Sender.run`` for the pipeline, over N child processes; the
    counters (``requests``, ``batch_requests``, ``bisect_requests``, ``too_big_splits``,
    ``batch_limit``, ``quota_exhausted``, ``resume_at``) add up the children's once they
    end. ``budget``: the run's request budget, shared with every child."""

    def __init__(
        self,
        spec: WorkerSpec,
        workers: int,
        budget: RequestBudget | None = None,
        *,
        link_keys: bool = True,
    ) -> None:
        self.spec = spec
        #: False: requests come with customer tokens already linked (the pipeline's source
        #: links them, once): the parent routes on them as they are
        self.link_keys = link_keys
        self.workers = workers
        self.budget = budget
        self.abort_reason: str | None = None
        self.stop_reason: str | None = None
        self.requests = 0
        self.batch_requests = 0
        self.bisect_requests = 0
        self.too_big_splits = 0
        self.batch_limit: int | None = None
        self.quota_exhausted = False
        self.resume_at: float | None = None
        self._on_stop: Callable[[], None] | None = None

    def abort(self, reason: str) -> None:
        """The run stops (a full disk): the first reason stays. The children see it at the
        next row taken or wait ended, as after a child's own abort."""
        if self.abort_reason is None:
            self.abort_reason = reason

    def stop(self, reason: str) -> None:
        """Like ``Sender.stop``, for every child: call it on the loop running ``run``."""
        if self.stop_reason is None:
            self.stop_reason = reason
            if self._on_stop is not None:
                self._on_stop()

    def _ended(self, ended: tuple[Any, ...]) -> None:
        """A child's last word: its abort reason and counters."""
        reason, counters, batch_limit, quota_exhausted, resume_at = ended
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + counters[name])
        if batch_limit is not None and (self.batch_limit is None or batch_limit < self.batch_limit):
            self.batch_limit = batch_limit
        if resume_at is not None:
            self.resume_at = max(resume_at, self.resume_at or 0.0)
        if reason and not self.abort_reason:
            self.abort_reason = reason
        if quota_exhausted:
            self.quota_exhausted = True
            self.stop(QUOTA_STOP)

    async def run(self, source: RequestSource, on_result: Callable[[Any, RowResult], None]) -> None:
        loop = asyncio.get_running_loop()
        ctx = mp.get_context("spawn")
        conns: list[Connection] = []
        procs = []
        # failures in a row and requests are counted for the run, all children together
        streaks = FailureStreaks.shared(ctx)
        budget = self.budget.share(ctx) if self.budget is not None else None
        # SIGINT and SIGTERM are blocked while the children start (the mask is inherited):
        # a child ignores them (the parent decides) before it unblocks them, and a signal
        # meant for the parent waits for the parent's mask to come back
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for _ in range(self.workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(
                    target=_child_main, args=(child, streaks, budget, os.getpid()), daemon=True
                )
                p.start()
                child.close()
                conns.append(parent)
                procs.append(p)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        for i, parent in enumerate(conns):
            parent.send_bytes(pickle.dumps((self.spec, i, self.workers)))
        rows_out = [0] * self.workers  # rows sent, not yet answered
        requests_out = [0] * self.workers  # requests sent, not yet answered in full
        busy = 2 * self.spec.concurrency  # requests that keep a child's workers busy
        window = [asyncio.Event() for _ in range(self.workers)]
        done = [asyncio.Event() for _ in range(self.workers)]
        answered = asyncio.Event()  # some child answered some rows
        #: request id -> [its rows' tokens, its key tokens, rows unanswered, child]
        tokens: dict[int, list[Any]] = {}
        owners = _Owners()
        links = KeyLinks()
        ordered = self.spec.ordered
        next_id = 0

        def answer(tid: int, first: int, count: int, result: RowResult) -> None:
            entry = tokens[tid]
            rows = entry[0]
            source.answered(rows[first : first + count], (result,) * count, on_result)
            entry[2] -= count
            if entry[2] <= 0:
                del tokens[tid]
                if ordered and entry[1]:
                    owners.release(entry[1])
                requests_out[entry[3]] -= 1

        def died(i: int) -> None:
            """Child ``i`` is gone without a word (killed, out of memory): the run stops;
            what it held comes back ``not_sent`` at the end."""
            loop.remove_reader(conns[i].fileno())
            if not done[i].is_set():
                self.abort_reason = self.abort_reason or f"sender process {i} died"
                done[i].set()
            window[i].set()
            answered.set()

        def send(i: int, message: Any) -> None:
            # BrokenPipeError, ConnectionResetError: the child is gone; its last words (a
            # "done") may still wait in the pipe: the reader takes them, then the pipe's end
            # (``died``)
            with contextlib.suppress(OSError):
                conns[i].send_bytes(pickle.dumps(message))

        def reader(i: int) -> None:
            try:
                kind, payload = pickle.loads(conns[i].recv_bytes())
            except (EOFError, OSError):
                died(i)
                return
            if kind == "results":
                for tid, first, count, status, code, msg, attempts, latency, rid, amb in payload:
                    result = RowResult(Status(status), code, msg, attempts, latency, rid, amb)
                    answer(tid, first, count, result)
                    rows_out[i] -= count
                window[i].set()
                answered.set()
            elif kind == "done":
                done[i].set()  # first: a stop that ``_ended`` causes tells the others only
                self._ended(payload)
                window[i].set()
                answered.set()

        for i, c in enumerate(conns):
            loop.add_reader(c.fileno(), reader, i)
        told = [""] * self.workers  # "end" (then maybe "stop"), or "stop"

        def tell(i: int, kind: str) -> None:
            if told[i] != "stop" and told[i] != kind and not done[i].is_set():
                told[i] = kind
                send(i, (kind, None))

        def on_stop() -> None:  # stop(): every child stops now, every wait ends
            for i in range(self.workers):
                tell(i, "stop")
                window[i].set()
            answered.set()

        self._on_stop = on_stop

        buffers: list[list[Shipped]] = [[] for _ in conns]
        buffered = [0] * self.workers  # rows in buffers[i]

        def full(i: int) -> bool:
            return rows_out[i] >= WINDOW_ROWS and requests_out[i] >= busy

        async def ship(i: int) -> None:
            while full(i) and not done[i].is_set() and not self.stopping:
                window[i].clear()
                await window[i].wait()
            chunk, buffers[i] = buffers[i], []
            rows, buffered[i] = buffered[i], 0
            if done[i].is_set() or self.stopping:  # the child stopped: its share is not sent
                for item in chunk:
                    answer(item[0], 0, len(item[1]), not_sent())
            else:
                rows_out[i] += rows
                requests_out[i] += len(chunk)
                send(i, ("rows", chunk))

        async def settle(keys: tuple[int, ...], held: set[int]) -> int:
            """Wait until one child at most holds unanswered rows sharing ``keys``."""
            target = min(held)
            while len(held) > 1 and not self.stopping:
                for i in held - {target}:
                    if buffers[i]:
                        await ship(i)
                answered.clear()
                held = owners.holders(keys)
                if len(held) > 1:
                    await answered.wait()
                    held = owners.holders(keys)
            return held.pop() if held else target

        try:
            while not self.stopping:
                request = await source.next_request()
                if request is None:
                    break
                keys = request.keys
                tid = next_id
                next_id += 1
                ordering: tuple[Any, ...] = keys
                if ordered and keys:
                    ordering = link_request(links, request) if self.link_keys else keys
                    held = owners.holders(ordering)
                    if not held:
                        i = route(keys, self.workers, tid)
                    elif len(held) == 1:
                        i = held.pop()
                    else:
                        i = await settle(ordering, held)
                    owners.claim(i, ordering)
                else:
                    i = route(keys, self.workers, tid)
                n = len(request.items)
                tokens[tid] = [request.rows, ordering, n, i]
                buffers[i].append((tid, request.items, ordering, request.event))
                buffered[i] += n
                if buffered[i] >= CHUNK_ROWS or len(buffers[i]) >= CHUNK_ROWS:
                    await ship(i)
            for i in range(self.workers):
                if buffers[i]:
                    await ship(i)
                tell(i, "stop" if self.stopping else "end")
            for i in range(self.workers):
                await done[i].wait()
            # results that arrive after "done" (rows the child answered not_sent while draining)
            while tokens and any(p.is_alive() for p in procs):
                await asyncio.sleep(0.01)
        finally:
            self._on_stop = None
            for c in conns:
                loop.remove_reader(c.fileno())
                c.close()
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
            for tid in list(tokens):
                entry = tokens[tid]
                answer(tid, 0, len(entry[0]), not_sent())
