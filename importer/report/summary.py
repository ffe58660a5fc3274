"""``summary.json``: what a run did, in one record (``RunSummary``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import write_json_atomic


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
    reject_rate_exceeded: bool = False
    resumed_from: str | None = None
    #: directory or glob entries that were not read, and why: [{"path": ..., "reason": ...}]
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)
    #: the signal that stopped the run (``SIGINT``, ``SIGTERM``), if one did
    interrupted: str | None = None
    #: the daily quota's plan and whether the run ran out of it (``importer.quota``); None
    #: with ``send.daily_quota: 0``
    quota: dict[str, Any] | None = None

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
            "aborted": self.aborted,
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
            "quota": self.quota,
        }

    def write(self, run_dir: Path) -> Path:
        """``summary.json`` in ``run_dir``, written atomically; its path."""
        path = run_dir / "summary.json"
        write_json_atomic(path, self.to_dict())
        return path
