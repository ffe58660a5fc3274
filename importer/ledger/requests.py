"""The ``requests`` table: the requests runs made, per account, quota day and job -- what the
platform's daily quota (``send.daily_quota``, 10,000 requests per account and day) counts.

- The account is ``account_of(base_url, secret)``: a SHA-256 of the base URL and the SECRET
  (the platform counts per SECRET; the base URL keeps the sandbox's count apart from the
  platform's). The SECRET itself is never stored; ``short_account`` is what screens show.
- The day is the date in ``send.quota_timezone`` (default Asia/Shanghai: the platform's day
  begins at midnight Beijing time, 16:00 UTC); ``quota_day`` and ``next_reset``.
- A run adds its requests as it goes (``RequestMeter.flush``, every 100 ms of the run, off the
  event loop), so the requests of a run that was killed are counted too.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from .schema import now as now_text
from .schema import transaction

#: how many hex digits of the account hash screens show
SHORT_ACCOUNT = 12


def account_of(base_url: str, secret: str) -> str:
    """The account requests are counted for: 64 hex digits of SHA-256 over the base URL (its
    trailing ``/`` dropped) and the SECRET. One-way: the SECRET cannot be read back from it."""
    text = f"dmimport-account\0{base_url.rstrip('/')}\0{secret}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def short_account(account: str) -> str:
    """The account as screens and summaries show it (its first 12 hex digits)."""
    return account[:SHORT_ACCOUNT]


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default clock of everything here)."""
    return datetime.now(UTC)


def quota_day(timezone: str, now: datetime | None = None) -> str:
    """The quota day at ``now`` (default: the current time): its date in ``timezone``, as
    ``YYYY-MM-DD``."""
    moment = now if now is not None else utc_now()
    return moment.astimezone(ZoneInfo(timezone)).date().isoformat()


def next_reset(timezone: str, now: datetime | None = None) -> datetime:
    """When the quota day after ``now`` begins: the next midnight in ``timezone`` (aware, in
    that zone)."""
    zone = ZoneInfo(timezone)
    local = (now if now is not None else utc_now()).astimezone(zone)
    tomorrow = local.date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)


def add_requests(conn: sqlite3.Connection, account: str, day: str, job: str, n: int) -> None:
    """Count ``n`` more requests of ``job`` on ``account`` and ``day`` (one transaction)."""
    if n <= 0:
        return
    with transaction(conn):
        conn.execute(
            "INSERT INTO requests (account, day, job, requests, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (account, day, job) DO UPDATE SET "
            "requests = requests + excluded.requests, updated = excluded.updated",
            (account, day, job, n, now_text()),
        )


def requests_on(
    conn: sqlite3.Connection, day: str, account: str | None = None, job: str | None = None
) -> dict[tuple[str, str], int]:
    """The requests counted on ``day``, by (account, job): of ``account`` only, of ``job``
    only, or all."""
    sql = "SELECT account, job, requests FROM requests WHERE day = ?"
    params: list[str] = [day]
    if account is not None:
        sql += " AND account = ?"
        params.append(account)
    if job is not None:
        sql += " AND job = ?"
        params.append(job)
    found = conn.execute(sql + " ORDER BY account, job", params).fetchall()
    return {(a, j): int(n) for a, j, n in found}


class Budget(Protocol):
    """What ``RequestMeter`` reads and moves (``importer.send.RequestBudget``)."""

    @property
    def used(self) -> int: ...

    @property
    def limit(self) -> int | None: ...

    @limit.setter
    def limit(self, value: int | None) -> None: ...


class Counter(Protocol):
    """What ``RequestMeter`` writes to and reads from (``Ledger``)."""

    def add_requests(self, account: str, day: str, job: str, n: int) -> None: ...

    def requests(
        self, day: str, *, account: str | None = None, job: str | None = None
    ) -> dict[tuple[str, str], int]: ...


class RequestMeter:
    """Carries a run's requests (``budget.used``) into the ledger as they are made, and keeps
    the budget's limit at what is left of the account's quota today.

    ``flush()`` writes the requests made since the last flush to the current quota day (a
    run that crosses midnight counts its later requests on the new day), then sets
    ``budget.limit`` to the run's requests so far plus what is left today for the account:
    another job spending the same account's requests, or a new day beginning, moves it.
    With ``quota`` 0 it only counts. ``flush`` does SQLite I/O: call it off the event loop.
    ``ledger`` None (``state.enabled: false``): nothing is counted, the limit stays.
    """

    def __init__(
        self,
        ledger: Counter | None,
        *,
        account: str,
        job: str,
        timezone: str,
        quota: int,
        budget: Budget,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.ledger = ledger
        self.account = account
        self.job = job
        self.timezone = timezone
        self.quota = quota
        self.budget = budget
        self.clock = clock
        self.written = budget.used

    @property
    def pending(self) -> int:
        """Requests made and not yet written."""
        return self.budget.used - self.written

    def flush(self) -> None:
        """Write the pending requests; follow the quota left today."""
        if self.ledger is None:
            return
        used = self.budget.used
        now = self.clock()
        day = quota_day(self.timezone, now)
        self.ledger.add_requests(self.account, day, self.job, used - self.written)
        self.written = used
        if self.quota:
            # ``spent`` holds this run's ``written`` requests: what is left of the day's quota
            # comes on top of them
            spent = sum(self.ledger.requests(day, account=self.account).values())
            self.budget.limit = max(0, self.written + self.quota - spent)
