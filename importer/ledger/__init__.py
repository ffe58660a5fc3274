"""The durable per-row ledger: resume a killed run, skip unchanged rows.

``store.Ledger`` is the file; ``batch`` is how the pipeline uses it (mapped batches in,
verdicts and outcomes out); ``rowhash`` the stable 64-bit hashes of identities and bodies.
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
