"""What ``summary.json`` counts of the report lines as they are written: rows by status and
by errcode, and the most frequent reasons (grouped without their row-specific values), each
with an example ``file:line``."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .masking import without_row_values
from .results import ResultRows

#: statuses whose reason is not a problem: not counted among the reasons
_FINE = frozenset(("ok", "unchanged", "valid", "skipped_duplicate"))
#: the row a duplicate's reason names (``duplicate of line 7``, ``of b.csv line 7``):
#: row-specific, not grouped by
_LINE_NUMBER = re.compile(r"\b(duplicate .*?line) \d+")


class Tally:
    """The counts of a run's report lines (``add`` each batch of them)."""

    def __init__(self) -> None:
        self.rows = 0
        self.counts: Counter[str] = Counter()
        self.errcodes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, rows: ResultRows, file_name: str, *, reasons: bool = True) -> None:
        """Count ``rows``, report lines of the file ``file_name``; their errcodes and reasons
        too unless ``reasons`` is False."""
        self.rows += len(rows)
        self.counts.update(rows.status)
        if not reasons:
            return
        # a batch's messages repeat (every row an abort left says the same): grouped once
        keys: dict[str, str] = {}
        for code, s, msg, ln in zip(rows.errcode, rows.status, rows.errmsg, rows.line, strict=True):
            if s in _FINE:
                continue
            if code is not None:
                self.errcodes[str(code)] += 1
            if msg:
                key = keys.get(msg)
                if key is None:
                    key = keys[msg] = reason_key(msg)
                self.reasons[key] += 1
                self.examples.setdefault(key, f"{file_name}:{ln}")

    def top_reasons(self, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` most frequent reasons, with their row count and an example."""
        return [
            {"reason": r, "rows": k, "example": self.examples.get(r, "")}
            for r, k in self.reasons.most_common(n)
        ]


def reason_key(msg: str) -> str:
    """Group reasons without their row-specific values (quoted text; e-mails, phones and
    values ``mask_pii`` masked, wherever they are: a platform's message may name the row; the
    line a duplicate's reason names)."""
    out = []
    quoted = False
    text = _LINE_NUMBER.sub(r"\1 …", without_row_values(msg))
    for i, ch in enumerate(text):
        # an apostrophe inside a word (the platform's "the account's metadata") opens no quote
        if ch == "'" and (quoted or i == 0 or not text[i - 1].isalnum()):
            quoted = not quoted
            out.append("'…'" if quoted else "")
            continue
        if not quoted:
            out.append(ch)
    return "".join(out)[:200]
