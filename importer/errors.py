"""One exception tree, grouped by what happens next.

::

    DmImportError                 base of everything the library raises on purpose
    ├── ConfigError               refuse the run before any data is sent (exit code 2)
    │                             carries every problem found, each with its key path
    ├── LoadError                 a whole input file cannot be read (missing, not a CSV, ...)
    ├── RunAborted                a fatal errcode (10003, 20000, repeated 20004) stopped a run
    │                             (exit code 3); rows not yet sent are reported ``not_sent``
    ├── LockedError               another run of the same job holds the lock (exit code 4)
    ├── LedgerError               the state file is corrupt or belongs to another tool
    └── DiskFullError             no space left on the disk of the ledger or the report: the
                                  run stopped, what was sent is recorded (exit code 6)

Problems with a single row are not exceptions: they are data (``RowProblem``) that flows to the
report, and the run goes on. Transport failures are not exceptions either: the client returns a
``TransportFailure`` the sender can retry on.

No message in this tree ever contains the SECRET: messages are built from names, paths and
counts, never from request headers.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass
from pathlib import Path


class DmImportError(Exception):
    """Base class of the library's own errors."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config: where (``job.kind``), what, and how to fix it."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}" if self.path else "config"
        if self.line is not None:
            where += f" (line {self.line})"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" -- {self.hint}"
        return text


class ConfigError(DmImportError):
    """The config (or the files' headers against it) is wrong; nothing was sent."""

    exit_code = 2

    def __init__(
        self,
        problems: list[ConfigProblem] | str,
        *,
        source: str | None = None,
        secrets: tuple[str, ...] = (),
    ):
        if isinstance(problems, str):
            problems = [ConfigProblem("", problems)]
        self.problems = problems
        self.source = source
        #: values of the config that look like credentials: never shown from the file
        self.secrets = secrets
        head = f"invalid config {source}" if source else "invalid config"
        body = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{head}:\n{body}")


class LoadError(DmImportError):
    """An input file cannot be read at all."""

    exit_code = 2


class RunAborted(DmImportError):
    """A fatal response stopped the run."""

    exit_code = 3


class LockedError(DmImportError):
    """Another run of the same job is in progress."""

    exit_code = 4


class LedgerError(DmImportError):
    """The ledger file cannot be used (corrupt, foreign, or from a different job)."""

    exit_code = 2


#: the errnos of a write that found no room: the disk, or the user's quota, is full
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(DmImportError):
    """No space left on the device holding ``path`` (the ledger, or a report file)."""

    exit_code = 6

    def __init__(self, path: str | Path, message: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(message or f"no space left on device writing {path}")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the process before its report could be written (before the
    sending started, or a second signal). ``signum`` says which; the exit code is 128 + it.

    Here, not in ``pipeline``: the CLI's SIGTERM handler raises it, and a SIGTERM may come
    while ``pipeline`` is still being imported (importing it from there then failed, exit 5,
    or the ImportError was swallowed by an optional import and the run went on to exit 0)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
