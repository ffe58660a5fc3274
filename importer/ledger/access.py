"""Before and after SQLite opens a ledger file: refuse what is not ours or not writable, say
why in the user's terms, and keep the files private (they hold customer identities)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from ..errors import LedgerError

log = logging.getLogger("importer")

APPLICATION = "dmimport-ledger"

_SQLITE_HEADER = b"SQLite format 3\x00"
#: a ledger's meta table is among its first pages: a damaged file holding this early on is one
_LEDGER_MARK = APPLICATION.encode()
_MARK_SCAN = 1 << 20


def not_a_ledger(path: Path, exc: BaseException) -> LedgerError:
    """An SQLite file that cannot be read: a damaged ledger may be moved aside; anything
    else is somebody else's file, which dmimport never advises to move."""
    try:
        with open(path, "rb") as fh:
            ours = _LEDGER_MARK in fh.read(_MARK_SCAN)
    except OSError:
        ours = False
    if ours:
        return LedgerError(
            f"ledger {path} is a damaged dmimport ledger ({exc}); it was left untouched. "
            f"Move it aside with its -wal and -shm files (mv {path} {path}.bad) to start a new "
            "ledger, or set state.path to another file"
        )
    return LedgerError(
        f"{path} is not a dmimport ledger (an SQLite database that cannot be read: {exc}); "
        "it was left untouched. Set state.path to another file"
    )


#: the ledger files (device, inode) whose first bytes this process has read: each is read
#: once. Closing any descriptor of a file drops every POSIX lock the process holds on it,
#: SQLite's included; read again while a connection of this process has the file open, another
#: process (another job's run sharing the ledger) could take itself for the file's last user,
#: checkpoint and delete the WAL, and this process's later commits would be lost.
_READ: set[tuple[int, int]] = set()


def refuse_foreign_or_unwritable(path: Path) -> None:
    """Before SQLite opens ``path``: refuse a file that is not an SQLite database (never ours
    to touch), then one this process cannot write (named with the actual cause)."""
    try:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
    except OSError:
        key = None
    if key not in _READ:
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
        except OSError:
            head, key = b"", None  # unreadable: the access check says why
        if head and head != _SQLITE_HEADER:
            raise LedgerError(
                f"{path} is not a dmimport ledger (not an SQLite database); it was left "
                "untouched. Set state.path to another file (a new one is created there)"
            )
        if key is not None:  # an SQLite database, or empty (about to become the ledger)
            _READ.add(key)
    problem = access_problem(path)
    if problem is not None:
        raise problem


def access_problem(path: Path) -> LedgerError | None:
    """Why the ledger at ``path`` (or SQLite's -wal and -shm files next to it) cannot be
    written by this process, if it cannot: a read-only file system, or permissions."""
    try:
        readonly = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly:
        return LedgerError(
            f"ledger {path} is on a read-only file system; it was left untouched. "
            f"{fix_hint(errno.EROFS)}"
        )
    user = f"this user (uid {os.geteuid()})"
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            return LedgerError(
                f"ledger {path}: {file} cannot be read and written by {user}: permission "
                f"denied; it was left untouched. {fix_hint(errno.EACCES)}"
            )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return LedgerError(
            f"ledger {path}: its folder {path.parent} cannot be written by {user} (SQLite "
            f"keeps the -wal and -shm files there): permission denied; it was left untouched. "
            f"{fix_hint(errno.EACCES)}"
        )
    return None


def fix_hint(code: int | None) -> str:
    if code == errno.EROFS:
        return "Remount it read-write, or set state.path to a file on a writable disk"
    if code in (errno.EACCES, errno.EPERM):
        return (
            "Let the user running dmimport read and write the ledger, its -wal and -shm files "
            "and its folder (chown/chmod), or set state.path to a place it can write"
        )
    return "Set state.path to a writable place"


def make_private(path: Path) -> None:
    """The ledger and its -wal and -shm files: readable by their owner only (they hold
    customer identities), whatever mode they had."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            pass
        except OSError as exc:  # not its owner: say so, the run can still go on
            log.warning("cannot make %s private (mode 600): %s", file, exc.strerror)
