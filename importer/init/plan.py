"""Choosing the properties, primary keys and event fields of a proposal from column guesses."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import CREATE_TIME, EVENT_ID, EVENT_NAME_PLACEHOLDER, PLACEHOLDER
from .infer import ColumnGuess
from .zones import proposed_timezone


@dataclass
class Plan:
    properties: list[tuple[str, ColumnGuess, str]]  # (property, column, comment)
    primary_keys: list[str]
    pk_comment: str
    event_name: str | None
    event_name_from: str | None
    event_comment: str
    skipped: list[str]
    notes: list[str]
    #: the key paths left CHANGE_ME (job.event_name, columns.event_id.from, ...)
    placeholders: list[str]


@dataclass
class _EventFields:
    """What an ``event`` proposal adds: the event's name (a constant or a column), and the
    columns read as ``event_id`` and ``create_time``, each with why it was chosen."""

    name: str | None
    name_from: ColumnGuess | None
    comment: str
    id: ColumnGuess
    id_why: str
    time: ColumnGuess
    time_why: str


def plan_proposal(
    kind: str, guesses: list[ColumnGuess], event_name: str | None, sampled: int = 0
) -> Plan:
    """The properties, keys and event fields to propose for ``guesses`` (read from ``sampled``
    rows) as ``kind``."""
    notes: list[str] = []
    usable = [g for g in guesses if g.header]
    skipped = [f"column {g.position} has no header" for g in guesses if not g.header]
    _set_timezones(usable)
    keys, pk_comment = _primary_keys(usable, notes)
    placeholders = [] if keys else ["job.primary_keys"]
    event = _event_fields(usable, keys, event_name, notes, sampled) if kind == "event" else None
    if event is not None:
        placeholders[:0] = ["job.event_name"] if event.name == PLACEHOLDER else []
        placeholders += [f"columns.{EVENT_ID}.from"] if event.id.header == PLACEHOLDER else []
        placeholders += [f"columns.{CREATE_TIME}.from"] if event.time.header == PLACEHOLDER else []

    chosen = [g for g in usable if event is None or g is not event.name_from]
    if kind == "user_delete" and keys:
        # A delete needs the customer's keys only; the other columns would be ignored.
        skipped += [f"{g.header}" for g in chosen if g not in keys]
        chosen = keys

    used: set[str] = {EVENT_ID, CREATE_TIME} if event is not None else set()
    properties: list[tuple[str, ColumnGuess, str]] = []
    for g in chosen:
        name = g.name
        if event is not None and (
            (name == EVENT_ID and g is event.id) or (name == CREATE_TIME and g is event.time)
        ):
            continue  # added below under its reserved name
        base, i = name, 2
        while name in used:
            name = f"{base}_{i}"
            i += 1
        if name != g.name:
            g.why += f"; {g.name} is taken -> {name}"
            g.name = name
        used.add(name)
        properties.append((name, g, _comment(g, keys)))
    if event is not None:
        id_guess = replace(
            event.id, type="string", format=None, transform=["strip"], number_format=None
        )
        id_guess.timezone = None
        properties.append((EVENT_ID, id_guess, f"{event.id.header}: {event.id_why}"))
        time_guess = replace(event.time, transform=[])
        if time_guess.type != "datetime":
            time_guess.type, time_guess.format = "datetime", None
        time_why = f"{event.time.header}: {event.time_why}"
        if time_guess.timezone:
            time_why += f"; timezone {time_guess.timezone} as on {event.time.name}"
        properties.append((CREATE_TIME, time_guess, time_why))

    for g in usable:
        if g.warning:
            notes.append(f"column {g.header}: {g.warning}")
    unnamed = [g.name for g in usable if g.name.startswith("col_") and g in chosen]
    if unnamed:
        notes.append(
            f"{len(unnamed)} column(s) have no English name ({', '.join(unnamed[:5])}"
            f"{', ...' if len(unnamed) > 5 else ''}): rename them to the platform's property names"
        )
    return Plan(
        properties,
        [g.name for g in keys] or [PLACEHOLDER],
        pk_comment,
        event.name if event is not None else None,
        event.name_from.header if event is not None and event.name_from else None,
        event.comment if event is not None else "",
        skipped,
        notes,
        placeholders,
    )


def _set_timezones(usable: list[ColumnGuess]) -> None:
    """A timezone on each datetime column whose cells carry offsets or are epoch numbers."""
    zoned = [g for g in usable if g.type == "datetime" and g.zoned]
    if not zoned:
        return
    offsets = [o for g in zoned for o in g.offsets]
    zone, why = proposed_timezone([g.header for g in usable], offsets)
    for g in zoned:
        g.timezone = zone
        lost = "the offset would be dropped" if g.offsets else "they would be read as UTC"
        g.why += f"; {g.zoned}: converted into {zone} ({why}); without timezone {lost}"


def _primary_keys(usable: list[ColumnGuess], notes: list[str]) -> tuple[list[ColumnGuess], str]:
    """The customer keys (the first phone-like, e-mail-like and member-id column, in that
    order) and the comment on them; a placeholder, with a note, when there is none."""
    phone = _first(usable, lambda g: g.looks_like == "phone", prefer=lambda g: g.name == "phone")
    email = _first(usable, lambda g: g.looks_like == "email", prefer=lambda g: g.name == "email")
    member = _first(usable, lambda g: g.name == "member_id")
    keys = [g for g in (phone, email, member) if g is not None]
    # Platform key properties are usually called phone and email: a column chosen for its
    # values takes that name when no other column has it.
    for g, wanted in ((phone, "phone"), (email, "email")):
        if g is not None and g.name != wanted and all(o.name != wanted for o in usable):
            g.why += f"; named {wanted}, as the platform calls this key"
            g.name = wanted
    if keys:
        shown = ", ".join(f"{g.name} ({g.header})" for g in keys)
        return keys, (
            f"guessed from the values: {shown}. They must be the account's primary keys "
            "(data center -> meta data -> customer properties)"
        )
    notes.append(
        f"no phone, e-mail or member id column found: job.primary_keys is {PLACEHOLDER}; "
        "set the account's primary keys"
    )
    return [], (
        f"{PLACEHOLDER}: no phone, e-mail or member id column found. Replace {PLACEHOLDER} "
        "with the account's primary-key properties (data center -> meta data -> customer "
        "properties), each mapped under columns"
    )


def _event_fields(
    usable: list[ColumnGuess],
    keys: list[ColumnGuess],
    event_name: str | None,
    notes: list[str],
    sampled: int,
) -> _EventFields:
    """The event's name and its event_id and create_time columns; placeholders, each with a
    note, for what the columns do not tell."""
    event_from: ColumnGuess | None = None
    if event_name is None:
        event_from = _first(usable, lambda g: g.name == "event_name")
        if event_from is not None:
            comment = f"each row's event name is in column {event_from.header}"
        else:
            event_name = EVENT_NAME_PLACEHOLDER
            comment = (
                f"{EVENT_NAME_PLACEHOLDER}: the event's name in the platform (e.g. "
                "order_detail); every row is sent with it"
            )
            notes.append(
                f"job.event_name is the placeholder {EVENT_NAME_PLACEHOLDER}: set the "
                "platform's event name (or pass --event-name)"
            )
    else:
        comment = "every row is sent with this event name"
    event_id, id_why = _event_id_column(usable, keys)
    create_time, time_why = _event_time_column(usable, sampled)
    if event_id is None:
        event_id = ColumnGuess(PLACEHOLDER, 0, EVENT_ID)
        id_why = (
            "no column looks like an event id (named like order_id and unique in the sample): "
            "replace it with the file column that holds each event's unique id"
        )
        notes.append(f"no column looks like an event id: columns.event_id is {PLACEHOLDER}")
    if create_time is None:
        create_time = ColumnGuess(PLACEHOLDER, 0, CREATE_TIME, type="datetime")
        time_why = (
            "no column holds datetimes in every sampled row: replace it with the file column "
            "that holds each event's time (required: rows without it are rejected)"
        )
        notes.append(f"no column looks like a time: columns.create_time is {PLACEHOLDER}")
    elif create_time.type != "datetime":
        # The rows create_time rejects are lost anyway: send the column itself as a
        # datetime too, rather than as unnormalised text.
        create_time.type, create_time.format, create_time.transform = "datetime", None, []
        create_time.why = "datetime like create_time, which reads the same column"
    event_id.why = event_id.why or "text"
    return _EventFields(event_name, event_from, comment, event_id, id_why, create_time, time_why)


def _first(
    guesses: list[ColumnGuess],
    match: Callable[[ColumnGuess], bool],
    prefer: Callable[[ColumnGuess], bool] | None = None,
) -> ColumnGuess | None:
    found = [g for g in guesses if match(g)]
    if prefer is not None:
        found.sort(key=lambda g: not prefer(g))
    return found[0] if found else None


_EVENT_ID_NAMES = ("event_id", "order_id", "transaction_id")
_EVENT_TIME_NAMES = ("create_time", "order_time", "pay_time", "event_time")


def _event_id_column(
    guesses: list[ColumnGuess], keys: list[ColumnGuess]
) -> tuple[ColumnGuess | None, str]:
    candidates = [g for g in guesses if g not in keys and g.looks_like is None and g.filled]
    for wanted in _EVENT_ID_NAMES:
        for g in candidates:
            if g.name == wanted and g.unique:
                return g, "named like an event id and unique in the sample -> event_id"
    for g in candidates:
        if g.unique and g.type == "string" and (g.name.endswith("_id") or "号" in g.header):
            return g, "named like an id and unique in the sample -> event_id"
    for g in candidates:
        if g.name in _EVENT_ID_NAMES:
            return g, (
                "named like an event id, but NOT unique in the sample -> check it: for an "
                "order exported again with a later status, set job.duplicates: keep_last (the "
                "default, reject, rejects the later rows)"
            )
    return None, ""


#: names of the column that says when an event (an order) happened, best first
_CREATED = re.compile(r"creat|order_?time|order_?date|event_?time|下单|创建|订单时间", re.I)


def _event_time_column(guesses: list[ColumnGuess], sampled: int) -> tuple[ColumnGuess | None, str]:
    """The datetime column filled in every sampled row (create_time is required), a name
    like created_at or 下单时间 first; else the most filled one, said so."""
    times = [g for g in guesses if g.type == "datetime"]
    if times:
        full = [g for g in times if g.filled >= sampled]
        pool = full or sorted(times, key=lambda g: -g.filled)[:1]
        named = [g for g in pool if _CREATED.search(g.name) or _CREATED.search(g.header)]
        chosen = (named or [g for g in pool if g.name in _EVENT_TIME_NAMES] or pool)[0]
        gaps = [
            f"{g.header} is empty in {sampled - g.filled}"
            for g in times
            if g is not chosen and g.filled < sampled
        ]
        others = ("; " + ", ".join(gaps[:3])) if gaps else ""
        if full:
            return chosen, f"the event's time: filled in all {sampled} sampled rows{others}"
        return chosen, (
            f"the event's time: filled in {chosen.filled} of {sampled} sampled rows, the most "
            f"of any datetime column{others}. create_time is required: rows where it is empty "
            "are rejected; name a column that is always filled if there is one"
        )
    for g in guesses:
        if g.name in _EVENT_TIME_NAMES:
            return g, (
                "named like the event's time, but not every sample value is a datetime: "
                "rows with other values are rejected (20003)"
            )
    return None, ""


def _comment(g: ColumnGuess, keys: list[ColumnGuess]) -> str:
    text = f"{g.header}: {g.why}"
    if g in keys:
        text += "; primary key"
    return text
