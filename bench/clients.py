"""The reference senders dmimport is measured against, and the sandbox they all talk to.

Ceilings are bare loops over bodies prepared beforehand (no reading, mapping or reporting):
the same ``user_batch`` bodies of ``send.batch_rows`` rows the importer sends, posted to the
``import-api`` endpoint (``DEFAULT_PROFILE.target``: the SECRET in the query), each answer read
and parsed, so the server does exactly the work it does for dmimport. Their rate is in rows/s
(rows carried by requests answered 0). Under the ``signed`` profile the same loops would sign
each request afresh (``Profile.auth_headers``; ``import-api`` has no auth headers).

- ``http.client``: one thread per connection, ``concurrency`` threads;
- ``aiohttp``: one ``ClientSession``, ``concurrency`` requests in flight;
- ``StreamTransport``: the project's own transport in a bare asyncio loop.

The naive baselines are what a user would write by hand from the platform's pages: pandas
``read_csv(dtype=str)``, then a ``ThreadPoolExecutor`` with a ``requests.Session`` per thread
posting each row as a ``user`` call (the SDK page's only call for customers), or each chunk
of ``send.batch_rows`` rows as a ``user_batch`` body (the help pages' batch import).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from importer.protocol import DEFAULT_PROFILE, ProtocolError, parse_response
from importer.sandbox import Faults, Sandbox

from .data import COLUMN_MAP
from .proc import machine_busy_s, proc_cpu_s

CONTENT_TYPE = "application/json; charset=utf-8"
PROFILE = DEFAULT_PROFILE

#: prepared requests: each body with the number of rows it carries
Bodies = list[tuple[bytes, int]]


@dataclass
class SendRate:
    """One measured send: how many requests, how long, and what it cost each side in CPU."""

    name: str
    requests: int
    #: requests answered errcode 0
    ok: int
    elapsed_s: float
    #: rows carried by the requests answered 0
    rows: int = 0
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    #: CPU other programs used on the machine meanwhile (a shared box makes noisy figures)
    foreign_cpu_s: float | None = None

    @property
    def rate(self) -> float:
        """Rows per second (rows of the requests answered 0)."""
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def foreign_share(self) -> float | None:
        """Share of a core other programs used while this ran."""
        if self.foreign_cpu_s is None or self.elapsed_s <= 0:
            return None
        return self.foreign_cpu_s / self.elapsed_s

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate_per_s"] = round(self.rate, 1)
        out["requests_per_s"] = round(self.request_rate, 1)
        if self.client_cpu_s is not None and self.requests:
            out["client_cpu_us_per_request"] = round(self.client_cpu_s / self.requests * 1e6, 1)
        if self.client_cpu_s is not None and self.rows:
            out["client_cpu_us_per_row"] = round(self.client_cpu_s / self.rows * 1e6, 2)
        if self.elapsed_s > 0:
            for what in ("server", "foreign"):
                cpu = out[f"{what}_cpu_s"]
                if cpu is not None:
                    out[f"{what}_cpu_share"] = round(cpu / self.elapsed_s, 3)
        return out

    @classmethod
    def from_meter(
        cls, name: str, requests: int, ok: int, rows: int, m: dict[str, float]
    ) -> SendRate:
        return cls(name, requests, ok, m["elapsed_s"], rows, m["client_cpu_s"],
                   m.get("server_cpu_s"), m.get("foreign_cpu_s"))  # fmt: skip


class BenchSandbox:
    """``Sandbox(process=True)`` on a fresh SQLite file, plus the server process's CPU clock.

    ``account``: settings of the account schema to change from the default (``batch_errors``,
    ``unknown_properties``, ``rate_limit_per_s``...: ``Sandbox``'s keyword arguments)."""

    def __init__(self, latency_ms: float = 0.0, account: dict[str, Any] | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="dmbench-")
        faults = Faults(latency_ms=latency_ms) if latency_ms else None
        try:
            self.sb = Sandbox(
                process=True, db=Path(self._tmp) / "sandbox.db", faults=faults, **(account or {})
            )
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.latency_ms = latency_ms

    def __enter__(self) -> BenchSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sb.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def url(self) -> str:
        return self.sb.url

    @property
    def secret(self) -> str:
        return self.sb.secret

    def cpu_s(self) -> float | None:
        proc = getattr(self.sb, "_proc", None)  # process mode keeps the Popen here
        return proc_cpu_s(proc.pid) if proc is not None else None

    def stats(self) -> dict[str, Any]:
        return self.sb.stats()

    def api_requests(self) -> int:
        """Requests that reached the API (the sandbox's own admin calls not counted)."""
        return int(self.stats().get("requests", 0))

    def target(self) -> str:
        """Path and query of a ``user`` / ``user_batch`` request (carries the SECRET)."""
        return PROFILE.target("user", False, self.secret)


@contextlib.contextmanager
def metered(sandbox: BenchSandbox) -> Iterator[dict[str, float]]:
    """Times the block and measures this process's and the server's CPU over it."""
    out: dict[str, float] = {}
    srv0 = sandbox.cpu_s()
    busy0 = machine_busy_s()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    yield out
    out["elapsed_s"] = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy1 = machine_busy_s()
    out["client_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    srv1 = sandbox.cpu_s()
    if srv0 is not None and srv1 is not None:
        out["server_cpu_s"] = srv1 - srv0
        if busy0 is not None and busy1 is not None:
            foreign = busy1 - busy0 - out["client_cpu_s"] - out["server_cpu_s"]
            out["foreign_cpu_s"] = max(0.0, foreign)


def _ok(status: int, data: bytes) -> bool:
    """Answered errcode 0 (the documented answers carry their errcode whatever the status)."""
    if status in (413, 429):
        return False
    try:
        return parse_response(data)[0] == 0
    except ProtocolError:
        return False


def _headers(secret: str, body: bytes) -> dict[str, str]:
    return {**PROFILE.auth_headers(secret, body), "Content-Type": CONTENT_TYPE}


# -- ceiling (a): http.client, a persistent connection per thread ---------------------------


def send_http_client(
    sandbox: BenchSandbox, bodies: Bodies, concurrency: int, name: str = "http.client"
) -> SendRate:
    host, port = sandbox.sb.host, sandbox.sb.port
    secret = sandbox.secret
    target = sandbox.target()
    work = iter(bodies)  # next() on a list iterator is atomic under the GIL
    oks = [0] * concurrency
    done = [0] * concurrency
    rows = [0] * concurrency
    errors: list[BaseException] = []
    conns = [http.client.HTTPConnection(host, port, timeout=30) for _ in range(concurrency)]
    for conn in conns:
        conn.connect()
    start = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        conn = conns[k]
        ok = n = r = 0
        start.wait()
        try:
            for body, count in work:
                conn.request("POST", target, body=body, headers=_headers(secret, body))
                resp = conn.getresponse()
                good = _ok(resp.status, resp.read())
                ok += good
                r += count if good else 0
                n += 1
        except BaseException as exc:  # reported below; a broken ceiling must not pass silently
            errors.append(exc)
        finally:
            oks[k], done[k], rows[k] = ok, n, r
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    with metered(sandbox) as m:
        start.wait()
        for t in threads:
            t.join()
    if errors:
        raise RuntimeError(f"{name}: {type(errors[0]).__name__}: {errors[0]}")
    return SendRate.from_meter(name, sum(done), sum(oks), sum(rows), m)


# -- ceiling (b): aiohttp -------------------------------------------------------------------


def send_aiohttp(sandbox: BenchSandbox, bodies: Bodies, concurrency: int) -> SendRate:
    import aiohttp
    from yarl import URL

    # encoded=True: the target is already percent-encoded, send it as is
    url = URL(sandbox.url + sandbox.target(), encoded=True)
    secret = sandbox.secret

    async def main() -> tuple[int, int, int]:
        work = iter(bodies)
        ok = n = rows = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok, n, rows
                for body, count in work:
                    headers = _headers(secret, body)
                    async with session.post(url, data=body, headers=headers) as resp:
                        good = _ok(resp.status, await resp.read())
                    ok += good
                    rows += count if good else 0
                    n += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n, ok, rows

    with metered(sandbox) as m:
        n, ok, rows = asyncio.run(main())
    return SendRate.from_meter("aiohttp", n, ok, rows, m)


# -- ceiling (c): the project's StreamTransport ---------------------------------------------


def send_stream_transport(sandbox: BenchSandbox, bodies: Bodies, concurrency: int) -> SendRate:
    from importer.send import StreamTransport

    secret = sandbox.secret
    target = sandbox.target()

    async def main() -> tuple[int, int, int]:
        transport = StreamTransport(sandbox.url)
        work = iter(bodies)
        ok = n = rows = 0

        async def worker() -> None:
            nonlocal ok, n, rows
            for body, count in work:
                outcome = await transport.post(target, body, PROFILE.auth_headers(secret, body))
                ok += outcome.ok
                rows += count if outcome.ok else 0
                n += 1

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await transport.aclose()
        return n, ok, rows

    with metered(sandbox) as m:
        n, ok, rows = asyncio.run(main())
    return SendRate.from_meter("StreamTransport", n, ok, rows, m)


CEILINGS: dict[str, Callable[[BenchSandbox, Bodies, int], SendRate]] = {
    "http.client": send_http_client,
    "aiohttp": send_aiohttp,
    "StreamTransport": send_stream_transport,
}


# -- the naive baseline ---------------------------------------------------------------------


def send_naive(
    sandbox: BenchSandbox, csv_path: Path, concurrency: int, batch_rows: int | None = None
) -> SendRate:
    """pandas + requests, as a user would write it from the platform's pages; the time
    includes reading the file. ``batch_rows`` None: one ``user`` call per row (the SDK page's
    ``user(properties)``, which has no batch form); a number: ``user_batch`` bodies of that
    many rows (the help pages' batch import)."""
    import pandas as pd
    import requests

    url = sandbox.url + sandbox.target()
    secret = sandbox.secret
    local = threading.local()

    def record(row: dict[str, Any]) -> dict[str, Any]:
        props = {k: v for k, v in row.items() if isinstance(v, str)}  # NaN for empty cells
        if "age" in props:
            props["age"] = int(props["age"])
        return props

    def post(chunk: list[dict[str, Any]]) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        if batch_rows is None:
            doc = {"type": "user", "properties": record(chunk[0])}
        else:
            doc = {"type": "user_batch", "properties": [record(r) for r in chunk]}
        body = json.dumps(doc, ensure_ascii=False).encode()
        resp = session.post(url, data=body, headers=_headers(secret, body), timeout=30)
        return len(chunk) if resp.json().get("errcode") == 0 else 0

    step = batch_rows or 1
    name = "naive pandas+requests" + (f" (user_batch of {batch_rows})" if batch_rows else "")
    with metered(sandbox) as m:
        df = pd.read_csv(csv_path, dtype=str)
        rows = df[list(COLUMN_MAP)].rename(columns=COLUMN_MAP).to_dict("records")
        chunks = [rows[k : k + step] for k in range(0, len(rows), step)]
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            sent = list(pool.map(post, chunks))
    ok = sum(1 for r in sent if r)
    return SendRate.from_meter(name, len(chunks), ok, sum(sent), m)
