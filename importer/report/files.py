"""Report files are written whole or not at all, and readable by their owner only.

Every file is written whole or not at all (``importer.atomic``: a temporary name, an fsync, a
rename), so a reader never sees half a report; a write that finds its disk full raises
``DiskFullError`` naming the file (``writing``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..atomic import finish_atomic, private_opener, temp_path
from ..errors import NO_SPACE, ConfigError, ConfigProblem, DiskFullError


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write to ``path`` that finds its disk full raises ``DiskFullError`` naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise DiskFullError(path) from None
        raise


def make_run_dir(run_dir: Path, config_source: str = "") -> None:
    """Create a run's report folder (owner-only). A full disk: ``DiskFullError`` (nothing was
    sent); any other failure: ``ConfigError`` on ``report.dir`` of ``config_source``."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise DiskFullError(
                run_dir,
                f"no space left on device writing {run_dir}: nothing was sent; free space, "
                "then run the same command again",
            ) from None
        raise ConfigError(
            [
                ConfigProblem(
                    "report.dir",
                    f"cannot create the report folder {run_dir}: {exc.strerror or exc}",
                    hint="give a writable folder with --report-dir or report.dir",
                )
            ],
            source=config_source,
        ) from None


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON in ``path``, written atomically, owner-readable only."""
    tmp = temp_path(path)
    try:
        with writing(path):
            with open(tmp, "w", encoding="utf-8", opener=private_opener) as fh:
                json.dump(data, fh, ensure_ascii=False, indent=2, sort_keys=False)
                fh.write("\n")
            finish_atomic(tmp, path)
    except DiskFullError:
        tmp.unlink(missing_ok=True)
        raise


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What decides whether a killed run may be resumed on this file: its size, mtime and the
    SHA-256 of all of it. A sample (say the first and last MiB) would let a file edited in the
    middle with its mtime put back pass as the same, and its edited rows be skipped as done;
    hashing it all costs about 0.8 s per GB from the page cache, small next to reading,
    checking and sending it (and it leaves the file in the cache for that)."""
    st = path.stat()
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "sha256": digest,
    }


def changed_since_run(path: str, recorded: Iterable[Any]) -> bool:
    """Whether the file at ``path`` is no longer the one a run read: its size or SHA-256 differs
    from ``recorded`` (the run's ``summary.json`` ``files``). False for a file the run did not
    record (an older run) and for one missing or unreadable (reading it says so)."""
    by_path = {str(f.get("path")): f for f in recorded if isinstance(f, dict)}
    was = by_path.get(str(Path(path).resolve()))
    if was is None or not was.get("sha256"):
        return False
    try:
        return bool(
            Path(path).stat().st_size != was.get("size")
            or file_fingerprint(Path(path))["sha256"] != was["sha256"]
        )
    except OSError:
        return False
