"""Where a job's ledger lives, adopting one an older dmimport left elsewhere, and opening it.

A job's ledger (and its lock) lives at ``state.path``, else ``<parent of report.dir>/state/
state.db`` (``report.dir: reports`` -> ``state/state.db``, next to the reports, not among them:
cleaning up old report folders never erases the job's memory). It is the job's, never a run's
``--report-dir``'s, so two runs of the job with different report folders share one lock and one
memory. ``adopt_old_ledger`` moves a ledger an older dmimport left elsewhere to that place:
``<report.dir>/state.db`` (the default of earlier versions) or ``<--report-dir>/state.db`` (0.1).

These functions read a job's config through ``JobPlaces`` (the few attributes they need), so
this package imports no config.
"""

from __future__ import annotations

import contextlib
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

__all__ = [
    "JobPlaces",
    "adopt_old_ledger",
    "default_ledger_path",
    "ledger_path",
    "open_job_ledger",
]


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


def default_ledger_path(report_dir: str | Path) -> Path:
    """The default ledger of a job whose config says ``report.dir: report_dir``:
    ``<parent of report.dir>/state/state.db`` (``reports`` -> ``state/state.db``)."""
    return Path(report_dir).parent / "state" / "state.db"


def ledger_path(cfg: JobPlaces) -> Path:
    """Where a job's ledger (and its lock) lives: ``state.path``, else
    ``<parent of report.dir>/state/state.db`` with the config's ``report.dir``. ``--report-dir``
    moves a run's reports, never the job's ledger: two runs of the job with different report
    folders share one lock and one memory.

    While the ledger an older dmimport kept at ``<report.dir>/state.db`` has not been moved yet
    (``adopt_old_ledger`` moves it, unless a run still uses it), that file is the job's ledger.
    """
    if cfg.state.path:
        return Path(cfg.state.path)
    new = default_ledger_path(cfg.report.dir)
    old = Path(cfg.report.dir) / "state.db"
    if not os.path.lexists(new) and old.is_file():
        return old
    return new


def adopt_old_ledger(cfg: JobPlaces, report_dir: str | Path | None) -> Path | None:
    """Move a ledger an older dmimport left elsewhere to the job's place (``ledger_path``).

    Only when ``state.path`` is not set. The places looked at, in order: ``<report.dir>/
    state.db`` (the default of earlier versions), then ``<report_dir>/state.db`` (0.1 kept it in
    ``--report-dir``). A file is moved when the job's ledger does not exist yet, with its
    ``-wal`` and ``-journal`` files (committed outcomes a killed run left there) and the lock
    files of every job that used it, under all of those locks: a run still using the old
    file (its lock held) leaves it in place, and this run uses it there too (the move is
    made by a later run). A run of this job holding the old file's lock stops this one with
    ``LockedError``, as its lock would. Two runs racing: the locks let one move it; the
    other finds it moved. When both files exist the job's place wins, with a warning.
    Returns the old path when it moved it.
    """
    if cfg.state.path:
        return None
    new = default_ledger_path(cfg.report.dir)
    olds = [Path(cfg.report.dir) / "state.db"]
    if report_dir is not None:
        olds.append(Path(report_dir) / "state.db")
    for old in dict.fromkeys(olds):
        if old.is_file() and _moved(old, new, cfg.job_name):
            return old
    return None


def _moved(old: Path, new: Path, job: str) -> bool:
    """Move ledger ``old`` (and its companions) to ``new``; whether it did."""
    if os.path.lexists(new):
        if not os.path.samefile(old, new):
            log.warning(
                "both %s and %s exist: using %s (the job's ledger); %s is no longer read: "
                "move it aside (with its -wal and -shm files) once you no longer need it",
                old, new, new, old,
            )  # fmt: skip
        return False
    new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fds: list[int] = []
    try:
        own = lock_path(old, job)
        # this job's old lock first (its own run holding it: LockedError), then every other
        # job's that used the file
        others = sorted(p for p in old.parent.glob(old.name + ".*.lock") if p != own)
        for path in (own, *others):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if path == own:
                    raise LockedError(
                        f"job '{job}' is already running with the ledger {old} (lock file "
                        f"{path}); wait for it to finish, then run again"
                    ) from None
                # another job's run uses the old file, or a run is moving it: not now
                return False
        if os.path.lexists(new) or not old.is_file():
            return False  # another run moved it while this one waited
        # the -wal and -journal first, the database last: the new name never shows a
        # database without the outcomes they hold; the -shm is only an index, rebuilt
        for suffix in ("-wal", "-journal", ""):
            src = old.with_name(old.name + suffix)
            if src.exists():
                _move(src, new.with_name(new.name + suffix))
        old.with_name(old.name + "-shm").unlink(missing_ok=True)
        # the lock files go along, still held: a run that opened one by its old name
        # locks the very file the new name has
        for path in (own, *others):
            target = new.with_name(new.name + path.name[len(old.name) :])
            if not os.path.lexists(target):
                with contextlib.suppress(OSError):  # another file system: it stays
                    os.rename(path, target)
    except OSError as exc:
        raise LedgerError(
            f"cannot move the ledger {old} to {new} ({exc.strerror or exc}); move it (with "
            f"its -wal file) by hand, or set state.path: {old}"
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)
    log.warning("moved the ledger from %s to %s", old, new)
    return True


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
