"""Every exit code of ``dmimport``, and the one policy that turns a run's outcome into one.

docs/exit-codes.md says what each means and what cron or systemd should do about it:

==== ================================================================================
0    every row ok (or skipped/unchanged, or rejected within ``--max-reject-rate``);
     also a ``retry`` that finds nothing to retry
1    rows were rejected, failed or not sent -- and nothing else exits 1 (``--within-quota``
     leaving rows ``not_sent`` is this)
2    usage or config error, unreadable input, no ledger yet, a plan that does not fit in the
     daily quota: nothing was sent
3    the run was aborted by a fatal response (10003, 20000, repeated 20004, TLS ...), an
     outage, or the daily quota running out without ``--within-quota``
4    another run of the same job holds its lock
5    internal error (a bug)
6    no space left on the disk of the ledger or the report: run again to resume
7    the input is incomplete (``input.ready``, a cut last record, ``input.min_rows``,
     ``input.min_size_ratio``): refused before anything was sent
8    held by the blast-radius gate (``guard:``): the run would change too much; a plan file
     says what tripped; nothing was sent (``--approve PLAN`` or ``--ignore-guard``)
9    ``verify``: the share of sampled rows found as sent is below ``--min-match``
130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM: 128 + the signal number; run again
==== ================================================================================

A bottom module: it imports nothing of the package. Exceptions carry their code as an
``exit_code`` attribute set from these constants (``importer.errors``); ``for_exception``
reads it.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping

OK = 0
#: rows were rejected (beyond ``--max-reject-rate``), failed or not sent
ROWS_FAILED = 1
#: the command could not start: bad usage or config, unreadable input, no ledger yet
USAGE = 2
#: a fatal response stopped the run
ABORTED = 3
#: another run of the same job is in progress
LOCKED = 4
#: a bug
INTERNAL = 5
#: no space left on the device of the ledger or the report
DISK_FULL = 6
#: the input is incomplete (input.ready, a cut record, min_rows, min_size_ratio): nothing sent
INPUT_INCOMPLETE = 7
#: the blast-radius gate (``guard:``) held the run before a single request (``importer.guard``)
HELD = 8
#: ``dmimport verify`` (or ``run`` with ``verify.sample``): the matched share of the sample
#: is below ``--min-match`` (``verify.min_match``)
VERIFY_BELOW = 9
#: a run stopped by signal N exits 128 + N (the shell's convention): 130 for SIGINT, 143 for
#: SIGTERM (``for_signal``)
SIGNAL_BASE = 128
#: the signals that stop a run cleanly (``importer.interrupts.signal_handlers``; a
#: ``--workers`` child ignores them and waits for its parent's word)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: the statuses that make a run exit ROWS_FAILED whatever ``--max-reject-rate`` says
_UNDELIVERED = ("failed", "not_sent")


def for_signal(signum: int) -> int:
    """The exit code of a process stopped by signal ``signum``."""
    return SIGNAL_BASE + int(signum)


def for_exception(exc: BaseException) -> int:
    """The exit code of a command that ended with ``exc``: a signal's (``KeyboardInterrupt``,
    ``Interrupted``), the library error's own ``exit_code``, else INTERNAL (a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return for_signal(getattr(exc, "signum", signal.SIGINT))
    code = getattr(exc, "exit_code", None)
    return code if isinstance(code, int) else INTERNAL


def reject_rate_exceeded(
    counts: Mapping[str, int], rows: int, max_reject_rate: float | None
) -> bool:
    """Whether the rejected rows are more than ``max_reject_rate`` of all rows."""
    return (
        max_reject_rate is not None
        and rows > 0
        and counts.get("rejected", 0) / rows > max_reject_rate
    )


def for_run(
    counts: Mapping[str, int],
    rows: int,
    *,
    max_reject_rate: float | None = None,
    aborted: bool = False,
    signum: int | None = None,
    disk_full: bool = False,
) -> int:
    """The exit code of a run that wrote its report, from its outcome: a full disk first,
    then a signal, an abort, rows not delivered (failed, not_sent, or rejected beyond
    ``max_reject_rate``; any rejected row when it is None), else OK."""
    if disk_full:
        return DISK_FULL
    if signum is not None:
        return for_signal(signum)
    if aborted:
        return ABORTED
    if any(counts.get(s, 0) for s in _UNDELIVERED):
        return ROWS_FAILED
    if counts.get("rejected", 0) and (
        max_reject_rate is None or reject_rate_exceeded(counts, rows, max_reject_rate)
    ):
        return ROWS_FAILED
    return OK
