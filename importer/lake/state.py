"""The state table of a lake-side plan: identity hash -> body hash of the last delivered body.

Layout of a state folder ``STATE/``::

    STATE/_CURRENT                      the current version's folder name (replaced atomically)
    STATE/v-20261206T021500Z-1a2b3c4d/  a version: Parquet files with exactly two int64
        part-00000.parquet              columns, identity_hash and body_hash, one row per
        _state.json                     identity, sorted by identity_hash (zstd); _state.json:
                                        {"job", "kind", "created", "previous"}

A commit writes a new version (``new_version``, then its files), then swaps ``_CURRENT``
(``publish``), then removes the versions older than the previous one (``prune``: the current
and the previous version are kept, so a reader that started before the swap finishes). A crash
before the swap leaves the old state current; the half-written version is removed by a later
prune once a newer version is current. No ``STATE`` folder (or no ``_CURRENT``) is an empty
state: every identity is new.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import finish_atomic, temp_path
from ..errors import ConfigError, LockedError

__all__ = [
    "CURRENT",
    "LOCK",
    "STATE_META",
    "STATE_SCHEMA",
    "check_state",
    "current",
    "new_version",
    "prune",
    "publish",
    "read_state",
    "state_info",
    "state_lock",
    "state_locked",
    "versions",
    "write_state",
]

#: the file naming the current version
CURRENT = "_CURRENT"
#: each version's description
STATE_META = "_state.json"
STATE_SCHEMA = pa.schema([("identity_hash", pa.int64()), ("body_hash", pa.int64())])
#: the file a commit holds while it writes a version (``state_lock``)
LOCK = "_LOCK"
_PREFIX = "v-"
_P = ParamSpec("_P")
_R = TypeVar("_R")


def current(state: str | os.PathLike[str]) -> Path | None:
    """The current version's folder; None when the state has none yet (no folder, or no
    ``_CURRENT``)."""
    if Path(state).exists() and not Path(state).is_dir():
        raise ConfigError(f"state table {state}: not a folder (a state table is a folder)")
    try:
        name = (Path(state) / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name:
        return None
    path = Path(state) / name
    if name in (".", "..") or Path(name).name != name or not path.is_dir():
        raise ConfigError(
            f"state table {state}: {CURRENT} names {name}, which is not a folder of it "
            "(a version removed by hand?)"
        )
    return path


def state_info(version: str | os.PathLike[str]) -> dict[str, str] | None:
    """A version's ``_state.json`` ({"job", "kind", "created", "previous"}); None if absent."""
    try:
        info = json.loads((Path(version) / STATE_META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return info if isinstance(info, dict) else None


def new_version(
    state: str | os.PathLike[str], job: str | None = None, kind: str | None = None
) -> Path:
    """Make a new, empty version folder ``v-<UTC yyyymmddTHHMMSSZ>-<8 hex>`` (the state
    folder too, the first time) with its ``_state.json``, and return it; its Parquet files
    are then written into it and ``publish`` makes it current. ``job``/``kind`` default to
    the current version's (a first version needs them: ``check_state`` compares them)."""
    root = Path(state)
    root.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    before = current(root)
    info = state_info(before) if before is not None else None
    job = job if job is not None else (info or {}).get("job")
    kind = kind if kind is not None else (info or {}).get("kind")
    if job is None or kind is None:
        raise ValueError("the first version of a state table needs its job and kind")
    while True:
        path = root / f"{_PREFIX}{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            break
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
    meta = {
        "job": job,
        "kind": kind,
        "created": now.isoformat(timespec="microseconds"),
        "previous": before.name if before is not None else None,
    }
    _write_atomic(path / STATE_META, json.dumps(meta, indent=2) + "\n")
    return path


def write_state(version: str | os.PathLike[str], table: pa.Table, name: str = "part-00000") -> Path:
    """Write ``table`` (``identity_hash``, ``body_hash``, sorted by identity_hash) as one
    Parquet file of ``version``: zstd, no dictionary, the sorted hashes delta-encoded (about
    14 bytes per identity)."""
    table = table.select(list(STATE_SCHEMA.names)).cast(STATE_SCHEMA)
    path = Path(version) / f"{name}.parquet"
    tmp = temp_path(path)
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        use_dictionary=False,
        column_encoding={"identity_hash": "DELTA_BINARY_PACKED", "body_hash": "PLAIN"},
        write_statistics=["identity_hash"],
        row_group_size=1 << 20,
    )
    finish_atomic(tmp, path)
    return path


def publish(state: str | os.PathLike[str], version: str | os.PathLike[str]) -> None:
    """Make ``version`` (a folder of ``state``) the current one: ``_CURRENT`` replaced
    atomically (written aside, fsynced, renamed)."""
    root = Path(state)
    name = Path(version).name
    if not (root / name).is_dir():
        raise ValueError(f"{version} is not a version folder of the state table {state}")
    _write_atomic(root / CURRENT, name + "\n")


def versions(state: str | os.PathLike[str]) -> list[Path]:
    """The version folders of ``state``, oldest first (by creation)."""
    root = Path(state)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted(found, key=_created)


def prune(state: str | os.PathLike[str], keep: int = 2) -> list[Path]:
    """Remove the versions older than the ``keep`` newest of the current one's line (the
    current, its previous, ...): returns the folders removed. A version newer than the
    current one (a commit still writing) is never removed."""
    now = current(state)
    if now is None:
        return []
    kept: list[Path] = []
    at: Path | None = now
    while at is not None and len(kept) < max(1, keep):
        kept.append(at)
        prev = (state_info(at) or {}).get("previous")
        at = Path(state) / prev if prev and (Path(state) / prev).is_dir() else None
    oldest = min(_created(p) for p in kept)
    removed = []
    for path in versions(state):
        if path not in kept and _created(path) < oldest:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def read_state(state: str | os.PathLike[str] | None) -> pa.Table:
    """The current version as one table (``STATE_SCHEMA``; empty without a state). Reads it
    all: for small states, tests, and ``commit_table``."""
    version = current(state) if state is not None else None
    if version is None:
        return STATE_SCHEMA.empty_table()
    files = sorted(version.glob("*.parquet"))
    if not files:
        return STATE_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(f).cast(STATE_SCHEMA) for f in files)


