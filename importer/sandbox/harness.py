"""``Sandbox``: start and stop the server from Python (tests, benchmarks, demos).

Thread mode (default) runs the server on its own event loop in a background thread; process
mode runs ``python -m importer.sandbox serve`` so the server gets a core of its own. Both give
the same API; the store is read straight from the SQLite file, which holds everything that was
answered 0 (group commit).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .answers import FAULTS_PATH, STATS_PATH
from .faults import Faults
from .schema import Schema, load_schema
from .server import SandboxServer
from .store import Store, read_customers, read_events, read_raw_properties

_LISTENING = re.compile(r"^sandbox listening on (http://\S+) \(db: (.*)\)$")
_START_TIMEOUT_S = 20.0


class SandboxError(RuntimeError):
    """The sandbox could not start, or a control request failed."""


class Sandbox:
    """A running sandbox server; starts on construction, stops on ``stop()`` or ``with`` exit.

    ``schema`` is a ``Schema``, a YAML path, or None for the default schema. ``db`` is the
    SQLite file (None: a temporary one, deleted on stop). The keyword-only account settings
    (``batch_errors="store_valid"``, ``max_batch_rows=100``...) override the schema's keys of
    the same names (None: keep the schema's); ``Sandbox.schema`` is the result.
    """

    def __init__(
        self,
        schema: Schema | str | os.PathLike[str] | None = None,
        db: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        process: bool = False,
        *,
        batch_errors: str | None = None,
        max_batch_rows: int | None = None,
        max_body_bytes: int | None = None,
        unknown_properties: str | None = None,
        error_http_status: int | None = None,
        too_big: str | None = None,
        rate_limit_per_s: float | None = None,
        daily_quota: int | None = None,
        quota_timezone: str | None = None,
        display_names: dict[str, str] | None = None,
        masked_fields: list[str] | None = None,
        searchable: list[str] | None = None,
        openapi_keys: dict[str, str] | None = None,
    ) -> None:
        base = schema if isinstance(schema, Schema) else load_schema(schema)
        settings = {
            "batch_errors": batch_errors,
            "max_batch_rows": max_batch_rows,
            "max_body_bytes": max_body_bytes,
            "unknown_properties": unknown_properties,
            "error_http_status": error_http_status,
            "too_big": too_big,
            "rate_limit_per_s": rate_limit_per_s,
            "daily_quota": daily_quota,
            "quota_timezone": quota_timezone,
            "display_names": display_names,
            "masked_fields": masked_fields,
            "searchable": searchable,
            "openapi_keys": openapi_keys,
        }
        changes = {k: v for k, v in settings.items() if v is not None}
        self.schema = base.replace(**changes) if changes else base
        self.faults = faults or Faults()
        self.process = process
        self.host = host
        self._tmpdir: str | None = None
        if db is None:
            self._tmpdir = tempfile.mkdtemp(prefix="dmsandbox-")
            weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
            db = Path(self._tmpdir) / "sandbox.db"
        self.db = Path(db)
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: SandboxServer | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stopped = False
        try:
            if process:
                self._start_process(port)
            else:
                self._start_thread(port)
        except BaseException:
            self._cleanup()
            raise

    def __repr__(self) -> str:
        mode = "process" if self.process else "thread"
        return f"Sandbox(url={self.url!r}, db={str(self.db)!r}, mode={mode})"

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def secret(self) -> str:
        """The first accepted secret."""
        return self.schema.secret

    @property
    def access_key(self) -> str:
        """The Open API's first accepted access-key (``openapi_keys``)."""
        return next(iter(self.schema.openapi_keys))

    @property
    def access_secret(self) -> str:
        """The accessKeySecret of ``access_key``."""
        return self.schema.openapi_keys[self.access_key]

    # -- reading the store ------------------------------------------------------------------

    def customers(self) -> list[dict[str, Any]]:
        """Stored customers, oldest first: ``{"id": 1, "properties": {...}}``."""
        return read_customers(self.db)

    def events(self) -> list[dict[str, Any]]:
        """Stored events in arrival order: ``{"eventName", "event_id", "properties"}``."""
        return read_events(self.db)

    def stored_json(self, table: str = "customers") -> list[str]:
        """The stored properties JSON texts of ``customers`` or ``events``, as kept on disk."""
        return read_raw_properties(self.db, table)

    # -- control over HTTP (works in both modes) -----------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``GET /_sandbox/stats`` counters."""
        return self._control("GET", STATS_PATH)

    def set_faults(self, faults: Faults) -> None:
        """Replace the injected faults (the draw restarts from ``faults.seed``)."""
        self._control("POST", FAULTS_PATH, json.dumps(faults.to_dict()).encode())
        self.faults = faults

    def _control(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            raise SandboxError(f"{method} {path} failed: {type(exc).__name__}") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise SandboxError(f"{method} {path}: HTTP {resp.status} {data[:200]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server: the port and every connection are closed, the store committed."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._thread is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=15)
            if self._proc is not None:
                self._stop_process()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _start_thread(self, port: int) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            store = None
            try:
                store = Store(self.db, self.schema.primary_keys)
                server = SandboxServer(self.schema, store, self.faults)
                self.port = loop.run_until_complete(server.start(self.host, port))
                self._loop, self._server = loop, server
                ready.set()
                loop.run_forever()
                loop.run_until_complete(server.shutdown())
            except BaseException as exc:
                failure.append(exc)
            finally:
                if store is not None:
                    store.close()
                loop.close()
                ready.set()

        self._thread = threading.Thread(target=run, name="dmimport-sandbox", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise SandboxError(f"the sandbox did not start: {failure[0]}") from failure[0]

    def _start_process(self, port: int) -> None:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="dmsandbox-")
        schema_file = Path(self._tmpdir) / "schema.yaml"
        schema_file.write_text(self.schema.to_yaml(), encoding="utf-8")
        os.chmod(schema_file, 0o600)
        cmd = [
            sys.executable,
            "-m",
            "importer.sandbox",
            "serve",
            "--host",
            self.host,
            "--port",
            str(port),
            "--db",
            str(self.db),
            "--schema",
            str(schema_file),
            "--quiet",
            *self.faults.to_args(),
        ]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env
        )
        # a Sandbox nobody stopped must not leave its server running after the interpreter exits
        weakref.finalize(self, _terminate, self._proc)
        weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        line = self._read_line(self._proc, _START_TIMEOUT_S)
        match = _LISTENING.match(line.strip())
        if match is None:
            self._stop_process()
            raise SandboxError(f"the sandbox process did not start (said: {line.strip()!r})")
        self.port = urlsplit(match.group(1)).port or 0

    @staticmethod
    def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if sel.select(timeout=0.1):
                    return proc.stdout.readline()
                if proc.poll() is not None:
                    return ""
        return ""

    def _stop_process(self) -> None:
        if self._proc is not None:
            _terminate(self._proc)


def _terminate(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the server commits and exits), SIGKILL if it does not within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
