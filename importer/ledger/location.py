"""Where a job's ledger lives, adopting one an older dmimport left elsewhere, and opening it.

A job's ledger (and its lock) lives at ``state.path``, else ``<report.dir>/state.db``: with the
job, never in a run's ``--report-dir``, so two runs of the job with different report folders
share one lock and one memory. dmimport up to 0.1 kept it in ``--report-dir``;
``adopt_old_ledger`` moves such a file to the job's place.

These functions read a job's config through ``JobPlaces`` (the few attributes they need), so
this package imports no config.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import Protocol

from ..atomic import finish_atomic, temp_path
from ..errors import LedgerError, LockedError, UsageError
from .lock import lock_path
from .store import Ledger

log = logging.getLogger("importer")

__all__ = ["JobPlaces", "adopt_old_ledger", "ledger_path", "open_job_ledger"]


class _State(Protocol):
    @property
    def path(self) -> str | None: ...


class _Report(Protocol):
    @property
    def dir(self) -> str: ...


class JobPlaces(Protocol):
    """What of a job's config says where its ledger is (``importer.config.Config`` has it)."""

    @property
    def state(self) -> _State: ...

    @property
    def report(self) -> _Report: ...

    @property
    def job_name(self) -> str: ...


def ledger_path(cfg: JobPlaces) -> Path:
    """Where a job's ledger (and its lock) lives: ``state.path``, else ``<report.dir>/state.db``
    with the config's ``report.dir``. ``--report-dir`` moves a run's reports, never the job's
    ledger: two runs of the job with different report folders share one lock and one memory."""
    if cfg.state.path:
        return Path(cfg.state.path)
    return Path(cfg.report.dir) / "state.db"


def adopt_old_ledger(cfg: JobPlaces, report_dir: str | Path | None) -> Path | None:
    """Move a ledger that dmimport up to 0.1 kept in ``--report-dir`` to the job's place.

    Done when ``state.path`` is not set, the job's ledger does not exist yet and
    ``<report_dir>/state.db`` does, under the job's lock at the new place and at the old
    one (a run of the job holding either is left alone: its own lock says it is running).
    The file moves with its ``-wal`` (committed outcomes a killed run left there), so the job
    keeps its memory. Returns the old path when it moved it.
    """
    if cfg.state.path or report_dir is None:
        return None
    new = ledger_path(cfg)
    old = Path(report_dir) / "state.db"
    if os.path.lexists(new) or not old.is_file():
        return None
    new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    job = cfg.job_name
    fds: list[int] = []
    try:
        new_lock = lock_path(new, job)
        for path in (new_lock, lock_path(old, job)):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if path == new_lock:
                    return None  # a run of the job is going: its lock refuses this one next
                raise LockedError(
                    f"job '{job}' is already running with the ledger {old} (lock file "
                    f"{path}); wait for it to finish, then run again"
                ) from None
        if os.path.lexists(new) or not old.is_file():
            return None  # another run moved it while this one waited
        # the -wal first, the database last: the new name never shows a database without
        # the outcomes its -wal holds; the -shm is only an index, rebuilt from the -wal
        for suffix in ("-wal", ""):
            src = old.with_name(old.name + suffix)
            if src.exists():
                _move(src, new.with_name(new.name + suffix))
        old.with_name(old.name + "-shm").unlink(missing_ok=True)
    except OSError as exc:
        raise LedgerError(
            f"cannot move the ledger {old} to {new} ({exc.strerror or exc}); move it (with "
            f"its -wal file) by hand, or set state.path: {old}"
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)
    log.warning(
        "moved the ledger %s to %s: a job's ledger and lock now live with the job (state.path, "
        "else report.dir), no longer in --report-dir",
        old,
        new,
    )
    return old


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; across file systems, a copy fsynced under a temporary name
    (owner-only), renamed into place, then ``src`` removed."""
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = temp_path(dst)
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    finish_atomic(tmp, dst)
    src.unlink()


def open_job_ledger(cfg: JobPlaces, report_dir: str | Path | None) -> Ledger:
    """The job's existing ledger (after adopting one left in ``report_dir``), for the commands
    that read it (``runs``, ``retry RUN_ID``). ``UsageError`` when no run made one yet."""
    adopt_old_ledger(cfg, report_dir)
    path = ledger_path(cfg)
    if not path.exists():
        raise UsageError(
            f"no ledger at {path}: no run of this job has been recorded yet; "
            "`dmimport run CONFIG FILES` records one (or set state.path to the job's ledger)"
        )
    return Ledger(path)
