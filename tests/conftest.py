"""Shared fixtures: a real sandbox server on loopback, clients for it, a clean environment.

- ``sandbox``: one server for the whole session (thread mode, temporary db, default schema).
  Tests that share it must use their own primary-key values: ``unique`` makes them.
- ``fresh_sandbox``: a factory for private servers (own db, schema, faults, process mode),
  stopped at the end of the test.
- ``client``: a ``Client`` for the shared sandbox.
- autouse: no ``DMART_*`` variable of the developer's shell leaks into a test, and each test
  runs in its own ``tmp_path`` (where a default ``reports/`` and its ledger go).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from importer.client import Client
from importer.sandbox import Sandbox, load_schema
from importer.sandbox.schema import PACKAGED_SCHEMA, Schema

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DMART_"):
            monkeypatch.delenv(name)
    # a job's default ledger is <parent of report.dir>/state/state.db, relative to the current
    # folder whatever --report-dir says: each test runs in its own folder, never in the
    # repository's reports/ or state/
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def sandbox_schema() -> Schema:
    """The packaged default schema, environment ignored."""
    return load_schema(PACKAGED_SCHEMA, env={})


@pytest.fixture(scope="session")
def sandbox(sandbox_schema: Schema) -> Iterator[Sandbox]:
    with Sandbox(schema=sandbox_schema) as sb:
        yield sb


@pytest.fixture
def fresh_sandbox(sandbox_schema: Schema) -> Iterator[Callable[..., Sandbox]]:
    """A factory: ``fresh_sandbox(**kwargs)`` -> a started private ``Sandbox`` (``Sandbox``'s
    arguments; the default schema unless one is given). All are stopped after the test."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("schema", sandbox_schema)
        sb = Sandbox(**kwargs)
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(sandbox.secret, sandbox.url, timeout=5.0) as c:
        yield c


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("phone")`` -> a value no other test in the session uses, e.g. ``phone-000042``."""
    return lambda prefix="id": f"{prefix}-{os.getpid()}-{next(_counter):06d}"


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl (on every Debian
    image, so its absence is a failure, not a skip)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """A factory: ``tmpfs("name", "64k")`` -> a real tmpfs of that size mounted at
    ``tmp_path/name`` (a real full disk, a real read-only file system with
    ``remount``); every mount is undone after the test. Needs root (the tests run as root:
    chmod does not stop root, a read-only mount does)."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "1m", options: str = "") -> Path:
        point = tmp_path / name
        point.mkdir()
        opts = f"size={size},mode=0700" + (f",{options}" if options else "")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
            check=True,
            capture_output=True,
        )
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=True, capture_output=True)


def remount(point: Path, options: str) -> None:
    """``remount(point, "ro")``, ``remount(point, "size=64m")`` (room again on a full disk)."""
    subprocess.run(
        ["mount", "-o", f"remount,{options}", str(point)], check=True, capture_output=True
    )
