"""Finding input files: paths, directories and glob patterns -> regular files."""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import LoadError

#: extension -> format; text formats may also end in ``.gz``
EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def expand_inputs(
    paths: Sequence[str | Path], skipped: list[tuple[Path, str]] | None = None
) -> list[Path]:
    """Files, directories (their input files, not recursive) and glob patterns -> sorted files.
    A directory's or a pattern's ``*.manifest.json`` (``input.ready: manifest``'s sidecars) are
    left out.

    An entry of a directory, or a match of a pattern, that is not a regular file (a named pipe,
    a device, a symbolic link loop or to nothing, a folder named like an input file) is never
    opened: it is appended to ``skipped`` with the reason. Raises ``LoadError`` for a path
    that matches nothing.
    """
    found: dict[Path, Path] = {}
    for item in paths:
        text = os.path.expanduser(str(item))
        path = Path(text)
        passed: list[tuple[Path, str]] = []
        if path.is_dir():
            if (path / "plan.json").is_file() and (path / "changes").is_dir():
                # OUT of a lake-side plan (importer.lake): its plan.json is not rows to import
                raise LoadError(
                    f"{text}: this is the output folder of a lake-side plan (plan.json, "
                    f"changes/, rejects/), not an input: send its change set: {path / 'changes'}"
                )
            # hidden files, an engine's bookkeeping (_SUCCESS, _committed_*, .crc, _metadata)
            # and an export's manifest (never data)
            entries = [p for p in path.iterdir() if not p.name.startswith((".", "_")) and _input(p)]
            matches = _regular_files(
                sorted(p for p in entries if _known_extension(p)), passed, subfolders=True
            )
            if not matches:
                known = ", ".join(EXTENSIONS)
                raise LoadError(
                    f"{text}: directory has no input files ({known}, or .gz)"
                    + "".join(f"; skipped {p.name}: {why}" for p, why in passed)
                )
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(text):
            listed = sorted(Path(p) for p in glob.glob(text) if _input(Path(p)))
            matches = _regular_files(listed, passed)
            if not matches:
                raise LoadError(
                    f"{text}: no file matches this pattern"
                    + "".join(f"; skipped {p}: {why}" for p, why in passed)
                )
        elif path.exists() or path.is_symlink():
            raise LoadError(f"{text}: {_not_regular(path)}")
        else:
            raise LoadError(f"{text}: no such file or directory")
        if skipped is not None:
            skipped += passed
        for match in matches:
            found.setdefault(match.resolve(), match)
    return sorted(found.values(), key=str)


def _regular_files(
    candidates: list[Path], skipped: list[tuple[Path, str]], subfolders: bool = False
) -> list[Path]:
    """The regular files among ``candidates`` (symbolic links followed); the rest go to
    ``skipped`` with the reason. Only ``stat`` is used: a named pipe is never opened, since
    opening one waits for a writer."""
    files = []
    for p in candidates:
        if p.is_file():
            files.append(p)
        elif subfolders or not p.is_dir() or _known_extension(p):
            # a pattern may name folders on its way (data/*), but data/*.csv names x.csv/
            skipped.append((p, _not_regular(p)))
    return files


def _not_regular(path: Path) -> str:
    """Why ``path``, which exists (or is a symbolic link), is not a file dmimport reads."""
    link = ""
    if path.is_symlink():
        try:
            link = f"a symbolic link to {os.readlink(path)}, "
            mode = path.stat().st_mode
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop"
            if exc.errno == errno.ENOENT:
                return f"{link}which does not exist"
            return f"{link}which cannot be inspected ({exc.strerror or exc})"
    else:
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            return f"cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return f"{link}a folder (subfolders are not read)"
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{link}{kind}, not a regular file"


#: the sidecar of ``input.ready: manifest`` (``customers.csv.manifest.json``): never an input
#: when a directory or a pattern is expanded (named alone, it is read as asked)
MANIFEST_SUFFIX = ".manifest.json"


def _input(path: Path) -> bool:
    return not path.name.lower().endswith(MANIFEST_SUFFIX)


def _known_extension(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        return EXTENSIONS.get(os.path.splitext(name[:-3])[1]) not in (None, "parquet")
    return os.path.splitext(name)[1] in EXTENSIONS
