"""The daily quota's plan: the rows a run would send (``count_rows``), the requests they need
with their margin (``make_plan``, ``QuotaPlan``) against what is left today, and today's
requests in a ledger (``QuotaToday``). See the package's docstring."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Config
from ..errors import LoadError, QuotaError
from ..lake.planned import PlannedHashes
from ..ledger import (
    BatchClassifier,
    Duplicates,
    DuplicateSpill,
    Ledger,
    account_of,
    next_reset,
    quota_day,
    short_account,
)
from ..load import Source, iter_batches
from ..map import Mapped, Mapper

#: the share of the requests kept as a margin for retries
MARGIN_SHARE = 0.02


@dataclass(frozen=True)
class RowCount:
    """What ``count_rows`` found: the rows a run would send, per group of rows that share a
    request (the event name for events; "" for everything else), and how long it took."""

    groups: dict[str, int]
    seconds: float = 0.0
    #: the rows read, whatever their fate (bad records included): the run's report lines, for
    #: the progress display's total (0 from ``row_bound``, which reads no rows)
    read: int = 0

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
    spill: DuplicateSpill | None = None,
    duplicates: Duplicates | None = None,
    observe: Callable[[Mapped, int], None] | None = None,
) -> RowCount:
    """The rows a run over ``sources`` would send: valid by the local checks, not held back
    as ``duplicates`` (``job.duplicates``, when given) and, with ``classifier`` (resume,
    changed-only; give it a ``RunInfo`` of its own), to send by the ledger. Bodies are never
    built. A file that breaks mid-way counts what was read. ``spill``: every valid row goes
    to it too (``importer.duplicates.find_duplicates``: the same pass finds duplicates);
    ``observe``: called with each mapped batch (with its change hashes) and its file's
    index (``importer.guard``: the same pass measures what the run would change)."""
    t0 = time.perf_counter()
    mapper = mapper or Mapper(config)
    columns = config.source_columns()
    fixed_name = (config.job.event_name or "") if config.job.kind == "event" else ""
    groups: Counter[str] = Counter()
    read = 0
    reader = classifier() if classifier is not None else None
    try:
        for index, source in enumerate(sources):
            wanted = only.get(source.path) if only is not None else None
            planned = PlannedHashes.of(source)  # a change set: rows planned elsewhere not sent
            # bodies stay lazy unless hashed (a reader, guard:, a change set's check)
            hashed = reader is not None or observe is not None or planned is not None
            try:
                for batch in iter_batches(source, config.input, columns):
                    if stop is not None and stop.is_set():
                        break
                    if wanted is not None:
                        batch = batch.only(wanted)
                    read += batch.table.num_rows + len(batch.bad)
                    mapped = mapper.map(batch, build_bodies=hashed)
                    send = mapped.ok
                    if planned is not None:
                        send = send & ~planned.differs(mapped)
                    if observe is not None:
                        observe(mapped, index)
                    if spill is not None:
                        spill.add(mapped, index)
                    if duplicates is not None:
                        codes, _ = duplicates.verdicts(index, mapped.lines)
                        send = send & (codes == 0)
                    if reader is not None:
                        send = send & reader.classify(mapped, index, send).send
                    groups.update(valid_groups(config, mapped, send))
            except LoadError:
                read += 1  # the run reports it, on a line of its own
                continue
        if reader is not None and reader.holds_rows:
            groups[fixed_name] += sum(len(lines) for lines in reader.held().resend.values())
    finally:
        if reader is not None:
            reader.close()
    return RowCount(dict(groups), time.perf_counter() - t0, read)


def row_bound(config: Config, sources: Sequence[Source]) -> RowCount | None:
    """An upper bound of the rows a run over ``sources`` could send, without reading them
    through the loader: a Parquet file's row count (its metadata), a plain text file's lines
    (``file_lines``: a record takes one line at least; the header and a quoted value's line
    breaks only raise the bound). None when no cheap bound exists: a compressed
    file, or events whose names come from a column (their requests depend on the names)."""
    if config.job.kind == "event" and not config.job.event_name:
        return None
    t0 = time.perf_counter()
    total = 0
    for source in sources:
        if source.compressed:
            return None
        try:
            if source.frame is not None:  # in memory: its row count, when known
                if source.frame.rows is None:
                    return None
                total += source.frame.rows
            elif source.format == "parquet":
                total += pq.ParquetFile(source.path).metadata.num_rows
            else:
                total += file_lines(source.path)
        except (OSError, pa.ArrowException):
            return None
    fixed = (config.job.event_name or "") if config.job.kind == "event" else ""
    return RowCount({fixed: total}, time.perf_counter() - t0)


def file_lines(path: Path, chunk: int = 1 << 22, stop: threading.Event | None = None) -> int:
    """The lines of a file: its ``\\n``, its ``\\r`` not followed by ``\\n``, and a last line
    without either (at C speed, 4 MiB at a time; a ``\\r\\n`` split across two blocks counts
    twice: still a bound). ``stop`` set: what was counted so far."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(chunk):
            if stop is not None and stop.is_set():
                break
            n += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
            last = block[-1:]
    return n + (last not in (b"\n", b"\r"))


