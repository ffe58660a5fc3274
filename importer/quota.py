"""The daily quota of a run: its plan before it sends, its budget while it sends.

The platform allows 10,000 requests per account and day (``send.daily_quota``; the day is
the date in ``send.quota_timezone``, Asia/Shanghai by default). A nightly job must fit in it,
so a run plans its requests before it sends anything:

1. **Rows to send** (``count_rows``): a counting pre-pass over the input files through the
   loader, the mapper's checks and the ledger's classifier (resume, ``--changed-only``),
   without building bodies. It costs about what reading and checking the files costs.
2. **Requests** (``QuotaPlan.requests``): per group of rows one request carries together,
   ``ceil(rows / per_request)``: ``send.batch_rows`` records per request for customers, per
   event name for events; one per request for deletes and for the ``signed`` profile.
3. **Margin** (``margin``): 2% of those requests (retries after a 5xx, a timeout or a 429)
   plus the bisection of one bad row (``2 x ceil(log2(per_request))`` requests): the plan
   must hold a night with a few failures, not every failure a night can bring. The budget
   while sending is the real bound: past it the run stops cleanly (exit 3, or 1 with
   ``--within-quota``).
4. **Left today**: ``send.daily_quota`` minus the requests the ledger counted for this account
   today (every job of the account that uses this ledger; ``importer.ledger.requests``).

A plan that does not fit stops the run before it sends (``QuotaError``, exit 2), with the
numbers and the ways out, unless ``--within-quota``: then the run sends what the quota allows
and leaves the rest ``not_sent`` (exit 1), for the next run to resume.

``send.daily_quota: 0`` turns all of this off (requests are still counted in the ledger).
With ``state.enabled: false`` there is no ledger: nothing is counted across runs, so the plan
takes the whole quota as left (a warning says the quota is not tracked); the budget still
stops a single run at ``send.daily_quota`` requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Config
from .errors import LoadError, QuotaError
from .ledger import BatchClassifier, Ledger, next_reset, quota_day, short_account
from .load import Source, iter_batches
from .map import Mapper

log = logging.getLogger("importer")

#: the share of the requests kept as a margin for retries
MARGIN_SHARE = 0.02


@dataclass(frozen=True)
class RowCount:
    """What ``count_rows`` found: the rows a run would send, per group of rows that share a
    request (the event name for events; "" for everything else), and how long it took."""

    groups: dict[str, int]
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.groups.values())


def count_rows(
    config: Config,
    sources: Sequence[Source],
    *,
    mapper: Mapper | None = None,
    classifier: Callable[[], BatchClassifier] | None = None,
    only: dict[Path, set[int]] | None = None,
    stop: threading.Event | None = None,
) -> RowCount:
    """The rows a run over ``sources`` would send: valid by the local checks and, with
    ``classifier`` (resume, changed-only; give it a ``RunInfo`` of its own), to send by the
    ledger. Bodies are never built. A file that breaks mid-way counts what was read."""
    t0 = time.perf_counter()
    mapper = mapper or Mapper(config)
    columns = config.source_columns()
    fixed_name = (config.job.event_name or "") if config.job.kind == "event" else ""
    groups: Counter[str] = Counter()
    reader = classifier() if classifier is not None else None
    try:
        for index, source in enumerate(sources):
            wanted = only.get(source.path) if only is not None else None
            try:
                for batch in iter_batches(source, config.input, columns):
                    if stop is not None and stop.is_set():
                        break
                    if wanted is not None:
                        batch = batch.only(wanted)
                    mapped = mapper.map(batch, build_bodies=reader is not None)
                    send = mapped.ok
                    if reader is not None:
                        send = send & reader.classify(mapped, index).send
                    names = mapped.event_names
                    if names is None:
                        groups[fixed_name] += int(send.sum())
                    else:
                        groups.update(names[i] or "" for i in send.nonzero()[0].tolist())
            except LoadError:
                continue  # the run reports it
        if reader is not None and reader.holds_rows:
            groups[fixed_name] += sum(len(lines) for lines in reader.held().resend.values())
    finally:
        if reader is not None:
            reader.close()
    return RowCount(dict(groups), time.perf_counter() - t0)


def per_request(config: Config) -> int:
    """The records one request carries at most: ``send.batch_rows``, or 1 where the profile
    has no batch form (deletes; every call of the ``signed`` profile)."""
    fixed = config.profile().max_items(config.job.kind)
    return min(config.send.batch_rows, fixed) if fixed else config.send.batch_rows


def requests_for(groups: dict[str, int], size: int) -> int:
    """The requests ``groups`` of rows need at ``size`` records per request."""
    return sum(-(-n // size) for n in groups.values() if n > 0)


def margin(requests: int, size: int) -> int:
    """The requests a plan keeps for retries and bisection (the module's docstring)."""
    if requests == 0:
        return 0
    bisect = 2 * math.ceil(math.log2(size)) if size > 1 else 0
    return math.ceil(requests * MARGIN_SHARE) + bisect


@dataclass(frozen=True)
class QuotaPlan:
    """A run's requests against what is left of the daily quota today (``make_plan``)."""

    rows: int
    per_request: int
    requests: int
    margin: int
    daily_quota: int
    used_today: int
    day: str
    timezone: str
    resets_at: datetime
    #: the account's short form (``short_account``); None when the SECRET is not known
    #: (``preview``, ``--dry-run`` without it): then ``used_today`` is 0, unknown
    account: str | None
    #: False when no ledger counts the requests (``state.enabled: false``)
    tracked: bool
    within_quota: bool = False
    #: the rows' groups (event names), for the ways out
    groups: dict[str, int] = field(default_factory=dict, repr=False)
    count_s: float = 0.0

    @property
    def needed(self) -> int:
        return self.requests + self.margin

    @property
    def left(self) -> int:
        return max(0, self.daily_quota - self.used_today)

    @property
    def fits(self) -> bool:
        return self.needed <= self.left

    def rows_that_fit(self) -> int:
        """About how many rows what is left sends (its margin kept)."""
        room = max(0, self.left - margin(self.left, self.per_request))
        return min(self.rows, room * self.per_request)

    def resets(self, now: datetime | None = None) -> str:
        """When the quota day resets: ``00:00 Asia/Shanghai (16:00 UTC, in 3 h 5 min)``."""
        at = self.resets_at
        text = f"{at:%H:%M} {self.timezone} ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if now is not None:
            minutes = max(0, int((at - now).total_seconds() // 60))
            text += f", in {minutes // 60} h {minutes % 60} min"
        return text + ")"

    def lines(self) -> list[str]:
        """The plan as shown by ``preview``, ``--dry-run`` and at the top of a run."""
        q = self.daily_quota
        who = f"account {self.account}" if self.account else "account unknown (no SECRET)"
        used = f"{self.used_today:,} used" if self.tracked else "not tracked (state.enabled: false)"
        verdict = "fits" if self.fits else "does NOT fit"
        if not self.fits and self.within_quota:
            verdict += f": --within-quota sends about {self.rows_that_fit():,} rows"
        return [
            f"quota plan: {self.rows:,} rows to send -> {self.requests:,} requests "
            f"({self.per_request:,} rows per request) + {self.margin:,} margin = "
            f"{self.needed:,} requests",
            f"quota today: {self.left:,} of {q:,} left on {self.day} ({self.timezone}; {used}; "
            f"{who}); {verdict}",
        ]

    def as_dict(self) -> dict[str, Any]:
        """The plan in ``summary.json`` (``quota``)."""
        out = asdict(self)
        out.pop("groups")
        out["resets_at"] = self.resets_at.isoformat()
        out.update(needed=self.needed, left=self.left, fits=self.fits)
        out["count_s"] = round(self.count_s, 3)
        return out

    def refusal(
        self, config: Config, *, changed_only: bool, now: datetime | None = None
    ) -> QuotaError:
        """The error that stops a run whose plan does not fit (exit 2): the numbers and the
        ways out."""
        text = (
            f"the run needs {self.needed:,} requests ({self.requests:,} for {self.rows:,} rows "
            f"at {self.per_request:,} rows per request, + {self.margin:,} margin for retries "
            f"and bisection) but {self.left:,} of send.daily_quota {self.daily_quota:,} are "
            f"left today ({self.day}, {self.timezone}: {self.used_today:,} used by this "
            "account); nothing was sent. Ways out:"
        )
        ways: list[str] = []
        fixed = config.profile().max_items(config.job.kind)
        if not fixed:
            bigger = self._batch_rows_that_fit()
            if bigger is not None and bigger > self.per_request:
                ways.append(f"bigger batches (send.batch_rows: {bigger:,} fits)")
        if not changed_only:
            ways.append("--changed-only (send only the rows that changed since the last run)")
        ways.append(
            f"--within-quota (send about {self.rows_that_fit():,} rows now, the rest on the "
            "next run)"
        )
        ways.append(f"a later day: the quota resets at {self.resets(now)}")
        return QuotaError(text + " " + "; ".join(ways))

    def _batch_rows_that_fit(self) -> int | None:
        """The smallest ``send.batch_rows`` with which the plan fits (None: none does)."""
        if self.left <= 0:
            return None
        lo, hi = self.per_request, 100_000

        def fits(size: int) -> bool:
            requests = requests_for(self.groups, size)
            return requests + margin(requests, size) <= self.left

        if not fits(hi):
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo


def make_plan(
    config: Config,
    count: RowCount,
    *,
    used_today: int,
    account: str | None,
    tracked: bool,
    within_quota: bool = False,
    now: datetime | None = None,
) -> QuotaPlan:
    """The plan of a run that would send ``count``'s rows, ``used_today`` requests of the
    account's quota being spent already (``account``: its full hash, or None)."""
    send = config.send
    size = per_request(config)
    requests = requests_for(count.groups, size)
    return QuotaPlan(
        rows=count.rows,
        per_request=size,
        requests=requests,
        margin=margin(requests, size),
        daily_quota=send.daily_quota,
        used_today=used_today,
        day=quota_day(send.quota_timezone, now),
        timezone=send.quota_timezone,
        resets_at=next_reset(send.quota_timezone, now),
        account=short_account(account) if account else None,
        tracked=tracked,
        within_quota=within_quota,
        groups=count.groups,
        count_s=count.seconds,
    )


def used_today(ledger: Ledger | None, account: str | None, timezone: str, now: datetime) -> int:
    """The requests the ledger counted for ``account`` on the quota day of ``now``."""
    if ledger is None or account is None:
        return 0
    return sum(ledger.requests(quota_day(timezone, now), account=account).values())
