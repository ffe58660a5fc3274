"""The daily quota of one run: its plan before it sends (``plan_run``), its budget and the
meter that counts its requests into the ledger while it sends (``RunQuota``). See the
package's docstring."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import DiskFullError, LedgerError, QuotaError
from ..exitcodes import USAGE
from ..ledger import (
    BatchClassifier,
    Duplicates,
    Identities,
    Ledger,
    RequestMeter,
    RunInfo,
    account_of,
    ledger_path,
    next_reset,
    quota_day,
    utc_now,
)
from ..load import Source
from ..map import Mapper
from ..send import RequestBudget
from .plan import (
    QuotaPlan,
    RowCount,
    count_rows,
    make_plan,
    row_bound,
    used_today,
)

#: the plan is logged at INFO here: ``dmimport`` shows this logger's INFO lines
log = logging.getLogger("importer.quota")


class RunQuota:
    """The daily quota of one run: its plan (``check``), the sender's ``budget`` and the
    ``meter`` that carries the run's requests into the ledger.

    ``ledger``: the ledger requests are counted in (a connection of the quota's own: its
    ``flush`` runs on a worker thread; None with ``state.enabled: false``); ``secret``: the
    SECRET (None: the account is unknown, nothing is counted); ``clock``: the current time
    (aware), a parameter for tests that cross a quota day.
    """

    def __init__(
        self,
        config: Config,
        *,
        secret: str | None,
        ledger: Ledger | None,
        within_quota: bool = False,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        send = config.send
        self.config = config
        self.within_quota = within_quota
        self.clock = clock
        self.ledger = ledger
        self.account = account_of(config.target.base_url, secret) if secret else None
        #: the sender's budget: no limit until ``check`` sets what is left today
        self.budget = RequestBudget(None)
        self.meter: RequestMeter | None = None
        if ledger is not None and self.account is not None:
            self.meter = RequestMeter(
                ledger, account=self.account, job=config.job_name,
                timezone=send.quota_timezone, quota=send.daily_quota, budget=self.budget,
                clock=clock,
            )  # fmt: skip
        self.plan: QuotaPlan | None = None
        #: what the plan's counting pre-pass found, when it ran (not with a bound that fits),
        #: else the duplicates' pre-pass (``plan_run``'s ``valid``) when that ran
        self.count: RowCount | None = None
        self._flushing: asyncio.Future[None] | None = None
        #: when the platform said to come back (``time.time()``), if its limit stopped the run
        self.resume_at: float | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """``send.daily_quota`` is not 0."""
        return self.config.send.daily_quota > 0

    def check(
        self,
        count: Callable[[], RowCount],
        *,
        changed_only: bool,
        refuse: bool = True,
        bound: Callable[[], RowCount | None] | None = None,
    ) -> QuotaPlan | None:
        """Plan the run (``count``: the counting pre-pass, called only when the quota is on),
        log the plan, and set the budget to what is left today. ``QuotaError`` when the plan
        does not fit, unless ``within_quota`` (or not ``refuse``: ``--dry-run`` only warns).
        ``bound``: an upper bound of the rows (``row_bound``), cheaper than ``count``: when
        the plan of the bound fits, it is the plan (``at_most``) and ``count`` is not called."""
        if not self.enabled:
            return None
        now = self.clock()
        tz = self.config.send.quota_timezone
        tracked = self.config.state.enabled
        today = used_today(self.ledger, self.account, tz, now)
        plan = None
        upper = bound() if bound is not None else None
        if upper is not None:
            plan = make_plan(
                self.config, upper, used_today=today, account=self.account, tracked=tracked,
                within_quota=self.within_quota, now=now, at_most=True,
            )  # fmt: skip
            if not plan.fits:
                plan = None
        if plan is None:
            self.count = count()
            plan = make_plan(
                self.config, self.count, used_today=today, account=self.account, tracked=tracked,
                within_quota=self.within_quota, now=now,
            )  # fmt: skip
        self.plan = plan
        for line in plan.lines():
            log.info("%s", line)
        if not tracked:
            log.warning(
                "the daily quota is not tracked across runs (state.enabled: false): this run "
                "may use up to send.daily_quota (%s) requests, whatever other runs used today",
                f"{plan.daily_quota:,}",
            )
        if not plan.fits and not self.within_quota:
            refusal = plan.refusal(self.config, changed_only=changed_only)
            if refuse:
                raise refusal
            log.warning("%s", refusal)
        self.budget.limit = plan.left
        return plan

    def flush(self) -> None:
        """The run's new requests into the ledger, the budget to what is left (SQLite I/O: on
        a worker thread, never on the event loop). A ledger that cannot be written (busy, a
        full disk) is said once; the requests stay pending for the next flush."""
        if self.meter is None or not self.meter.pending:
            return
        try:
            self.meter.flush()
        except (LedgerError, DiskFullError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("the run's requests could not be counted in the ledger: %s", exc)

    def tick(self) -> None:
        """On the event loop (the pipeline's 100 ms tick): start a ``flush`` on a worker
        thread when requests are pending and no flush is under way."""
        if self.meter is None or not self.meter.pending:
            return
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(asyncio.to_thread(self.flush))

    async def settle(self) -> None:
        """Wait for the flush under way, if any (before ``close`` flushes the rest)."""
        if self._flushing is not None:
            await self._flushing
            self._flushing = None

    @property
    def out_of_quota(self) -> bool:
        """The run stopped for a daily quota: its own (``exhausted``) or the platform's (a
        ``Retry-After`` past the cap, ``resume_at``). Such a run is resumable (``quota``)."""
        return self.exhausted or self.resume_at is not None

    @property
    def exhausted(self) -> bool:
        """The budget ran out during the run: rows were left ``not_sent`` for it."""
        return self.budget.exhausted

    def stopped(self) -> str | None:
        """Why the run stopped for the quota, and when to resume (None: it did not). With
        ``within_quota`` this is expected: the message is for the log, the exit code is 1."""
        if not self.exhausted:
            return None
        now = self.clock()
        tz = self.config.send.quota_timezone
        at = next_reset(tz, now)
        return (
            f"the daily quota ran out after {self.budget.used:,} requests of this run "
            f"(send.daily_quota {self.config.send.daily_quota:,}, {quota_day(tz, now)} {tz}): "
            f"the rows not sent are resumed by the next run; the quota resets at {at:%H:%M} "
            f"{tz} ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
        )

    def aborted(self, reason: str | None) -> str | None:
        """The run's abort reason once it sent: ``reason`` (the sender's), else ``stopped()``
        when the budget ran out without ``within_quota`` (exit 3). The stop is logged either
        way (with ``within_quota`` it is expected: exit 1)."""
        stopped = self.stopped()
        if stopped is None:
            return reason
        log.warning("%s", stopped)
        return reason or (None if self.within_quota else stopped)

    def summary(self) -> dict[str, Any] | None:
        """``summary.json``'s ``quota``: the plan and the requests this run took."""
        if self.plan is None:
            return None
        return {**self.plan.as_dict(), "exhausted": self.exhausted}

    def close(self) -> None:
        """The last requests into the ledger, then close it."""
        try:
            self.flush()
        finally:
            if self.ledger is not None:
                self.ledger.close()


