"""What a notification says: a run's summary in a few lines (``Message``).

Built from the run's ``RunSummary`` (``from_summary``) or, for a run that stopped with an
error before its report (a guard's hold, an incomplete input, a bad file), from that error
(``from_error``). Every text a row or the platform could have put in it (reasons, an abort's
cause, the error) is masked as ``report.mask_pii`` masks a report (phones, e-mails), and every
line is redacted (the SECRET, the webhooks' URLs and secrets: ``importer.secrets``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import exitcodes
from ..report import RunSummary
from ..report.masking import mask_pii_text
from ..secrets import redact

#: what each exit code means, in a word or three (docs/exit-codes.md)
MEANINGS = {
    exitcodes.OK: "ok",
    exitcodes.ROWS_FAILED: "rows rejected, failed or not sent",
    exitcodes.USAGE: "not started: usage, config or input error",
    exitcodes.ABORTED: "aborted",
    exitcodes.LOCKED: "another run of the job holds its lock",
    exitcodes.INTERNAL: "internal error",
    exitcodes.DISK_FULL: "no space left on the disk",
    exitcodes.INPUT_INCOMPLETE: "input incomplete, nothing sent",
    exitcodes.HELD: "held by a guard, nothing sent",
    exitcodes.VERIFY_BELOW: "too few sampled rows found as sent",
}
#: the exit codes of a run stopped before sending by a gate (``on: held``)
GATE_CODES = (exitcodes.INPUT_INCOMPLETE, exitcodes.HELD)
#: what a message says of ``verify.sample``'s read-back (no search field, no file path)
_VERIFY_KEYS = ("checked", "matched", "mismatched", "not_found", "masked", "share", "min_match")
#: the longest line of an error a message quotes
MAX_ERROR_CHARS = 600
#: the most lines of an error a message holds
MAX_ERROR_LINES = 20
#: the reasons a message lists, at most
TOP_REASONS = 3


def verdict(exit_code: int) -> str:
    """The message's headline word for ``exit_code``."""
    if exit_code == exitcodes.OK:
        return "OK"
    if exit_code == exitcodes.HELD:
        return "HELD"
    if exit_code == exitcodes.INPUT_INCOMPLETE:
        return "INPUT INCOMPLETE"
    return "FAILED"


def meaning(exit_code: int) -> str:
    """What ``exit_code`` means (a signal's: ``stopped by SIGTERM``)."""
    if exit_code in MEANINGS:
        return MEANINGS[exit_code]
    if exit_code > exitcodes.SIGNAL_BASE:
        import signal

        try:
            return f"stopped by {signal.Signals(exit_code - exitcodes.SIGNAL_BASE).name}"
        except ValueError:
            pass
    return f"exit code {exit_code}"


