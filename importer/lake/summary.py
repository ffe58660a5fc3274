"""``PlanSummary`` (``OUT/plan.json``) and ``CommitSummary``: what a plan found and what a
commit merged (issue 15).

The quota arithmetic is the run's own (``importer.quota``): a change set of ``to_send`` rows
needs ``ceil(rows / per_request)`` requests per group of rows that share a request (the event
name for events; every row alone for deletes and the ``signed`` profile), plus the run's
margin for retries and bisection; what is left today comes from the job's ledger, when it
exists (the ledger is never created by a plan).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..atomic import finish_atomic, temp_path
from ..config import Config

__all__ = ["PLAN_FILE", "CommitSummary", "PlanSummary", "plan_summary", "quota_left_today"]

#: the plan summary's file in a plan's output folder
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class PlanSummary:
    """What a lake-side plan found (``OUT/plan.json``).

    ``rows`` = ``valid`` + ``rejected``; ``valid`` = ``unchanged`` + ``to_send``;
    ``identities_to_send``: the distinct identities among them. ``requests_needed``: the
    requests ``dmimport run`` on the change set needs at ``batch_rows`` (``send.batch_rows``;
    ``per_request`` records per request at most: 1 for deletes and the ``signed`` profile);
    ``margin``: the run's margin for retries and bisection on top; ``quota_left_today``: what
    is left of ``quota_daily`` today by the job's ledger (``quota_daily`` when it has none;
    0 with ``send.daily_quota: 0``, no quota); ``fits``: ``requests_needed + margin`` fits in
    it (the check ``dmimport run`` makes before it sends; always true without a quota).
    ``state_version``: the state version the plan compared with (None: no state)."""

    job: str
    kind: str
    rows: int
    valid: int
    rejected: int
    unchanged: int
    to_send: int
    identities_to_send: int
    batch_rows: int
    requests_needed: int
    quota_daily: int
    quota_left_today: int
    fits: bool
    state_version: str | None
    per_request: int = 0
    margin: int = 0
    #: the rows to send per group of rows sharing requests (event name; "" otherwise)
    groups: dict[str, int] = field(default_factory=dict)
    #: where the plan wrote its outputs (None before it is written)
    out: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes | os.PathLike[str]) -> PlanSummary:
        """From ``to_json``'s text, or the path of a ``plan.json`` (or of its folder)."""
        if isinstance(text, os.PathLike):
            path = Path(text)
            if path.is_dir():
                path = path / PLAN_FILE
            text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, out: str | os.PathLike[str]) -> Path:
        """Write ``OUT/plan.json`` atomically; returns its path."""
        path = Path(out) / PLAN_FILE
        tmp = temp_path(path)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
        finish_atomic(tmp, path)
        return path

    def __str__(self) -> str:
        state = f"state {self.state_version}" if self.state_version else "no state (all new)"
        if self.quota_daily:
            verdict = "fits" if self.fits else "does NOT fit"
            quota = (
                f"{self.requests_needed:,} request(s) (up to {self.per_request:,} rows each) "
                f"+ {self.margin:,} margin = {self.requests_needed + self.margin:,}; "
                f"{self.quota_left_today:,} of {self.quota_daily:,} left today: {verdict}"
            )
        else:
            quota = f"{self.requests_needed:,} request(s); no daily quota"
        return "\n".join(
            [
                f"plan of job {self.job} ({self.kind}): {self.rows:,} rows, {self.valid:,} "
                f"valid, {self.rejected:,} rejected",
                f"compared with {state}: {self.unchanged:,} unchanged, {self.to_send:,} to "
                f"send ({self.identities_to_send:,} identities)",
                f"quota: {quota}",
            ]
        )


@dataclass(frozen=True)
class CommitSummary:
    """What a commit merged into the state table: ``delivered`` identities (the ok rows of
    the run), ``state_rows`` in the new version, ``version`` (its folder name) and
    ``previous`` (the version it replaced; None for the first)."""

    delivered: int
    state_rows: int
    version: str
    previous: str | None

    def __str__(self) -> str:
        was = f" (was {self.previous})" if self.previous else ""
        return (
            f"commit: {self.delivered:,} delivered identities merged; state {self.version}"
            f"{was} holds {self.state_rows:,} identities"
        )


def quota_left_today(config: Config) -> int:
    """What is left of ``send.daily_quota`` today by the job's ledger (the account's
    requests when ``$<target.secret_env>`` holds the SECRET, else the job's own): the whole
    quota when the job has no ledger yet (it is not created here) or ``state.enabled`` is
    false; 0 with ``send.daily_quota: 0`` (no quota)."""
    from ..ledger import Ledger, ledger_path
    from ..quota import requests_today

    daily = config.send.daily_quota
    if not daily:
        return 0
    if not config.state.enabled:
        return daily
    path = ledger_path(config)
    if not path.is_file():
        return daily
    store = Ledger(path)
    try:
        secret = os.environ.get(config.target.secret_env, "").strip() or None
        today = requests_today(store, config, secret=secret)
    finally:
        store.close()
    if today.left is not None:
        return today.left
    return max(0, daily - today.job_requests)


def plan_summary(
    config: Config,
    *,
    rows: int,
    valid: int,
    unchanged: int,
    groups: Mapping[str, int],
    identities_to_send: int,
    state_version: str | None,
    out: str | os.PathLike[str] | None = None,
    quota_left: int | None = None,
) -> PlanSummary:
    """The ``PlanSummary`` of a plan of ``config`` from its counts: ``groups`` = the rows to
    send per group of rows sharing requests (the event name for events, "" otherwise; an
    engine counts them with a group-by on ``dm_event`` for events whose name comes from a
    column). ``quota_left``: what is left today (default: ``quota_left_today(config)``)."""
    from ..quota import margin, per_request, requests_for
    from ..quota.plan import largest

    kinds = {str(k or ""): int(v) for k, v in groups.items() if int(v) > 0}
    if config.job.kind != "event" or config.job.event_name:
        kinds = {
            (config.job.event_name or "") if config.job.kind == "event" else "": sum(kinds.values())
        }
        kinds = {k: v for k, v in kinds.items() if v > 0}
    size = per_request(config)
    requests = requests_for(kinds, size)
    extra = margin(requests, largest(kinds, size))
    daily = config.send.daily_quota
    left = quota_left_today(config) if quota_left is None else quota_left
    to_send = sum(kinds.values())
    return PlanSummary(
        job=config.job_name,
        kind=config.job.kind,
        rows=rows,
        valid=valid,
        rejected=rows - valid,
        unchanged=unchanged,
        to_send=to_send,
        identities_to_send=identities_to_send,
        batch_rows=config.send.batch_rows,
        requests_needed=requests,
        quota_daily=daily,
        quota_left_today=left,
        fits=(not daily) or requests + extra <= left,
        state_version=state_version,
        per_request=size,
        margin=extra,
        groups=kinds,
        out=os.fspath(out) if out is not None else None,
    )
