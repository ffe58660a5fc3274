"""The reference senders dmimport is measured against, and the sandbox they all talk to.

Ceilings are bare loops over bodies prepared beforehand (no reading, mapping or reporting):
each request is still signed afresh with ``importer.protocol.auth_headers`` and its answer
read and parsed, so the server does exactly the work it does for dmimport.

- ``http.client``: one thread per connection, ``concurrency`` threads;
- ``aiohttp``: one ``ClientSession``, ``concurrency`` requests in flight;
- ``StreamTransport``: the project's own transport in a bare asyncio loop.

The naive baseline is what a user would write by hand: pandas ``read_csv(dtype=str)``, then a
``ThreadPoolExecutor`` with a ``requests.Session`` per thread posting each row's dict.
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

from importer.protocol import DEFAULT_PROFILE, auth_headers, parse_response
from importer.sandbox import Faults, Sandbox

from .data import COLUMN_MAP
from .proc import machine_busy_s, proc_cpu_s

CONTENT_TYPE = "application/json; charset=utf-8"
USER_PATH = DEFAULT_PROFILE.path("user", False)


@dataclass
class SendRate:
    """One measured send: how many requests, how long, and what it cost each side in CPU."""

    name: str
    requests: int
    ok: int
    elapsed_s: float
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    #: CPU other programs used on the machine meanwhile (a shared box makes noisy figures)
    foreign_cpu_s: float | None = None

    @property
    def rate(self) -> float:
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
        if self.client_cpu_s is not None and self.requests:
            out["client_cpu_us_per_request"] = round(self.client_cpu_s / self.requests * 1e6, 1)
        if self.elapsed_s > 0:
            for what in ("server", "foreign"):
                cpu = out[f"{what}_cpu_s"]
                if cpu is not None:
                    out[f"{what}_cpu_share"] = round(cpu / self.elapsed_s, 3)
        return out

    @classmethod
    def from_meter(cls, name: str, requests: int, ok: int, m: dict[str, float]) -> SendRate:
        return cls(name, requests, ok, m["elapsed_s"], m["client_cpu_s"],
                   m.get("server_cpu_s"), m.get("foreign_cpu_s"))  # fmt: skip


class BenchSandbox:
    """``Sandbox(process=True)`` on a fresh SQLite file, plus the server process's CPU clock."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self._tmp = tempfile.mkdtemp(prefix="dmbench-")
        faults = Faults(latency_ms=latency_ms) if latency_ms else None
        self.sb = Sandbox(process=True, db=Path(self._tmp) / "sandbox.db", faults=faults)
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

    def user_requests(self) -> int:
        return int(self.stats().get("by_path", {}).get("/v1/user", 0))


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
    if status != 200:
        return False
    try:
        return parse_response(data)[0] == 0
    except ValueError:
        return False


# -- ceiling (a): http.client, a persistent connection per thread ---------------------------


def send_http_client(
    sandbox: BenchSandbox, bodies: list[bytes], concurrency: int, name: str = "http.client"
) -> SendRate:
    host, port = sandbox.sb.host, sandbox.sb.port
    secret = sandbox.secret
    work = iter(bodies)  # next() on a list iterator is atomic under the GIL
    oks = [0] * concurrency
    done = [0] * concurrency
    errors: list[BaseException] = []
    conns = [http.client.HTTPConnection(host, port, timeout=30) for _ in range(concurrency)]
    for conn in conns:
        conn.connect()
    start = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        conn = conns[k]
        ok = n = 0
        start.wait()
        try:
            for body in work:
                headers = auth_headers(secret, body)
                headers["Content-Type"] = CONTENT_TYPE
                conn.request("POST", USER_PATH, body=body, headers=headers)
                resp = conn.getresponse()
                ok += _ok(resp.status, resp.read())
                n += 1
        except BaseException as exc:  # reported below; a broken ceiling must not pass silently
            errors.append(exc)
        finally:
            oks[k], done[k] = ok, n
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
    return SendRate.from_meter(name, sum(done), sum(oks), m)


# -- ceiling (b): aiohttp -------------------------------------------------------------------


def send_aiohttp(sandbox: BenchSandbox, bodies: list[bytes], concurrency: int) -> SendRate:
    import aiohttp

    url = sandbox.url + USER_PATH
    secret = sandbox.secret

    async def main() -> tuple[int, int]:
        work = iter(bodies)
        ok = n = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok, n
                for body in work:
                    headers = auth_headers(secret, body)
                    headers["Content-Type"] = CONTENT_TYPE
                    async with session.post(url, data=body, headers=headers) as resp:
                        ok += _ok(resp.status, await resp.read())
                    n += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n, ok

    with metered(sandbox) as m:
        n, ok = asyncio.run(main())
    return SendRate.from_meter("aiohttp", n, ok, m)


# -- ceiling (c): the project's StreamTransport ---------------------------------------------


def send_stream_transport(sandbox: BenchSandbox, bodies: list[bytes], concurrency: int) -> SendRate:
    from importer.send import StreamTransport

    secret = sandbox.secret

    async def main() -> tuple[int, int]:
        transport = StreamTransport(sandbox.url)
        work = iter(bodies)
        ok = n = 0

        async def worker() -> None:
            nonlocal ok, n
            for body in work:
                outcome = await transport.post(USER_PATH, body, auth_headers(secret, body))
                ok += outcome.ok
                n += 1

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await transport.aclose()
        return n, ok

    with metered(sandbox) as m:
        n, ok = asyncio.run(main())
    return SendRate.from_meter("StreamTransport", n, ok, m)


CEILINGS: dict[str, Callable[[BenchSandbox, list[bytes], int], SendRate]] = {
    "http.client": send_http_client,
    "aiohttp": send_aiohttp,
    "StreamTransport": send_stream_transport,
}


# -- the naive baseline ---------------------------------------------------------------------


def send_naive(sandbox: BenchSandbox, csv_path: Path, concurrency: int) -> SendRate:
    """pandas + requests, as a user would write it; the time includes reading the file."""
    import pandas as pd
    import requests

    url = sandbox.url + USER_PATH
    secret = sandbox.secret
    local = threading.local()

    def post(row: dict[str, Any]) -> bool:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        props = {k: v for k, v in row.items() if isinstance(v, str)}  # NaN for empty cells
        if "age" in props:
            props["age"] = int(props["age"])
        body = json.dumps({"properties": props}, ensure_ascii=False).encode()
        headers = {**auth_headers(secret, body), "Content-Type": CONTENT_TYPE}
        resp = session.post(url, data=body, headers=headers, timeout=30)
        return resp.status_code == 200 and resp.json().get("errcode") == 0

    with metered(sandbox) as m:
        df = pd.read_csv(csv_path, dtype=str)
        rows = df[list(COLUMN_MAP)].rename(columns=COLUMN_MAP).to_dict("records")
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            ok = sum(pool.map(post, rows))
    return SendRate.from_meter("naive pandas+requests", len(rows), ok, m)
