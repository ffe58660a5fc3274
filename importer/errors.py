"""One exception tree, grouped by what happens next.

::

    DmImportError                 base of everything the library raises on purpose (exit code 2
    │                             unless a subclass says otherwise)
    ├── UsageError                the command cannot run as asked (conflicting options, no
    │                             ledger yet): exit code 2
    ├── NothingToRetry            ``retry`` found no row to send again: exit code 0
    ├── ConfigError               refuse the run before any data is sent (exit code 2)
    │                             carries every problem found, each with its key path
    ├── LoadError                 a whole input file cannot be read (missing, not a CSV, ...)
    │   │                         (exit code 2)
    │   └── TruncatedInput        a .gz file cut off before its stream's end (a run: exit 7)
    ├── LockedError               another run of the same job holds the lock (exit code 4)
    ├── LedgerError               the state file is corrupt or belongs to another tool (exit
    │                             code 2)
    ├── QuotaError                the run's plan does not fit in what is left of the daily
    │                             quota; nothing was sent (exit code 2)
    ├── OpenApiError              read-back: the Open API kept failing or answered an error
    │   │                         (exit code 3)
    │   └── OpenApiForbidden      HTTP 403: the access-key, sign or IP was refused (exit code 3)
    ├── DiskFullError             no space left on the disk of the ledger or the report: the
    │                             run stopped, what was sent is recorded (exit code 6)
    ├── InputIncomplete           an input file looks incomplete (``input.ready``, a cut last
    │                             record, ``input.min_rows``, ``input.min_size_ratio``);
    │                             nothing was sent (exit code 7)
    └── HeldError                 the blast-radius gate (``guard:``) held the run: it would
                                  change too much; a plan file says why; nothing was sent
                                  (exit code 8)

    Interrupted                   a KeyboardInterrupt: SIGINT or SIGTERM stopped the process
                                  before a report could be written (exit code 128 + signal)

Problems with a single row are not exceptions: they are data (an errcode and a reason in the
row's report line), and the run goes on. A run that stops early is not one either: a fatal
answer (10003, 20000, repeated 20004) or an outage ends it with a ``RunSummary`` whose
``aborted`` says why (exit code 3), the rows not yet sent reported ``not_sent``. Transport
failures are not exceptions: the bulk sender's transport and the SDK return a
``TransportFailure`` (``importer.outcomes``), which the sender may retry.

The exit codes are ``importer.exitcodes``'s constants (docs/exit-codes.md); exit code 1 is only
ever a run's (rows rejected, failed or not sent), never an exception's.

No message in this tree ever contains the SECRET: messages are built from names, paths and
counts, never from request headers.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass
from pathlib import Path

from pydantic_core import PydanticCustomError

from . import exitcodes


class DmImportError(Exception):
    """Base class of the library's own errors."""

    exit_code = exitcodes.USAGE


class UsageError(DmImportError):
    """The command cannot run as asked: conflicting or invalid options, or a command that
    needs the job's ledger before any run of the job has made one. Nothing was done."""

    exit_code = exitcodes.USAGE


class NothingToRetry(DmImportError):
    """``retry`` found no row to send again (the run had no failed or not_sent rows, or a later
    delivered row of each one's customer overrode it). Not a failure: exit code 0."""

    exit_code = exitcodes.OK


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

    exit_code = exitcodes.USAGE

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

    exit_code = exitcodes.USAGE


class TruncatedInput(LoadError):
    """A compressed input file ends before its compressed stream does: cut off (still being
    written, or a copy that broke off). A run refuses it as incomplete (``InputIncomplete``,
    exit code 7); elsewhere it is a ``LoadError``. ``path``: the file."""

    def __init__(self, message: str, path: Path) -> None:
        self.path = path
        super().__init__(message)


class LockedError(DmImportError):
    """Another run of the same job is in progress."""

    exit_code = exitcodes.LOCKED


class LedgerError(DmImportError):
    """The ledger file cannot be used (corrupt, foreign, or from a different job)."""

    exit_code = exitcodes.USAGE


#: the errnos of a write that found no room: the disk, or the user's quota, is full
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class QuotaError(DmImportError):
    """The run's plan needs more requests than are left of ``send.daily_quota`` today; nothing
    was sent. The message gives the numbers and the ways out (``importer.quota``)."""

    exit_code = exitcodes.USAGE


class OpenApiError(DmImportError):
    """Read-back (``dmimport verify``): the Open API did not answer ``{"code": 0}`` (after the
    retries)."""

    exit_code = exitcodes.ABORTED


class OpenApiForbidden(OpenApiError):
    """HTTP 403 ``{"code": 40003}``: the access-key, the sign, or the caller's IP is refused."""


class DiskFullError(DmImportError):
    """No space left on the device holding ``path`` (the ledger, or a report file)."""

    exit_code = exitcodes.DISK_FULL

    def __init__(self, path: str | Path, message: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(message or f"no space left on device writing {path}")


class InputIncomplete(DmImportError):
    """An input file looks incomplete: not ready by ``input.ready``, its last record cut,
    fewer rows than ``input.min_rows``, or much smaller than the job's last input
    (``input.min_size_ratio``). Raised before anything is sent (``importer.ready``).
    ``problems``: one line per file, each naming the file, what was expected and what was
    found; ``summary``: the refused run's ``RunSummary`` (``summary.json``) when a run wrote
    one, else None."""

    exit_code = exitcodes.INPUT_INCOMPLETE

    def __init__(self, problems: list[str], summary: object = None) -> None:
        self.problems = list(problems)
        self.summary = summary
        super().__init__(self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            text = f"{self.problems[0]}; nothing was sent"
        else:
            body = "\n".join(f"  {p}" for p in self.problems)
            text = f"{len(self.problems)} input files look incomplete; nothing was sent:\n{body}"
        report = getattr(self.summary, "report_dir", None)
        return f"{text}\nreport: {Path(report) / 'summary.json'}" if report else text


class HeldError(DmImportError):
    """The blast-radius gate (``guard:``) held the run before a single request: it would
    change more than a threshold allows. ``plan`` is the plan file it wrote (what tripped,
    with the measured values); the message ends with the command that approves it."""

    exit_code = exitcodes.HELD

    def __init__(self, reason: str, plan: str | Path, command: str) -> None:
        self.reason = reason
        self.plan = Path(plan)
        super().__init__(
            f"{reason}\n  to send it anyway: {command}\n  (or the same command with --ignore-guard)"
        )

    def again(self, command: str) -> HeldError:
        """The same hold, naming ``command`` as the one that approves it."""
        return HeldError(self.reason, self.plan, command)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the process before its report could be written (before the
    sending started, or a second signal). ``signum`` says which; the exit code is 128 + it
    (``exitcodes.for_signal``).

    Here, not in ``pipeline``: the CLI's SIGTERM handler raises it, and a SIGTERM may come
    while ``pipeline`` is still being imported (importing it from there then failed, exit 5,
    or the ImportError was swallowed by an optional import and the run went on to exit 0)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def escaped(text: str) -> str:
    """``text`` printable and encodable: a lone surrogate becomes ``\\udfaa``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def rule_error(message: str, hint: str | None = None) -> PydanticCustomError:
    """A validator error that keeps its own message and hint through pydantic (the config
    reports errors of type ``dmimport`` with them as they are). A value quoted in them has its
    lone surrogates escaped: pydantic cannot render them (UnicodeEncodeError)."""
    hint = None if hint is None else escaped(hint)
    return PydanticCustomError("dmimport", "{message}", {"message": escaped(message), "hint": hint})
