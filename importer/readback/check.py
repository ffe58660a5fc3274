"""``verify_run``: read a sample of a run's rows back through the Open API (docs/verify.md).

1. the sample (``sample.pick``) and what was sent for it (``sample.sent_values``);
2. the daily quota: the look-ups (one per row, plus one for the fields) must fit in what is
   left of ``send.daily_quota`` today for the job's account, and each is counted in the
   job's ledger as it is made (the same count as the imports' requests);
3. ``contactFieldDetails``: the searchable fields (``searchType``) that are primary keys of
   the job (matched by ``fieldName`` or ``sn``), and each property's display name;
4. one ``contactPageList`` per row, searching by the first of those keys the row has;
5. ``compare.compare_contact`` per row; ``verify.csv`` in the run's report folder; the
   ``VerifySummary`` (``exit_code`` 9 below ``min_match``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import exitcodes
from ..atomic import finish_atomic, private_opener, temp_path
from ..config import Config
from ..errors import (
    ConfigError,
    ConfigProblem,
    DiskFullError,
    DmImportError,
    QuotaError,
    UsageError,
)
from ..ledger import Ledger, account_of, ledger_path, quota_day, utc_now
from ..report import RunSummary
from ..report.files import writing
from ..report.masking import PiiMask
from ..report.results import protect
from .compare import MASKED, MATCHED, MISMATCHED, NOT_FOUND, compare_contact
from .sample import SampleRow, pick, run_folder, sent_values

if TYPE_CHECKING:  # ``importer.openapi`` loads ``requests``: only when a verify runs
    from ..openapi import FieldInfo, OpenApiClient

__all__ = ["VERIFY_COLUMNS", "VerifySummary", "verify_after_run", "verify_ready", "verify_run"]

log = logging.getLogger("importer.verify")

VERIFY_COLUMNS = (
    "file",
    "line",
    "identity",
    "status",
    "search_field",
    "customer_id",
    "detail",
)


@dataclass
class VerifySummary:
    """What a verify found. ``share`` = (matched + masked) / checked; ``exit_code`` 9 below
    ``min_match`` (docs/verify.md)."""

    run_id: str
    job: str
    sample: int
    checked: int
    counts: dict[str, int]
    min_match: float
    requests: int
    search_fields: list[str] = field(default_factory=list)
    path: Path | None = None
    #: the run's last ``ok`` rows, one per customer, the sample was drawn from
    candidates: int = 0

    @property
    def matched(self) -> int:
        return self.counts.get(MATCHED, 0)

    @property
    def masked(self) -> int:
        return self.counts.get(MASKED, 0)

    @property
    def mismatched(self) -> int:
        return self.counts.get(MISMATCHED, 0)

    @property
    def not_found(self) -> int:
        return self.counts.get(NOT_FOUND, 0)

    @property
    def share(self) -> float:
        """The share of the checked rows found as sent (masked fields allowed)."""
        return (self.matched + self.masked) / self.checked if self.checked else 1.0

    @property
    def passed(self) -> bool:
        return self.share >= self.min_match

    @property
    def exit_code(self) -> int:
        return exitcodes.OK if self.passed else exitcodes.VERIFY_BELOW

    def lines(self) -> list[str]:
        """The summary as ``dmimport verify`` prints it."""
        if not self.checked:
            return [f"verify {self.run_id}: no row of the run was reported ok: nothing to verify"]
        out = [
            f"verify {self.run_id} ({self.job}): {self.checked:,} of {self.candidates:,} "
            f"delivered customers looked up by {', '.join(self.search_fields)} "
            f"({self.requests:,} requests)",
            f"  matched {self.matched:,}, mismatched {self.mismatched:,}, not found "
            f"{self.not_found:,}, masked {self.masked:,}",
            f"  found as sent: {self.share:.1%} (min {self.min_match:.1%})"
            + ("" if self.passed else " -- BELOW the minimum"),
        ]
        if self.path is not None:
            out.append(f"  details: {self.path}")
        if not self.passed and self.not_found:
            out.append(
                f"  {self.not_found:,} row(s) the run reported ok are not on the platform: "
                "the platform answered ok without storing them; send them again with "
                "`dmimport run CONFIG FILE --full`"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "sample": self.sample,
            "checked": self.checked,
            "candidates": self.candidates,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "not_found": self.not_found,
            "masked": self.masked,
            "share": round(self.share, 6),
            "min_match": self.min_match,
            "requests": self.requests,
            "search_fields": self.search_fields,
            "verify_csv": str(self.path) if self.path else None,
            "exit_code": self.exit_code,
        }


class _Quota:
    """Counts the Open API's requests against the job account's daily quota (its ledger)."""

    def __init__(self, config: Config, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.clock = clock
        self.ledger: Ledger | None = None
        self.account: str | None = None
        self.used = 0
        self.limit: int | None = None
        secret = os.environ.get(config.target.secret_env, "").strip()
        if secret:
            self.account = account_of(config.target.base_url, secret)
        else:
            log.warning(
                "$%s is not set: the Open API's requests are not counted against the "
                "account's daily quota in the ledger",
                config.target.secret_env,
            )
        if config.state.enabled and self.account is not None:
            self.ledger = Ledger(ledger_path(config))

    def check(self, planned: int) -> None:
        quota = self.config.send.daily_quota
        if not quota:
            return
        tz = self.config.send.quota_timezone
        used = 0
        if self.ledger is not None and self.account is not None:
            day = quota_day(tz, self.clock())
            used = sum(self.ledger.requests(day, account=self.account).values())
        left = max(0, quota - used)
        self.limit = left
        if planned > left:
            raise QuotaError(
                f"verify needs {planned} requests ({planned - 1} look-ups and the field list) "
                f"but {left} of send.daily_quota {quota} are left today ({tz}); nothing was "
                "sent: verify a smaller --sample, or after the quota resets"
            )

    def __call__(self) -> None:
        if self.limit is not None and self.used >= self.limit:
            raise QuotaError("the daily quota ran out during verify (send.daily_quota)")
        self.used += 1
        if self.ledger is not None and self.account is not None:
            day = quota_day(self.config.send.quota_timezone, self.clock())
            self.ledger.add_requests(self.account, day, self.config.job_name, 1)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def _search_fields(config: Config, fields: list[FieldInfo]) -> list[tuple[str, str]]:
    """``(primary key, sn)`` of the job's primary keys that are searchable fields, in the
    job's order; ``UsageError`` when none is."""
    found = []
    for key in config.job.primary_keys:
        hit = next((f for f in fields if f.searchable and key in (f.field_name, f.sn)), None)
        if hit is not None:
            found.append((key, hit.sn))
    if not found:
        searchable = [f.field_name for f in fields if f.searchable] or ["none"]
        raise UsageError(
            f"no primary key of the job ({', '.join(config.job.primary_keys)}) is a searchable "
            f"field of the Open API (contactFieldDetails searchType; searchable: "
            f"{', '.join(searchable)}): the customers cannot be looked up"
        )
    return found


