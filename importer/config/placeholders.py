"""``CHANGE_ME``: the text ``dmimport init`` writes where it could not decide, refused wherever
a config is loaded.

A proposal is a draft: where the sample does not tell (no column looks like an event id, no
phone or e-mail column for the primary keys, no event name given), ``init`` writes
``CHANGE_ME`` as the value, with a comment saying what belongs there. Every command that loads
a config (``check-config``, ``run``, ``validate``, ``preview``, ...) refuses each key or value
still containing the text, with its line and key path, before any file is read or any row is
sent: a placeholder never becomes a guess that runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the text that marks a value (or key) the user has to fill in
PLACEHOLDER = "CHANGE_ME"
#: how every placeholder problem's message starts
STILL_PLACEHOLDER = f"still {PLACEHOLDER}"

#: what belongs at the places ``init`` leaves a placeholder
_WHAT: dict[tuple[str, ...], str] = {
    ("job", "event_name"): "set the platform's event name (e.g. order_detail)",
    ("job", "event_name_from"): "name the file column that holds each row's event name",
    ("columns", "event_id", "from"): (
        "name the file column that holds each event's unique id (e.g. the order id)"
    ),
    ("columns", "create_time", "from"): "name the file column that holds each event's time",
    ("job", "primary_keys"): (
        "name the account's primary-key properties (data center -> meta data -> customer "
        "properties), e.g. phone, and map them under columns"
    ),
}


def _what(path: tuple[str, ...], is_key: bool) -> str:
    if is_key:
        return "rename this key"
    if path[:2] == ("job", "primary_keys"):
        return _WHAT[("job", "primary_keys")]
    if len(path) == 3 and path[0] == "columns" and path[2] == "from":
        return _WHAT.get(path, f"name the file column that holds {path[1]}")
    return _WHAT.get(path, "replace it with the real value")


def placeholder_problems(data: Any) -> list[tuple[tuple[str, ...], str]]:
    """``(key path, message)`` for every key or text value of ``data`` containing
    ``CHANGE_ME``, in document order: ``still CHANGE_ME: <what belongs there>``."""
    out: list[tuple[tuple[str, ...], str]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                here = (*path, str(key))
                if PLACEHOLDER in str(key):
                    out.append((here, f"{STILL_PLACEHOLDER}: {_what(here, True)}"))
                walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, (*path, str(i)))
        elif isinstance(node, str) and PLACEHOLDER in node:
            out.append((path, f"{STILL_PLACEHOLDER}: {_what(path, False)}"))

    walk(data, ())
    return out


def is_placeholder_problem(message: str) -> bool:
    """True for the message of a problem ``placeholder_problems`` found."""
    return message.startswith(STILL_PLACEHOLDER + ":")
