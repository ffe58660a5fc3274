"""Read-back: prove what arrived (``dmimport verify``, docs/verify.md).

``verify_run`` picks a sample of the rows a run reported ``ok``, maps them again from the input
files, looks each customer up through the Open API (``importer.openapi``) and compares the
stored values with the sent ones (``compare``), writing ``verify.csv`` beside the run's results.
``importer.verify`` is the entry point that takes a config path or ``Config``.
"""

from .check import VERIFY_COLUMNS, VerifySummary, verify_after_run, verify_ready, verify_run
from .compare import MASKED, MATCHED, MISMATCHED, NOT_FOUND, compare_contact
from .sample import SampleRow, pick, run_folder, sent_values

__all__ = [
    "MASKED",
    "MATCHED",
    "MISMATCHED",
    "NOT_FOUND",
    "VERIFY_COLUMNS",
    "SampleRow",
    "VerifySummary",
    "compare_contact",
    "pick",
    "run_folder",
    "sent_values",
    "verify_after_run",
    "verify_ready",
    "verify_run",
]
