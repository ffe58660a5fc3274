"""The per-run report: one line per input row, the rejected rows ready to re-import, a summary.

A run writes, in its own directory under the report dir::

    results.csv | results.jsonl   (CSV in ``report.encoding``: UTF-8 with a BOM by default)
                                  file, line, kind, identity, status, errcode, errmsg, column,
                                  attempts, latency_ms -- exactly one line per input row
                                  (``results``)
    rejects.<ext>                 the original rows that did not get through (rejected, failed,
                                  not_sent), in the input's own format, encoding and header;
                                  one file per input file when there are several
                                  (rejects-<name>, unique: ``rejects``)
    rejects.reasons.csv           each of those rows' file, line, column, errcode and reason,
                                  then its fields (``reasons``)
    summary.json                  counts by status and errcode, rate, duration, fingerprints
                                  (``summary``; the counts kept as lines are written: ``tally``)

and, when asked, a Prometheus metrics file (``metrics``). Every file is written atomically
(``files``); what a report may show of personal data is ``masking``'s.
"""

from .files import changed_since_run, file_fingerprint, make_run_dir, write_json_atomic
from .masking import PiiMask
from .metrics import metrics_file_problem, write_metrics
from .rejects import RejectFiles
from .results import (
    RESULT_COLUMNS,
    RESULT_SUFFIXES,
    ResultLine,
    ResultRows,
    ResultsWriter,
    read_results,
)
from .summary import RunSummary, Sending
from .tally import Tally

__all__ = [
    "RESULT_COLUMNS",
    "RESULT_SUFFIXES",
    "PiiMask",
    "RejectFiles",
    "ResultLine",
    "ResultRows",
    "ResultsWriter",
    "RunSummary",
    "Sending",
    "Tally",
    "changed_since_run",
    "file_fingerprint",
    "make_run_dir",
    "metrics_file_problem",
    "read_results",
    "write_json_atomic",
    "write_metrics",
]
