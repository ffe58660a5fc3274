"""importer.exitcodes: every exit code and the one policy that picks a run's (issue 12)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from importer import exitcodes
from importer.errors import (
    ConfigError,
    DiskFullError,
    DmImportError,
    Interrupted,
    LedgerError,
    LoadError,
    LockedError,
    NothingToRetry,
    UsageError,
)

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_exits_1_only_for_rows_that_did_not_get_through() -> None:
    ok = {"ok": 10, "rejected": 0, "failed": 0, "not_sent": 0}
    assert exitcodes.for_run(ok, 10) == 0
    assert exitcodes.for_run({**ok, "failed": 1}, 11) == 1
    assert exitcodes.for_run({**ok, "not_sent": 1}, 11) == 1
    assert exitcodes.for_run({**ok, "rejected": 1}, 11) == 1
    # tolerated rejects, and rejects over the tolerated share
    assert exitcodes.for_run({**ok, "rejected": 1}, 11, max_reject_rate=0.1) == 0
    assert exitcodes.for_run({**ok, "rejected": 2}, 12, max_reject_rate=0.1) == 1
    assert exitcodes.for_run({**ok, "failed": 1}, 11, max_reject_rate=1.0) == 1
    # what outranks rows
    assert exitcodes.for_run({**ok, "failed": 1}, 11, aborted=True) == 3
    assert exitcodes.for_run({**ok, "failed": 1}, 11, signum=signal.SIGTERM) == 143
    assert exitcodes.for_run(ok, 10, signum=signal.SIGINT, disk_full=True) == 6


def test_an_error_exits_with_its_own_code_never_1() -> None:
    assert exitcodes.for_exception(NothingToRetry("nothing to retry: x")) == 0
    for exc in (
        UsageError("x"),
        ConfigError("x"),
        LoadError("x"),
        LedgerError("x"),
        DmImportError("x"),
    ):
        assert exitcodes.for_exception(exc) == 2, exc
    assert exitcodes.for_exception(LockedError("x")) == 4
    assert exitcodes.for_exception(DiskFullError("/x")) == 6
    assert exitcodes.for_exception(Interrupted(signal.SIGTERM)) == 143
    assert exitcodes.for_exception(KeyboardInterrupt()) == 130
    assert exitcodes.for_exception(RuntimeError("a bug")) == 5


def test_no_exit_code_is_written_as_a_number_outside_exitcodes() -> None:
    literal = re.compile(
        r"exit_code\s*=\s*\d|EXIT_[A-Z_]+\s*=|return [1-9]\d*\s*$|sys\.exit\(\d", re.M
    )
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in sorted((ROOT / "importer").rglob("*.py"))
        if path.name != "exitcodes.py" and "sandbox" not in path.parts
        for m in literal.finditer(path.read_text(encoding="utf-8"))
    ]
    assert found == []
