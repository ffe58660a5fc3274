"""The durable per-row ledger: resume a killed run, skip unchanged rows.

``store.Ledger`` is the file; ``batch`` is how the pipeline uses it (mapped batches in,
verdicts and outcomes out); ``recorder`` commits a run's outcomes on a thread of its own and
ends its record; ``rowhash`` the stable 64-bit hashes of identities and bodies.
"""

from .batch import (
    BatchClassifier,
    BatchOutcomes,
    Held,
    Identities,
    QuietRows,
    Verdicts,
    place,
    position,
)
from .classify import DONE, HELD, SEND, SUPERSEDED, UNCHANGED, RunInfo
from .lock import lock_path
from .recorder import OutcomeRecorder
from .rowhash import ABSENT, as_keys, combine, hash64, hex16, keys64
from .runs import RunRecord
from .schema import SCHEMA_VERSION
from .store import Ledger

__all__ = [
    "ABSENT",
    "DONE",
    "HELD",
    "SCHEMA_VERSION",
    "SEND",
    "SUPERSEDED",
    "UNCHANGED",
    "BatchClassifier",
    "BatchOutcomes",
    "Held",
    "Identities",
    "Ledger",
    "OutcomeRecorder",
    "QuietRows",
    "RunInfo",
    "RunRecord",
    "Verdicts",
    "as_keys",
    "combine",
    "hash64",
    "hex16",
    "keys64",
    "lock_path",
    "place",
    "position",
]
