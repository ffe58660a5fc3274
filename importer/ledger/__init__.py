"""The durable per-row ledger: resume a killed run, skip unchanged rows, count requests.

``store.Ledger`` is the file; ``batch`` is how the pipeline uses it (mapped batches in,
verdicts and outcomes out); ``recorder`` commits a run's outcomes on a thread of its own and
ends its record; ``rowhash`` the stable 64-bit hashes of identities and bodies; ``location``
where a job's ledger lives; ``retry`` which rows a retry sends again; ``requests`` the
requests made per account and quota day (the daily quota). Beneath them: ``schema`` (the
tables and their upgrade), ``access`` (opening the file safely), ``lock`` (a job's lock),
``runs`` (the ``runs`` table), ``classify`` and ``index`` (which rows to send), ``fold`` (the
journal into ``rows``); ``duplicates`` (rows of one run that share an identity, spilled to
temporary files: ``job.duplicates``).
"""

from .baseline import Baseline, Baselines, fingerprint
from .batch import (
    BatchClassifier,
    BatchOutcomes,
    Held,
    Identities,
    QuietRows,
    Verdicts,
    place,
)
from .classify import DONE, HELD, SEND, SUPERSEDED, UNCHANGED, RunInfo
from .duplicates import REJECT as REJECT_DUPLICATE
from .duplicates import SKIP as SKIP_DUPLICATE
from .duplicates import Duplicates, DuplicateSpill
from .location import JobPlaces, adopt_old_ledger, ledger_path, open_job_ledger
from .lock import lock_path
from .recorder import OutcomeRecorder
from .requests import (
    RequestMeter,
    account_of,
    next_reset,
    quota_day,
    short_account,
    utc_now,
)
from .retry import RetryRows, rows_to_retry, rows_to_retry_from_run
from .rowhash import ABSENT, as_keys, combine, hash64, hex16, keys64
from .runs import RESUMABLE, RunRecord
from .schema import SCHEMA_VERSION
from .store import Ledger

__all__ = [
    "ABSENT",
    "DONE",
    "HELD",
    "REJECT_DUPLICATE",
    "RESUMABLE",
    "SCHEMA_VERSION",
    "SEND",
    "SKIP_DUPLICATE",
    "SUPERSEDED",
    "UNCHANGED",
    "Baseline",
    "Baselines",
    "BatchClassifier",
    "BatchOutcomes",
    "DuplicateSpill",
    "Duplicates",
    "Held",
    "Identities",
    "JobPlaces",
    "Ledger",
    "OutcomeRecorder",
    "QuietRows",
    "RequestMeter",
    "RetryRows",
    "RunInfo",
    "RunRecord",
    "Verdicts",
    "account_of",
    "adopt_old_ledger",
    "as_keys",
    "combine",
    "fingerprint",
    "hash64",
    "hex16",
    "keys64",
    "ledger_path",
    "lock_path",
    "next_reset",
    "open_job_ledger",
    "place",
    "quota_day",
    "rows_to_retry",
    "rows_to_retry_from_run",
    "short_account",
    "utc_now",
]
