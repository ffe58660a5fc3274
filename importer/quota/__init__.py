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

from .plan import (
    MARGIN_SHARE,
    QuotaPlan,
    QuotaToday,
    RowCount,
    count_rows,
    file_lines,
    make_plan,
    margin,
    per_request,
    requests_for,
    requests_today,
    row_bound,
    valid_groups,
)
from .run import RunQuota, classifier_for, open_quota, plan_for, plan_run

__all__ = [
    "MARGIN_SHARE",
    "QuotaPlan",
    "QuotaToday",
    "RowCount",
    "RunQuota",
    "classifier_for",
    "count_rows",
    "file_lines",
    "make_plan",
    "margin",
    "open_quota",
    "per_request",
    "plan_for",
    "plan_run",
    "requests_for",
    "requests_today",
    "row_bound",
    "valid_groups",
]
