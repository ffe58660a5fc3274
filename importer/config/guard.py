"""The ``guard:`` section: the blast-radius gate's thresholds (``importer.guard``).

Each is off (None) unless set. A run whose pre-pass measures more than a threshold is held
before a single request (exit code 8, a plan file in its report folder); ``--approve PLAN``
or ``--ignore-guard`` runs it anyway. A job's first run (nothing in the ledger) is never held.
"""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class GuardOptions(StrictModel):
    #: hold when more than this share (0-1) of the run's rows would change a customer the
    #: ledger last delivered with other values
    max_changed_share: float | None = Field(default=None, ge=0, le=1)
    #: hold when more than this share (0-1) of the run's rows are identities the ledger has
    #: never delivered
    max_new_share: float | None = Field(default=None, ge=0, le=1)
    #: ``user_delete`` jobs: hold when the run would delete more than this many customers
    max_deletes: int | None = Field(default=None, ge=0)
    #: hold when a property's share of rows without a value rises by more than this (0-1)
    #: since the job's previous run (a column emptied or gone from the export)
    max_property_null_share_increase: float | None = Field(default=None, ge=0, le=1)
    #: the plan file shows this many example lines of each tripped threshold
    examples: int = Field(default=5, ge=0, le=100)

    @property
    def enabled(self) -> bool:
        """Whether any threshold is set."""
        return any(
            v is not None
            for v in (
                self.max_changed_share,
                self.max_new_share,
                self.max_deletes,
                self.max_property_null_share_increase,
            )
        )