def valid_groups(config: Config, mapped: Mapped, rows: np.ndarray | None = None) -> Counter[str]:
    """How many of ``rows`` (a mask; default: the rows that pass the local checks) go to each
    group of rows that share requests: the event name for events, "" otherwise."""
    mask = mapped.ok if rows is None else rows
    names = mapped.event_names
    if names is None:
        fixed = (config.job.event_name or "") if config.job.kind == "event" else ""
        return Counter({fixed: int(mask.sum())})
    return Counter(names[i] or "" for i in np.flatnonzero(mask).tolist())


def per_request(config: Config) -> int:
    """The records one request carries at most: ``send.batch_rows``, or 1 where the profile
    has no batch form (deletes; every call of the ``signed`` profile)."""
    fixed = config.profile().max_items(config.job.kind)
    return min(config.send.batch_rows, fixed) if fixed else config.send.batch_rows


def requests_for(groups: dict[str, int], size: int) -> int:
    """The requests ``groups`` of rows need at ``size`` records per request."""
    return sum(-(-n // size) for n in groups.values() if n > 0)


def margin(requests: int, size: int) -> int:
    """The requests a plan keeps for retries and bisection (the module's docstring); ``size``:
    the records of the largest request."""
    if requests == 0:
        return 0
    bisect = 2 * math.ceil(math.log2(size)) if size > 1 else 0
    return math.ceil(requests * MARGIN_SHARE) + bisect


def largest(groups: dict[str, int], size: int) -> int:
    """The records of the largest request ``groups`` make at ``size`` per request."""
    return min(size, max(groups.values(), default=0))


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
    #: how long the counting pre-pass took (seconds)
    count_s: float = field(default=0.0, compare=False)
    #: ``rows`` is an upper bound (``row_bound``: the files' rows), not the rows the ledger's
    #: classifier counted: the run's plan skipped that pass because the bound fits already
    at_most: bool = False

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
        """About how many rows the requests left today send (if none is retried)."""
        return min(self.rows, self.left * self.per_request)

    def resets(self) -> str:
        """When the quota day resets: ``00:00 Asia/Shanghai (2026-12-06 16:00 UTC)``."""
        at = self.resets_at
        return f"{at:%H:%M} {self.timezone} ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"

    def lines(self) -> list[str]:
        """The plan as shown by ``preview``, ``--dry-run`` and at the top of a run."""
        q = self.daily_quota
        who = f"account {self.account}" if self.account else "account unknown (no SECRET)"
        used = f"{self.used_today:,} used" if self.tracked else "not tracked (state.enabled: false)"
        verdict = "fits" if self.fits else "does NOT fit"
        if not self.fits and self.within_quota:
            verdict += f": --within-quota sends about {self.rows_that_fit():,} rows"
        if self.at_most:
            return [
                f"quota plan: at most {self.rows:,} rows to send (the files' rows: that fits, "
                f"so they were not classified first) -> at most {self.requests:,} request(s) "
                f"(up to {self.per_request:,} rows each) + {self.margin:,} margin for retries "
                f"and bisection = at most {self.needed:,} requests",
                f"quota today: {self.left:,} of {q:,} left on {self.day} ({self.timezone}; "
                f"{used}; {who}); {verdict}",
            ]
        return [
            f"quota plan: {self.rows:,} rows to send -> {self.requests:,} request(s) "
            f"(up to {self.per_request:,} rows each) + {self.margin:,} margin for retries and "
            f"bisection = {self.needed:,} requests",
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

    def refusal(self, config: Config, *, changed_only: bool) -> QuotaError:
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
        ways.append(f"a later day: the quota resets at {self.resets()}")
        return QuotaError(text + " " + "; ".join(ways))

    def _batch_rows_that_fit(self) -> int | None:
        """The smallest ``send.batch_rows`` (up to 100,000, the config's bound) with which the
        plan fits; None when none does. (Not a bisection: the margin grows with the batch.)"""
        top = min(100_000, max(self.groups.values(), default=0))
        for size in range(self.per_request + 1, top + 1):
            requests = requests_for(self.groups, size)
            if requests + margin(requests, largest(self.groups, size)) <= self.left:
                return size
        return None


def make_plan(
    config: Config,
    count: RowCount,
    *,
    used_today: int,
    account: str | None,
    tracked: bool,
    within_quota: bool = False,
    now: datetime | None = None,
    at_most: bool = False,
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
        margin=margin(requests, largest(count.groups, size)),
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
        at_most=at_most,
    )


def used_today(ledger: Ledger | None, account: str | None, timezone: str, now: datetime) -> int:
    """The requests the ledger counted for ``account`` on the quota day of ``now``."""
    if ledger is None or account is None:
        return 0
    return sum(ledger.requests(quota_day(timezone, now), account=account).values())


@dataclass(frozen=True)
class QuotaToday:
    """Today's requests in a ledger (``dmimport runs``; ``importer.quota_today``)."""

    job: str
    day: str
    timezone: str
    daily_quota: int
    resets_at: datetime
    #: the job's requests today (on its account; on every account when the SECRET is unknown)
    job_requests: int
    #: the account's short form and its requests today, every job of it in this ledger; None
    #: when the SECRET is not in the environment
    account: str | None
    account_requests: int | None
    #: where the SECRET is read from (``target.secret_env``)
    secret_env: str = "DMART_SECRET"
    #: the job's requests today on other accounts (another base URL or SECRET: a run with
    #: ``--base-url`` to the sandbox, say), not in ``job_requests`` nor in the account's total
    other_accounts_requests: int = 0

    @property
    def left(self) -> int | None:
        """What is left of ``send.daily_quota`` today (None: unknown, or no quota)."""
        if self.account_requests is None or not self.daily_quota:
            return None
        return max(0, self.daily_quota - self.account_requests)

    def lines(self) -> list[str]:
        at = self.resets_at
        reset = f"resets at {at:%H:%M} {self.timezone} ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
        head = f"requests today ({self.day}, {self.timezone}): job {self.job} {self.job_requests:,}"
        if self.account is None:
            return [
                head,
                f"the account's total and the quota left need the SECRET (${self.secret_env} "
                f"is not set); send.daily_quota {self.daily_quota:,}; {reset}",
            ]
        assert self.account_requests is not None
        quota = (
            f"{self.left:,} of send.daily_quota {self.daily_quota:,} left; {reset}"
            if self.daily_quota
            else "send.daily_quota: 0 (no quota)"
        )
        out = [
            head,
            f"account {self.account} (every job in this ledger): {self.account_requests:,} "
            f"requests; {quota}",
        ]
        if self.other_accounts_requests:
            out.append(
                f"job {self.job} also made {self.other_accounts_requests:,} requests today to "
                "another account (another base URL or SECRET than the config's, e.g. a run with "
                "--base-url): not counted above"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resets_at": self.resets_at.isoformat(), "left": self.left}


def requests_today(
    ledger: Ledger, config: Config, *, secret: str | None, now: datetime | None = None
) -> QuotaToday:
    """What ``ledger`` counted today for ``config``'s job and account (``QuotaToday``)."""
    tz = config.send.quota_timezone
    day = quota_day(tz, now)
    job = config.job_name
    account = account_of(config.target.base_url, secret) if secret else None
    if account is None:
        job_requests = sum(ledger.requests(day, job=job).values())
        account_requests = None
        others = 0
    else:
        counts = ledger.requests(day, account=account)
        job_requests = sum(n for (_, j), n in counts.items() if j == job)
        account_requests = sum(counts.values())
        others = sum(ledger.requests(day, job=job).values()) - job_requests
    return QuotaToday(
        job=job, day=day, timezone=tz, daily_quota=config.send.daily_quota,
        resets_at=next_reset(tz, now), job_requests=job_requests,
        account=short_account(account) if account else None, account_requests=account_requests,
        secret_env=config.target.secret_env, other_accounts_requests=others,
    )  # fmt: skip