def _cell(value: Any) -> str:
    return protect("" if value is None else str(value))


def _write_csv(path: Path, rows: list[tuple[Any, ...]], encoding: str) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(VERIFY_COLUMNS)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    tmp = temp_path(path)
    try:
        with writing(path):
            with open(tmp, "wb", opener=private_opener) as fh:
                fh.write(buf.getvalue().encode(encoding))
            finish_atomic(tmp, path)
    except DiskFullError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def verify_run(
    config: Config,
    report_root: Path,
    run_id: str,
    *,
    sample: int,
    min_match: float,
    client: OpenApiClient | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> VerifySummary:
    """Verify ``sample`` rows of run ``run_id`` (its report folder under ``report_root``)."""
    if config.job.kind != "user":
        raise UsageError(
            f"verify looks customers up, and this job's rows are {config.job.kind} rows: only "
            "a job of kind user can be verified (events and deletes cannot be read back "
            "through contactPageList)"
        )
    folder = run_folder(report_root, config.job_name, run_id)
    rows, candidates = pick(folder, sample, config.report.encoding)
    summary = VerifySummary(run_id, config.job_name, sample, 0, {}, min_match, 0)
    summary.candidates = candidates
    if not rows:
        return summary
    from ..openapi import OpenApiClient

    sent = sent_values(config, folder, rows)
    quota = _Quota(config, clock)
    try:
        quota.check(len(rows) + 1)
        own = client is None
        api = client if client is not None else OpenApiClient.from_env(config, on_request=quota)
        if client is not None and client.on_request is None:
            client.on_request = quota
        try:
            summary = _look_up(config, api, folder.path, rows, sent, summary)
        finally:
            if own:
                api.close()
    finally:
        quota.close()
    return summary


def _look_up(
    config: Config,
    api: OpenApiClient,
    folder: Path,
    rows: list[SampleRow],
    sent: dict[tuple[str, int], dict[str, Any]],
    summary: VerifySummary,
) -> VerifySummary:
    start = api.requests
    fields = api.fields()
    keys = _search_fields(config, fields)
    names = {f.field_name: f.name for f in fields if f.name}
    mask = None
    if config.report.mask_pii:
        mask = PiiMask(config.job.primary_keys, config.job.primary_keys)
    counts: Counter[str] = Counter()
    out: list[tuple[Any, ...]] = []
    for row in rows:
        values = sent.get((row.file, row.line))
        if values is None:
            log.warning("%s line %d: no longer maps to a row: not verified", row.file, row.line)
            continue
        key = next(((k, sn) for k, sn in keys if values.get(k) not in (None, "")), None)
        if key is None:
            status, cid, notes, used = NOT_FOUND, None, ["no searchable primary key value"], ""
        else:
            contacts = api.search(key[1], str(values[key[0]]))
            status, cid, notes = compare_contact(values, contacts, names, show_values=mask is None)
            used = key[0]
        counts[status] += 1
        identity = mask.identity(row.identity)[0] if mask is not None else row.identity
        out.append((row.file, row.line, identity, status, used, cid, "; ".join(notes)))
    summary.checked = sum(counts.values())
    summary.counts = {s: counts.get(s, 0) for s in (MATCHED, MISMATCHED, NOT_FOUND, MASKED)}
    summary.requests = api.requests - start
    summary.search_fields = [k for k, _ in keys]
    summary.path = _write_csv(folder / "verify.csv", out, config.report.encoding)
    return summary


def verify_ready(config: Config) -> None:
    """Before a run with ``verify.sample`` sends anything: ``ConfigError`` when the job cannot
    be verified (not of kind user) or the Open API's keys are not in the environment."""
    if config.job.kind != "user":
        raise ConfigError(
            [
                ConfigProblem(
                    "verify.sample",
                    f"only a job of kind user can be verified, this one is {config.job.kind}",
                    "remove verify.sample (events and deletes cannot be read back)",
                )
            ]
        )
    from ..openapi import OpenApiClient

    OpenApiClient.from_env(config).close()


def verify_after_run(config: Config, summary: RunSummary, report_root: Path) -> None:
    """``verify.sample``: verify the run that made ``summary`` and record what was found in
    it (``summary.verify``, its ``summary.json``). A run that exited 0 takes the verify's
    exit code (9 below ``verify.min_match``; an error's own, e.g. 3 for HTTP 403); a run
    that already failed keeps its code. A dry or debug run is not verified, nor one that
    stopped early (aborted, interrupted: ``summary.verify`` says ``skipped``)."""
    if summary.mode != "send" or summary.report_dir is None:
        return
    if summary.aborted or summary.interrupted:
        # it stopped early and keeps its exit code (3, 130, 143): the look-ups would change
        # nothing but spend the daily quota (maybe what stopped it); its resume verifies
        summary.verify = {
            "skipped": "not verified: the run stopped early; the run that resumes it verifies"
        }
        summary.write(summary.report_dir)
        return
    opts = config.verify
    try:
        found = verify_run(
            config, report_root, summary.run_id, sample=opts.sample, min_match=opts.min_match
        )
    except DmImportError as exc:
        log.error("verify after the run could not be done: %s", exc)
        code = exitcodes.for_exception(exc)
        summary.verify = {"error": str(exc), "exit_code": code}
    else:
        summary.verify = found.to_dict()
        code = found.exit_code
    if summary.exit_code == exitcodes.OK and code != exitcodes.OK:
        summary.exit_code = code
        summary.verify["run_exit_code"] = exitcodes.OK
    summary.write(summary.report_dir)
