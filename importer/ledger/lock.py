"""Who may run a job: its lock (an ``flock`` on a sidecar file) and the test whether the
process of an unfinished run is gone."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from ..errors import LedgerError, LockedError
from .schema import now

#: a process that started this long after a run began cannot be that run: its pid was reused
_PID_REUSE_SLACK_S = 5.0


def lock_path(ledger: Path, job: str) -> Path:
    """The sidecar file ``<ledger>.<job>.lock`` that ``Ledger.lock(job)`` flocks."""
    return ledger.with_name(f"{ledger.name}.{quote(job, safe='')}.lock")


@contextlib.contextmanager
def job_lock(ledger: Path, job: str, host: str, held: set[str]) -> Iterator[None]:
    """Hold ``job``'s lock for the ``with`` block (``job`` is in ``held`` meanwhile);
    LockedError if another process holds it.

    An exclusive ``flock`` on a sidecar file: the kernel releases it when the holder dies,
    however it dies, so a killed run never leaves a stale lock. The file is never deleted
    (deleting it would let two processes lock two different files). The holder writes its
    pid, host and start time into it, for the message a second run gets.
    """
    path = lock_path(ledger, job)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LedgerError(f"cannot open lock file {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(_locked_message(path, job, host, fd)) from None
        holder = {"pid": os.getpid(), "host": host, "started": now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        held.add(job)
        try:
            yield
        finally:
            held.discard(job)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _locked_message(path: Path, job: str, host: str, fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        who = f"pid {holder['pid']}"
        if holder.get("host") != host:
            who += f" on {holder.get('host')}"
        who += f", started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        who = "pid unknown"  # the holder has not written its name yet
    return (
        f"job '{job}' is already running ({who}); wait for it to finish, or stop that "
        f"process, then run again (lock file {path})"
    )


def refuse_if_alive(
    job: str, run_id: str, pid: int, host: str, started: str, *, this_host: str, holding: bool
) -> None:
    """LockedError unless the process of unfinished run ``run_id`` is certainly gone
    (``holding``: this process holds the job's lock)."""
    if host != this_host:
        # Another host cannot be probed. The job lock (flock on the ledger's local disk)
        # already keeps a second run out, so a run without the lock is dead.
        if holding:
            return
        raise LockedError(
            f"job '{job}' has an unfinished run {run_id} (pid {pid} on host {host}, "
            f"started {started}) that this host cannot check; run it under the job lock "
            "(Ledger.lock) to resume it"
        )
    if pid == os.getpid() and holding:
        return  # this process holds the lock, so its earlier run of the job is over
    if _process_alive(pid, started):
        raise LockedError(
            f"job '{job}' is already running (pid {pid}, started {started}); "
            "wait for it to finish, or stop that process, then run again"
        )


def _process_alive(pid: int, started: str) -> bool:
    """Whether ``pid`` on this host may still be the process that began a run at ``started``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    proc = _proc_start(pid)
    if proc is None:
        return True  # no /proc (macOS): a live pid is taken as the run
    state, start = proc
    if state in ("Z", "X"):
        return False
    try:
        run_start = datetime.fromisoformat(started).timestamp()
    except ValueError:
        return True
    # After a reboot or a long pause the pid may belong to a process started since.
    return start <= run_start + _PID_REUSE_SLACK_S


def _proc_start(pid: int) -> tuple[str, float] | None:
    """(state, start time as a Unix timestamp) of ``pid`` from Linux's /proc, if there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        with open("/proc/stat") as fh:
            btime = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
        return fields[0], btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
