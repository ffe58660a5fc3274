"""Files written whole or not at all, readable by their owner only: the report's files and a
ledger moved across file systems are both written this way.

A file is written under a temporary name in its own folder (``temp_path``), with owner-only
permissions (``private_opener``), and renamed into place once complete, after an fsync of the
file and then of the folder (``finish_atomic``), so a reader never sees half a file and a crash
leaves either the old file or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under until it is complete."""
    return path.with_name(f".{path.name}.tmp")


def finish_atomic(tmp: Path, final: Path) -> None:
    """fsync the finished temporary file, rename it into place, fsync the folder."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for ``open``: the file is readable by its owner only (customer data)."""
    return os.open(path, flags, 0o600)
