"""The blast-radius gate: hold a run that would change too much (``guard:``), before a
single request, with a plan file that says why; ``--approve PLAN`` lets that very run go.

``Gate.judge`` takes what ``measure.GuardObserver`` measured in the pre-pass, checks
each threshold of ``guard:`` (``tripped``), and either lets the run go (storing the job's
new baseline) or writes ``plan.json`` into the run's report folder, marks the run ``held``
in the ledger and raises ``HeldError`` (exit code 8). A job's first run (the ledger knows
none of its rows) is never held. A plan approves a run with the same job, config hash,
input files (by SHA-256) and measured counts; any other is refused (``UsageError``, exit
code 2): the plan it was given is not the one this run would carry out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from threading import Event
from typing import Any

from ..config import Config, GuardOptions
from ..errors import DmImportError, HeldError, UsageError
from ..exitcodes import HELD, USAGE
from ..ledger import Baseline, Ledger, RunInfo
from ..outputs import RunStart
from ..report import write_json_atomic, write_metrics
from .measure import GuardObserver, Measured

log = logging.getLogger("importer.guard")

#: the plan file's name in the held run's report folder
PLAN_FILE = "plan.json"
_COUNTS = ("rows", "new", "changed", "unchanged", "deletes")
#: what the plan's numbers are worth (docs/guards.md, "What it measures")
_ESTIMATES = (
    "rows, new, changed, unchanged and deletes are counted exactly (the ledger's hashes of "
    "what was delivered); changed_properties are estimates: each value is compared by a "
    "16-bit fingerprint of the one the job last delivered, which misses a change with odds "
    "1 in 65,535"
)


@dataclass(frozen=True)
class RunFacts:
    """The run being judged: its job, id, config hash, input fingerprints, report folder
    and the command that would run it again (``dmimport run CONFIG FILES``)."""

    job: str
    run_id: str
    config_sha: str
    files: list[dict[str, Any]]
    run_dir: Path

    command: str


def default_command(config_path: Path | None, files: list[dict[str, Any]]) -> str:
    """``dmimport run CONFIG FILES``, quoted for a shell."""
    args = ["dmimport", "run", str(config_path or "CONFIG"), *(str(f["path"]) for f in files)]
    return shlex.join(args)


def tripped(guard: GuardOptions, m: Measured, kind: str = "user") -> list[dict[str, Any]]:
    """Each threshold ``m`` exceeds: its key, limit, measured value and a sentence (``kind``:
    the job's; an event the platform already has is kept as it was, whatever is re-sent)."""
    out: list[dict[str, Any]] = []

    def trip(key: str, limit: float, value: float, text: str) -> None:
        out.append({"threshold": f"guard.{key}", "limit": limit, "measured": value, "text": text})

    changed, new = m.share(m.changed), m.share(m.new)
    if guard.max_changed_share is not None and changed > guard.max_changed_share:
        trip(
            "max_changed_share",
            guard.max_changed_share,
            round(changed, 6),
            (
                f"{m.changed:,} of {m.rows:,} events ({changed:.1%}) were delivered before with "
                "other values (the same event_id; the platform keeps the first: re-sending "
                "does not change them)"
                if kind == "event"
                else f"{m.changed:,} of {m.rows:,} rows ({changed:.1%}) would change values "
                "the ledger last delivered"
            )
            + f"; guard.max_changed_share allows {guard.max_changed_share:.1%}",
        )
    if guard.max_new_share is not None and new > guard.max_new_share:
        trip(
            "max_new_share",
            guard.max_new_share,
            round(new, 6),
            f"{m.new:,} of {m.rows:,} rows ({new:.1%}) are new to the ledger; "
            f"guard.max_new_share allows {guard.max_new_share:.1%}",
        )
    if guard.max_deletes is not None and m.deletes > guard.max_deletes:
        trip(
            "max_deletes",
            guard.max_deletes,
            m.deletes,
            f"the run would delete {m.deletes:,} customers; guard.max_deletes allows "
            f"{guard.max_deletes:,}",
        )
    limit = guard.max_property_null_share_increase
    for prop, (before, now) in sorted(m.null_share.items()):
        if limit is None or before is None or now - before <= limit:
            continue
        trip(
            "max_property_null_share_increase",
            limit,
            round(now - before, 6),
            f"property '{prop}' has no value in {now:.1%} of rows (the previous run: "
            f"{before:.1%}); guard.max_property_null_share_increase allows +{limit:.1%}",
        )
    return out


class Gate:
    """``guard:`` for one run: ``approve`` (a plan file) or ``ignore`` let a held run go.

    ``watch`` gives the pre-pass its observer (when the gate is on: a threshold set, a
    ledger, not a retry), ``judge`` measures and decides once the pre-pass is over,
    ``keep_baseline`` stores the values of a run let through once it has sent them."""

    def __init__(self, config: Config, approve: str | Path | None, ignore: bool) -> None:
        self.guard = config.guard
        self.kind, self.event_name = config.job.kind, config.job.event_name
        self.approve = Path(approve) if approve is not None else None
        self.ignore = ignore
        self.observer: GuardObserver | None = None
        self.resumes: str | None = None  # the run this one resumes (``watch``)
        self.pending: Baseline | None = None  # the run's baseline, once let through

    def watch(
        self, ledger: Ledger | None, only: object | None, run: RunInfo | None = None
    ) -> GuardObserver | None:
        """The pre-pass's observer; None when the gate is off: no threshold set, no ledger
        (``state.enabled: false``, ``--dry-run``, ``--debug``), or a retry (``only``). A run
        that resumes another (``run``) is measured but never held: the run it resumes had
        the same config and files and was let through (a held run is never resumed)."""
        if self.guard.enabled and ledger is not None and only is None:
            self.observer = GuardObserver(self.kind, self.event_name)
        self.resumes = run.resumed_from if run is not None else None
        return self.observer

    def judge(
        self,
        ledger: Ledger | None,
        start: RunStart,
        config_path: Path | None,
        stop: Event,
        metrics_file: Path | None = None,
    ) -> None:
        """Measure what the observer saw and decide (``decide``); nothing when not watched
        or the pre-pass was stopped. A held run leaves ``summary.json`` (exit code 8,
        ``refused`` the reason) and updates ``metrics_file``, as every run does."""
        if self.observer is None or ledger is None or stop.is_set():
            return
        measured = self.observer.measure(ledger, start.job, start.run_id, self.guard.examples)
        command = default_command(config_path, start.files)
        facts = RunFacts(
            start.job, start.run_id, start.config_sha, start.files, start.run_dir, command
        )
        try:
            self.decide(ledger, measured, facts)
        except HeldError as held:
            _held_summary(self.kind, start, held, metrics_file)
            raise

    def decide(self, ledger: Ledger, m: Measured, run: RunFacts) -> None:
        """Let the run go (its baseline stored) or hold it (``HeldError``)."""
        trips = [] if m.first_run else tripped(self.guard, m, self.kind)
        if trips and self.resumes is not None:
            log.info("guard: not held: the run resumes run %s, which was let through", self.resumes)
            trips = []
        if self.approve is not None:
            try:
                self._check_approval(m, run)
            except UsageError:  # the run sent nothing: looked past by the next one's resume
                try:
                    ledger.end_run(run.run_id, status="refused", counts={}, exit_code=USAGE)
                finally:
                    ledger.close()
                with contextlib.suppress(OSError):
                    run.run_dir.rmdir()
                raise
        if trips and not self.ignore and self.approve is None:
            plan = run.run_dir / PLAN_FILE
            write_json_atomic(plan, self._plan(m, run, trips))
            try:
                ledger.end_run(run.run_id, status="held", counts={}, exit_code=HELD)
            finally:
                ledger.close()  # as a quota refusal does: the run is over
            again = f"{run.command} --approve {shlex.quote(str(plan))}"
            raise HeldError(_reason(m, trips, plan), plan, again)
        if trips:
            why = f"approved by {self.approve}" if self.approve else "--ignore-guard"
            log.warning("guard: %d threshold(s) tripped, sending anyway (%s)", len(trips), why)
        # stored once the run has sent its rows (``keep_baseline``): a run that then stops
        # early leaves the baseline of the last run that delivered, as the ledger's hashes are
        self.pending = m.baseline

    def keep_baseline(self, ledger: Ledger, job: str) -> None:
        """Store the baseline of the run let through (``decide``), once it ran to its end
        (not aborted, not interrupted: the caller says). A failure is a warning: the run is
        over and reported; the next one compares with the baseline before."""
        baseline, self.pending = self.pending, None
        if baseline is None:
            return
        try:
            ledger.baselines.save(job, baseline)
        except DmImportError as exc:
            log.warning("guard: the job's new baseline was not stored: %s", exc)

    def _plan(self, m: Measured, run: RunFacts, trips: list[dict[str, Any]]) -> dict[str, Any]:
        def where(at: list[tuple[int, int]]) -> list[str]:
            return [f"{Path(run.files[f]['path']).name} line {line}" for f, line in at]

        return {
            "dmimport_plan": 1,
            "job": run.job,
            "run_id": run.run_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config_sha256": run.config_sha,
            "files": [
                {"path": f.get("path"), "size": f.get("size"), "sha256": f.get("sha256")}
                for f in run.files
            ],
            "tripped": trips,
            "measured": m.to_dict(),
            "estimates": _ESTIMATES,
            "examples": {"changed": where(m.changed_at), "new": where(m.new_at)},
        }

    def _check_approval(self, m: Measured, run: RunFacts) -> None:
        assert self.approve is not None
        try:
            plan = json.loads(self.approve.read_text(encoding="utf-8"))
            planned = (plan["job"], plan["config_sha256"], [f["sha256"] for f in plan["files"]])
            counts = {k: plan["measured"][k] for k in _COUNTS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            what = f"no key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise UsageError(
                f"--approve {self.approve}: not a dmimport plan file ({what}); nothing was sent"
            ) from None
        why = None
        if planned[0] != run.job:
            why = f"it is job '{planned[0]}'s, not '{run.job}'s"
        elif planned[2] != [f.get("sha256") for f in run.files]:
            why = "its input files are not this run's (their names or contents differ)"
        elif planned[1] != run.config_sha:
            why = "the config changed since"
        elif counts != {k: v for k, v in m.to_dict().items() if k in _COUNTS}:
            why = "the ledger changed since (another run): the rows to send are not the same"
        if why is not None:
            raise UsageError(
                f"--approve {self.approve}: this plan is not this run's: {why}; nothing was "
                "sent. Run without --approve to see this run's plan"
            )


def _reason(m: Measured, trips: list[dict[str, Any]], plan: Path) -> str:
    """What the user sees: what tripped, the top changed properties, the plan file."""
    lines = ["held by the blast-radius gate (guard:): nothing was sent"]
    lines += [f"  {t['text']}" for t in trips]
    lines.append(
        f"  rows: {m.new:,} new, {m.changed:,} changed, {m.unchanged:,} unchanged"
        + (f", {m.deletes:,} deletes" if m.deletes else "")
    )
    top = list(m.changed_properties.items())[:5]
    if top:
        lines.append("  most changed: " + ", ".join(f"{k} {v:,}" for k, v in top))
    if m.emptied:
        lines.append("  now empty in every row: " + ", ".join(m.emptied))
    lines.append(f"  plan: {plan}")
    return "\n".join(lines)


def _held_summary(kind: str, start: RunStart, held: HeldError, metrics_file: Path | None) -> None:
    """The held run's ``summary.json`` and metrics: exit code 8, nothing sent, ``refused``
    the reason and the plan file. A failure to write them is a warning: the hold stands."""
    summary = start.unsent_summary(kind, HELD, held.reason)
    try:
        summary.write(start.run_dir)
        if metrics_file is not None:
            write_metrics(metrics_file, summary)
    except (DmImportError, OSError) as err:
        log.warning("the held run's summary.json or metrics were not written: %s", err)
