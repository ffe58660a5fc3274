"""The durable per-row ledger: resume a killed run, skip unchanged rows (see ``store``)."""

from .rowhash import ABSENT, as_keys, combine, hash64, hex16, keys64
from .store import (
    DONE,
    HELD,
    SEND,
    SUPERSEDED,
    UNCHANGED,
    Ledger,
    RunInfo,
    RunRecord,
    lock_path,
)

__all__ = [
    "ABSENT",
    "DONE",
    "HELD",
    "SEND",
    "SUPERSEDED",
    "UNCHANGED",
    "Ledger",
    "RunInfo",
    "RunRecord",
    "as_keys",
    "combine",
    "hash64",
    "hex16",
    "keys64",
    "lock_path",
]