def check_state(state: str | os.PathLike[str] | None, job: str, kind: str) -> None:
    """Refuse (``ConfigError``) a state table whose current version belongs to another job or
    kind than ``job``/``kind``: its hashes would mark the wrong rows unchanged."""
    version = current(state) if state is not None else None
    if version is None:
        return
    info = state_info(version) or {}
    theirs = (info.get("job"), info.get("kind"))
    if theirs != (job, kind):
        raise ConfigError(
            f"state table {state} belongs to job {theirs[0]!r} (kind {theirs[1]!r}), not to "
            f"job {job!r} (kind {kind!r}): give each job its own state folder"
        )


@contextlib.contextmanager
def state_lock(state: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``STATE/_LOCK`` (created exclusively, holding this process's pid, host and the
    time) while a commit reads the current version and publishes the next: two commits to one
    state at once would each merge into the same current version and the last would drop the
    other's hashes (their rows sent again). A lock left by a process of this host that is no
    longer running (killed) is taken over; any other held lock is a ``LockedError`` naming its
    holder. Removed when the block ends, however it ends."""
    root = Path(state)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"state table {state}: not a folder (a state table is a folder)")
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    host = socket.gethostname()
    mine = json.dumps(
        {
            "pid": os.getpid(),
            "host": host,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": secrets.token_hex(8),
        }
    )
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _take_over(path, state, host):
                continue
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(mine + "\n")
            break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8").strip() == mine:
                path.unlink()


def state_locked(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` (a commit taking a ``state`` argument) holding ``state_lock(state)``."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with state_lock(signature.bind(*args, **kwargs).arguments["state"]):
            return func(*args, **kwargs)

    return locked


def _take_over(path: Path, state: str | os.PathLike[str], host: str) -> bool:
    """Remove ``path`` when its holder is a dead process of this host (True: try again);
    raise ``LockedError`` naming a live (or unknown) holder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return True  # released meanwhile
    try:
        holder = json.loads(text)
        pid, where, since = int(holder["pid"]), str(holder["host"]), str(holder["since"])
    except (ValueError, KeyError, TypeError):
        raise LockedError(
            f"state table {state} is locked by {path}, which names no holder (a commit "
            f"starting?): wait and commit again; remove {path} only if no commit is running"
        ) from None
    if where == host and not _alive(pid):
        aside = path.with_name(f"{LOCK}-stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True
        if aside.read_text(encoding="utf-8") != text:  # another took it over first: give back
            with contextlib.suppress(OSError):
                os.link(aside, path)
        aside.unlink()
        return True
    raise LockedError(
        f"state table {state} is being committed by process {pid} on {where} (since "
        f"{since}): wait for that commit to end, then commit again; remove {path} only if "
        "no commit is running"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _created(path: Path) -> tuple[str, str]:
    info = state_info(path) or {}
    stamp = path.name[len(_PREFIX) : len(_PREFIX) + 16]
    created = str(info.get("created") or "")
    if not created:  # no _state.json: order by the folder's timestamp
        try:
            created = (
                datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
                .replace(tzinfo=UTC)
                .isoformat(timespec="microseconds")
            )
        except ValueError:
            created = ""
    return created, path.name


def _write_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    finish_atomic(tmp, path)