def open_quota(
    config: Config,
    *,
    secret: str | None,
    dry_run: bool = False,
    within_quota: bool = False,
    clock: Callable[[], datetime] = utc_now,
) -> RunQuota:
    """The ``RunQuota`` of a run: on the job's ledger (``state.path``) unless
    ``state.enabled: false``. A run that sends opens (or creates) it; ``--dry-run`` reads an
    existing one only, with the SECRET from the environment when it is there (the plan then
    shows what this account used today)."""
    ledger: Ledger | None = None
    if dry_run:
        env = os.environ.get(config.target.secret_env, "").strip()
        secret = env or None
    if config.state.enabled:
        path = ledger_path(config)
        if not dry_run or path.is_file():
            ledger = Ledger(path)
    return RunQuota(config, secret=secret, ledger=ledger, within_quota=within_quota, clock=clock)


def plan_for(
    config: Config,
    sources: Sequence[Source],
    *,
    mapper: Mapper | None = None,
    changed_only: bool | None = None,
    valid: RowCount | None = None,
    now: datetime | None = None,
    duplicates: Duplicates | None = None,
) -> QuotaPlan | None:
    """The plan of a run over ``sources``, read only (``preview``): changed-only against the
    job's ledger if it exists (no resume: that needs the files' fingerprints), the account's
    requests today when the SECRET is in the environment. None with ``send.daily_quota: 0``.
    ``valid``: the rows valid by the local checks, when the caller counted them already (used
    unless changed-only needs the ledger's verdicts: no second pass over the files);
    ``duplicates``: the rows ``job.duplicates`` holds back, left out of that pass."""
    if not config.send.daily_quota:
        return None
    quota = open_quota(config, secret=None, dry_run=True)
    try:
        if changed_only is None:
            changed_only = config.state.mode == "incremental"
        info = RunInfo("", None, ()) if changed_only else None
        classifier = classifier_for(config, quota.ledger, info, changed_only)
        if classifier is None and valid is not None:
            count = valid
        else:
            count = count_rows(
                config, sources, mapper=mapper, classifier=classifier, duplicates=duplicates
            )
        moment = now or utc_now()
        tz = config.send.quota_timezone
        return make_plan(
            config, count, used_today=used_today(quota.ledger, quota.account, tz, moment),
            account=quota.account, tracked=config.state.enabled, now=moment,
        )  # fmt: skip
    finally:
        quota.close()


