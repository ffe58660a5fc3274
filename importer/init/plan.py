"""Choosing the properties, primary keys and event fields of a proposal from column guesses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import CREATE_TIME, EVENT_ID, EVENT_NAME_PLACEHOLDER
from .infer import ColumnGuess


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


def plan_proposal(kind: str, guesses: list[ColumnGuess], event_name: str | None) -> Plan:
    """The properties, keys and event fields to propose for ``guesses`` as ``kind``."""
    notes: list[str] = []
    usable = [g for g in guesses if g.header]
    skipped = [f"column {g.position} has no header" for g in guesses if not g.header]
    keys, pk_comment = _primary_keys(usable, notes)
    event = _event_fields(usable, keys, event_name, notes) if kind == "event" else None

    chosen = [g for g in usable if event is None or g is not event.name_from]
    if kind == "user_delete":
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
        id_guess = replace(event.id, type="string", format=None, transform=["strip"])
        properties.append((EVENT_ID, id_guess, f"{event.id.header}: {event.id_why}"))
        time_guess = replace(event.time, transform=[])
        if time_guess.type != "datetime":
            time_guess.type, time_guess.format = "datetime", None
        properties.append((CREATE_TIME, time_guess, f"{event.time.header}: {event.time_why}"))

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
        [g.name for g in keys],
        pk_comment,
        event.name if event is not None else None,
        event.name_from.header if event is not None and event.name_from else None,
        event.comment if event is not None else "",
        skipped,
        notes,
    )


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
            g.why += f"; named {wanted} as a primary key"
            g.name = wanted
    if keys:
        shown = ", ".join(f"{g.name} ({g.header})" for g in keys)
        return keys, (
            f"guessed from the values: {shown}. They must be the account's primary keys "
            "(data center -> meta data -> customer properties)"
        )
    fallback = _first(usable, lambda g: g.unique and g.filled > 0) or usable[0]
    notes.append(
        f"no phone, e-mail or member id column found: job.primary_keys is a placeholder "
        f"({fallback.name}); set the account's primary keys"
    )
    return [fallback], (
        f"CHANGE ME: no phone, e-mail or member id column found; {fallback.name} "
        f"({fallback.header}) is only a placeholder. Use the account's primary keys "
        "(data center -> meta data -> customer properties)"
    )


def _event_fields(
    usable: list[ColumnGuess], keys: list[ColumnGuess], event_name: str | None, notes: list[str]
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
    create_time, time_why = _event_time_column(usable)
    if event_id is None:
        event_id = next((g for g in usable if g not in keys), usable[0])
        id_why = "CHANGE ME: no column looks like an event id; this one is a placeholder"
        notes.append("no column looks like an event id: columns.event_id is a placeholder")
    if create_time is None:
        create_time = usable[-1]
        time_why = "CHANGE ME: no column looks like a time; this one is a placeholder"
        notes.append("no column looks like a time: columns.create_time is a placeholder")
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
            return g, "named like an event id, but NOT unique in the sample -> check it"
    return None, ""


def _event_time_column(guesses: list[ColumnGuess]) -> tuple[ColumnGuess | None, str]:
    times = [g for g in guesses if g.type == "datetime"]
    for wanted in _EVENT_TIME_NAMES:
        for g in times:
            if g.name == wanted:
                return g, "the event's time -> create_time"
    if times:
        return times[0], "the first datetime column -> create_time"
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