@dataclass
class Message:
    """One notification: a title, a few lines, and the same facts as data (the generic
    webhook's JSON). Nothing in it is a secret or an unmasked key value."""

    job: str
    exit_code: int
    title: str
    lines: list[str]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The title and the lines, one a line (WeCom and Feishu text, the webhook's
        ``text``)."""
        return "\n".join([self.title, *self.lines])


def _host() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "?"


def _masked(text: str) -> str:
    return redact(mask_pii_text(text))


def from_summary(summary: RunSummary) -> Message:
    """The message of a run that wrote its report."""
    code = summary.exit_code
    title = f"dmimport {summary.job}: {verdict(code)} (exit {code}: {meaning(code)})"
    lines = [
        f"run {summary.run_id} on {_host()} ({summary.mode}): {summary.rows:,} rows in "
        f"{summary.duration_s:.1f} s"
    ]
    counted = [f"{status} {n:,}" for status, n in summary.counts.items() if n]
    if counted:
        lines.append("rows: " + ", ".join(counted))
    reasons = [
        {"rows": int(r.get("rows", 0)), "reason": _masked(str(r.get("reason", "")))}
        for r in summary.top_reasons[:TOP_REASONS]
    ]
    if reasons:
        lines.append("top reasons: " + "; ".join(f"{r['rows']:,} × {r['reason']}" for r in reasons))
    quota = summary.quota or {}
    checked = summary.verify or {}
    # the read-back's look-ups come out of the same daily quota, after the run's own requests
    looked = int(checked.get("requests") or 0)
    spent = f"requests {summary.requests:,}" + (
        f" (+{looked:,} read-back look-ups)" if looked else ""
    )
    left = None
    if quota.get("daily_quota"):
        left = max(0, int(quota.get("left", 0)) - summary.requests - looked)
        lines.append(
            f"{spent}; quota left {left:,} of {quota['daily_quota']:,} "
            f"({quota.get('day', '')}, {quota.get('timezone', '')})"
        )
    else:
        lines.append(spent)
    if checked.get("checked"):
        share, wanted = float(checked.get("share", 0)), float(checked.get("min_match", 0))
        lines.append(
            f"verify: {checked['checked']:,} looked up: matched {checked.get('matched', 0):,}, "
            f"mismatched {checked.get('mismatched', 0):,}, not found "
            f"{checked.get('not_found', 0):,}, masked {checked.get('masked', 0):,} "
            f"({share:.1%}, min {wanted:.1%})"
        )
    aborted = _masked(summary.aborted) if summary.aborted else None
    if aborted:
        lines.append(f"aborted: {aborted}")
    if summary.interrupted:
        lines.append(f"interrupted by {summary.interrupted}")
    report = str(Path(summary.report_dir).resolve()) if summary.report_dir else None
    if report:
        lines.append(f"report {report}")
    data = {
        "job": summary.job,
        "run_id": summary.run_id,
        "host": _host(),
        "mode": summary.mode,
        "verdict": verdict(code),
        "exit_code": code,
        "rows": summary.rows,
        "counts": {k: v for k, v in summary.counts.items() if v},
        "top_reasons": reasons,
        "requests": summary.requests,
        "quota_left": left,
        "daily_quota": quota.get("daily_quota"),
        "aborted": aborted,
        "interrupted": summary.interrupted,
        "report_dir": report,
        "verify": {k: checked.get(k) for k in _VERIFY_KEYS} if checked else None,
        "error": None,
    }
    return Message(summary.job, code, redact(title), [redact(line) for line in lines], data)


def from_error(job: str, exc: BaseException, exit_code: int) -> Message:
    """The message of a run that stopped with ``exc`` (no report, or no summary of it)."""
    said = _masked(str(exc) or type(exc).__name__)
    # cut line by line: a held run's last lines are the command that approves it, whole
    told = [line.rstrip() for line in said.splitlines() if line.strip()]
    if len(told) > MAX_ERROR_LINES:
        told = [*told[:MAX_ERROR_LINES], "..."]
    said = "\n".join(
        line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS] + " ..." for line in told
    )
    title = f"dmimport {job}: {verdict(exit_code)} (exit {exit_code}: {meaning(exit_code)})"
    lines = [f"on {_host()}:", *(line.strip() for line in said.splitlines())]
    # a refusal that wrote its run's summary.json (an incomplete input, a guard's hold)
    summary = getattr(exc, "summary", None)
    run_id = getattr(summary, "run_id", None)
    report = getattr(summary, "report_dir", None)
    report = str(Path(report).resolve()) if report else None
    if report:
        lines.append(f"report {report}")
    # a guard's hold: the plan file that approves the run (``--approve PLAN``)
    plan = getattr(exc, "plan", None)
    plan = str(Path(plan).resolve()) if isinstance(plan, str | Path) else None
    if plan:
        lines.append(f"plan {plan}")
        # the held run's folder (``<job>-<run id>``) holds its summary.json beside the plan
        folder = Path(plan).parent
        if report is None and folder.name.startswith(f"{job}-"):
            report, run_id = str(folder), folder.name[len(job) + 1 :]
    data = {
        "job": job,
        "run_id": run_id,
        "host": _host(),
        "verdict": verdict(exit_code),
        "exit_code": exit_code,
        "error": said,
        "report_dir": report,
        "plan": plan,
    }
    return Message(job, exit_code, redact(title), [redact(line) for line in lines], data)