def classifier_for(
    config: Config, ledger: Ledger | None, info: RunInfo | None, changed_only: bool
) -> Callable[[], BatchClassifier] | None:
    """What classifies a run's rows on ``ledger`` (resume, changed-only), if anything does."""
    if ledger is None or info is None or not (info.resume_chain or changed_only):
        return None
    return functools.partial(
        BatchClassifier, ledger, config.job_name, info,
        Identities(config.job.kind, config.job.event_name), kind=config.job.kind,
        changed_only=changed_only,
    )  # fmt: skip


def plan_run(
    quota: RunQuota,
    sources: Sequence[Source],
    *,
    mapper: Mapper,
    ledger: Ledger | None,
    run: RunInfo | None,
    start: tuple[str, str, list[dict[str, Any]], Path],
    changed_only: bool,
    only: dict[Path, set[int]] | None,
    stop: threading.Event,
    dry_run: bool,
    valid: RowCount | None = None,
    duplicates: Duplicates | None = None,
) -> QuotaPlan | None:
    """A run's plan before it sends (``RunQuota.check``), its counting pre-pass classifying
    like the run (on a ``RunInfo`` of its own; ``--dry-run`` on what ``begin_run`` would
    open). ``start``: the run's job, config hash, file fingerprints and report folder. A run
    that does not fit is marked ``refused`` in ``ledger`` (it sent nothing; the ledger is then
    closed), its empty report folder removed, and ``QuotaError`` raised. ``valid``: the rows
    to send by the local checks and ``duplicates`` (``importer.duplicates``' pre-pass), the
    count when nothing is classified (no second pass); ``duplicates``: left out of a
    classifying pass."""
    job, config_sha, files, run_dir = start
    reader = ledger
    info = run
    if dry_run and quota.ledger is not None:
        reader = quota.ledger
        info = reader.peek_run(job, config_sha, files)
    if info is not None:
        info = RunInfo(info.run_id, info.resumed_from, info.resume_chain)
    classifier = classifier_for(quota.config, reader, info, changed_only)
    # Classifying every row against the ledger (changed-only, resume) costs about what the
    # run's own classifying does: when even every row of the files fits in what is left
    # today, the plan says "at most" and the run classifies once. A plain run's pass only
    # reads and checks (cheap): its plan stays exact.
    bound = None
    if classifier is not None and only is None:
        bound = functools.partial(row_bound, quota.config, sources)

    def count() -> RowCount:
        if classifier is None and valid is not None:
            return valid
        return count_rows(
            quota.config, sources, mapper=mapper, classifier=classifier, only=only, stop=stop,
            duplicates=duplicates,
        )  # fmt: skip

    quota.count = valid  # the rows read so far, if known (``check`` counts again if it must)
    try:
        return quota.check(
            count,
            changed_only=changed_only,
            refuse=not dry_run,
            bound=bound,
        )
    except QuotaError:
        if ledger is not None and run is not None:
            try:
                ledger.end_run(run.run_id, status="refused", counts={}, exit_code=USAGE)
            finally:
                ledger.close()
        with contextlib.suppress(OSError):
            run_dir.rmdir()
        raise
