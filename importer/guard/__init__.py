"""The blast-radius gate (``guard:``): a run measures, in the pre-pass that reads every row
before sending, what it is about to do (rows new, changed, unchanged; the properties that
change; the columns emptied), and is held before a single request when that is more than
``guard:`` allows (exit code 8, ``plan.json`` in its report folder). docs/guards.md.
"""

from __future__ import annotations

from .gate import PLAN_FILE, Gate, RunFacts, default_command, tripped
from .measure import GuardObserver, Measured

__all__ = [
    "PLAN_FILE",
    "Gate",
    "GuardObserver",
    "Measured",
    "RunFacts",
    "default_command",
    "tripped",
]
