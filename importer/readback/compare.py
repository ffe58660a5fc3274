"""What the platform holds against what was sent, one customer at a time.

A contact from ``contactPageList`` maps display names (``手机号``) to values; the sent row
maps property names to values; ``contactFieldDetails`` links the two (``fieldName`` / ``sn``
-> ``name``). For every property the row sent (``null`` is no value: never stored, so not
compared):

- equal values (``30`` and ``"30"``, ``1`` and ``1.0`` count as equal: the platform may
  answer numbers as text) -> matched;
- a stored text with ``*`` whose other characters agree with the sent value (``138****8000``
  for ``13800138000``): the account masks that field -> **masked**, not a mismatch;
- anything else, or the field absent from the contact -> mismatched.

A row is ``mismatched`` when one property is, else ``masked`` when one property is, else
``matched``. Several contacts for one search value: the best of them counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASKED", "MATCHED", "MISMATCHED", "NOT_FOUND", "STATUSES", "compare_contact", "same"]

MATCHED = "matched"
MASKED = "masked"
MISMATCHED = "mismatched"
NOT_FOUND = "not_found"
#: the statuses of a verified row, best first
STATUSES = (MATCHED, MASKED, MISMATCHED, NOT_FOUND)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def same(sent: Any, stored: Any) -> bool:
    """Whether ``stored`` is the value ``sent`` (as text, or as the same number)."""
    if sent == stored and type(sent) is type(stored):
        return True
    if _text(sent) == _text(stored):
        return True
    if isinstance(sent, bool) or isinstance(stored, bool):
        return str(sent).lower() == str(stored).lower()
    try:
        return float(_text(sent)) == float(_text(stored))
    except ValueError:
        return False


def masked_as(sent: Any, stored: Any) -> bool:
    """Whether ``stored`` is ``sent`` with part of it hidden by ``*`` (``138****8000``)."""
    if not isinstance(stored, str) or "*" not in stored:
        return False
    parts = [re.escape(p) for p in re.split(r"\*+", stored)]
    return re.fullmatch(".+?".join(parts), _text(sent), flags=re.DOTALL) is not None


def _one(
    sent: Mapping[str, Any], contact: Mapping[str, Any], names: Mapping[str, str], show: bool
) -> tuple[str, list[str]]:
    status = MATCHED
    notes: list[str] = []
    for prop, value in sent.items():
        if value is None:
            continue
        key = names.get(prop, prop)
        if key not in contact and prop in contact:
            key = prop
        if key not in contact:
            status = MISMATCHED
            notes.append(f"{prop}: not stored")
            continue
        stored = contact[key]
        if same(value, stored):
            continue
        if masked_as(value, stored):
            if status == MATCHED:
                status = MASKED
            notes.append(f"{prop}: masked")
            continue
        status = MISMATCHED
        if show:
            notes.append(f"{prop}: sent {_text(value)}, stored {_text(stored)}")
        else:
            notes.append(f"{prop}: differs")
    # the notes of a mismatch name only what differs
    if status == MISMATCHED:
        notes = [n for n in notes if not n.endswith(": masked")]
    return status, notes


def compare_contact(
    sent: Mapping[str, Any],
    contacts: list[dict[str, Any]],
    names: Mapping[str, str],
    *,
    show_values: bool = True,
) -> tuple[str, Any, list[str]]:
    """``(status, customerId, notes)`` of the best of ``contacts`` for the row ``sent``;
    ``names``: property -> display name. ``show_values`` False (``report.mask_pii``): a
    mismatch's note names the property, not the values."""
    if not contacts:
        return NOT_FOUND, None, []
    best: tuple[str, Any, list[str]] | None = None
    for contact in contacts:
        status, notes = _one(sent, contact, names, show_values)
        if best is None or STATUSES.index(status) < STATUSES.index(best[0]):
            best = (status, contact.get("customerId"), notes)
    assert best is not None
    return best
