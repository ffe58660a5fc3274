"""``summary.json``: what a run did, in one record (``RunSummary``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import write_json_atomic


@dataclass
class Sending:
    """How a run's rows went out: its requests, and why there were that many.

    ``requests`` counts HTTP requests (retries included); ``batch_requests`` those carrying
    more than one record, other than ``bisect_requests``: those made to find the bad rows of a
    batch the platform refused with a row error (the rest carried one record each);
    ``too_big_splits`` the batches halved because the platform found them too big (HTTP 413,
    or the connection closed while sending);
    ``batch_rows`` the largest batch the run could still send at its end (``send.batch_rows``,
    or less after such a split); ``late_resends`` the rows sent again once the run was over,
    because a timed-out request of their customer could have been applied after them
    (``send.settle_s``), and ``late_resend_failures`` those of them not delivered.
    """

    requests: int = 0
    batch_requests: int = 0
    bisect_requests: int = 0
    too_big_splits: int = 0
    batch_rows: int = 0
    late_resends: int = 0
    late_resend_failures: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "batch_requests": self.batch_requests,
            "bisect_requests": self.bisect_requests,
            "too_big_splits": self.too_big_splits,
            "batch_rows": self.batch_rows,
            "late_resends": self.late_resends,
            "late_resend_failures": self.late_resend_failures,
        }

    def describe(self) -> list[str]:
        """What the printed summary says beyond the number of requests (may be nothing)."""
        out = []
        if self.batch_requests:
            out.append(
                f"{_n(self.batch_requests, 'batch', 'batches')} of up to {self.batch_rows:,} rows"
            )
        singles = self.requests - self.batch_requests - self.bisect_requests
        if singles > 0 and (self.batch_requests or self.bisect_requests):
            # the lines add up to the requests: a customer's next row waits for another request
            out.append(f"{singles:,} with a single row")
        if self.bisect_requests:
            out.append(f"{self.bisect_requests:,} to find bad rows in batches")
        if self.too_big_splits:
            out.append(
                f"{_n(self.too_big_splits, 'batch', 'batches')} too big for the platform, "
                f"halved: send.batch_rows {self.batch_rows:,} would avoid that"
            )
        if self.late_resends:
            failed = (
                f", {self.late_resend_failures:,} of them failed"
                if self.late_resend_failures
                else ""
            )
            out.append(
                f"{_n(self.late_resends, 'row')} sent again after a timed-out request{failed}"
            )
        return out


def _n(count: int, one: str, many: str | None = None) -> str:
    """``count`` and the noun, singular or plural."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


@dataclass
class RunSummary:
    """What a run did. ``exit_code`` is ``importer.exitcodes.for_run``'s verdict on it
    (docs/exit-codes.md); ``to_dict`` is ``summary.json``."""

    run_id: str
    job: str
    kind: str
    mode: str  # send | debug | dry-run
    report_dir: Path | None
    started: str
    finished: str
    duration_s: float
    rows: int
    counts: dict[str, int]
    errcodes: dict[str, int]
    top_reasons: list[dict[str, Any]]
    requests: int
    aborted: str | None
    exit_code: int
    files: list[dict[str, Any]] = field(default_factory=list)
    config_sha256: str = ""
    results_path: Path | None = None
    rejects_paths: list[Path] = field(default_factory=list)
    #: ``rejects.reasons.csv``: each rejects row's line and reason (None: nothing rejected)
    reasons_path: Path | None = None
    reject_rate_exceeded: bool = False
    resumed_from: str | None = None
    #: directory or glob entries that were not read, and why: [{"path": ..., "reason": ...}]
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)
    #: the signal that stopped the run (``SIGINT``, ``SIGTERM``), if one did
    interrupted: str | None = None
    #: the daily quota's plan and whether the run ran out of it (``importer.quota``); None
    #: with ``send.daily_quota: 0``
    quota: dict[str, Any] | None = None
    #: how the rows went out (requests, batches, bisection, splits, late re-sends)
    sending: Sending = field(default_factory=Sending)
    #: why the run was refused before reading any row for sending (an incomplete input:
    #: ``importer.ready``, exit code 7; a hold of ``importer.guard``, exit code 8); None for
    #: a run that was not
    refused: str | None = None
    #: ``verify.sample``: what the read-back after the run found (``VerifySummary.to_dict``),
    #: or ``{"error": ..., "exit_code": ...}`` when it could not run; None: not verified
    verify: dict[str, Any] | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "run_id": self.run_id,
            "job": self.job,
            "kind": self.kind,
            "mode": self.mode,
            "started": self.started,
            "finished": self.finished,
            "duration_s": round(self.duration_s, 3),
            "rows": self.rows,
            "rows_per_s": round(self.rows_per_s, 1),
            "counts": self.counts,
            "errcodes": self.errcodes,
            "top_reasons": self.top_reasons,
            "requests": self.requests,
            "sending": self.sending.to_dict(),
            "aborted": self.aborted,
            "refused": self.refused,
            "interrupted": self.interrupted,
            "reject_rate_exceeded": self.reject_rate_exceeded,
            "resumed_from": self.resumed_from,
            "exit_code": self.exit_code,
            "config_sha256": self.config_sha256,
            "files": self.files,
            "skipped_inputs": self.skipped_inputs,
            "report_dir": str(self.report_dir) if self.report_dir else None,
            "results": str(self.results_path) if self.results_path else None,
            "rejects": [str(p) for p in self.rejects_paths],
            "rejects_reasons": str(self.reasons_path) if self.reasons_path else None,
            "quota": self.quota,
            "verify": self.verify,
        }

    def write(self, run_dir: Path) -> Path:
        """``summary.json`` in ``run_dir``, written atomically; its path."""
        path = run_dir / "summary.json"
        write_json_atomic(path, self.to_dict())
        return path
