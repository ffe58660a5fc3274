"""Which rows ``retry`` sends again: the rows a run left ``failed`` or ``not_sent``. A customer's
failed row that a later delivered row of the customer follows is sent again with that later row
after it: alone it would put the older values back, and left out, the values only it holds (a
property the later row leaves empty: what ``job.duplicates: keep_last`` sends such a row for)
would never arrive. The retry's own duplicate handling then drops the failed row when the later
one sets all it has.

The rows come from a run's results file (``rows_to_retry``, given its rows) or from the
ledger (``rows_to_retry_from_run``). Rows are compared by the ledger's ``position`` (file
order, then line), which stays inside this package.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LedgerError
from .batch import place, position
from .store import Ledger

__all__ = ["RetryRows", "rows_to_retry", "rows_to_retry_from_run"]

#: statuses of the rows a retry sends again
_RETRIED = ("failed", "not_sent")
#: statuses of a row that reached (or is known to be on) the platform
_DELIVERED = ("ok", "skipped", "unchanged")


@dataclass
class RetryRows:
    """The rows to send again, and those left out because a later row overrode them."""

    #: per file, the lines to send again
    wanted: dict[Path, set[int]] = field(default_factory=dict)
    #: ``file:line (by file:line)`` of each failed row a later delivered row of its customer
    #: follows: sent again with that row after it (``wanted`` holds both), or, when that
    #: row cannot be read back after it, left out
    superseded: list[str] = field(default_factory=list)


#: per identity, the last delivered row of it: (position, file, line)
_Delivered = dict[str, tuple[int, str, int]]


def rows_to_retry(rows: Iterable[tuple[str, int, str, str]], kind: str) -> RetryRows:
    """The rows to send again from a results file's ``(file, line, identity, status)`` rows.

    Superseding applies to ``user`` jobs (a customer's later row overrides an earlier one);
    a run reads its files in the order of their paths, which is their order here."""
    seen = list(rows)
    order = {f: i for i, f in enumerate(sorted({str(Path(f)) for f, *_ in seen}))}
    todo: list[tuple[str, int, str]] = []
    delivered: _Delivered = {}
    for file, line, identity, status in seen:
        if status in _RETRIED:
            todo.append((file, line, identity))
        elif status in _DELIVERED and identity:
            at = (position(order[str(Path(file))], line), file, line)
            if at > delivered.get(identity, (-1, "", 0)):
                delivered[identity] = at
    return _pick(todo, delivered, order if kind == "user" else None)


def rows_to_retry_from_run(ledger: Ledger, run_id: str, job: str, kind: str) -> RetryRows | None:
    """The rows to send again of the run ``run_id`` of ``job``, from the ledger; None when the
    ledger has no such run. ``LedgerError`` when the run is another job's."""
    rows = ledger.failed_rows(run_id)
    todo = [(f, ln, ident) for f, ln, ident, st in rows if st in _RETRIED]
    record = next((r for r in ledger.runs(None, limit=-1) if r.run_id == run_id), None)
    if record is None:
        return None
    if record.job != job:
        raise LedgerError(
            f"run {run_id} is a run of job '{record.job}', not of this "
            f"config's job '{job}': retry it with that job's config"
        )
    if kind != "user":
        return _pick(todo, {}, None)
    file_index: dict[str, int] = {}
    delivered: _Delivered = {}
    places = {Path(f["path"]).resolve(): i for i, f in enumerate(record.files)}
    names = {i: str(f["path"]) for i, f in enumerate(record.files)}
    for file in {f for f, _, _ in todo}:
        if Path(file).resolve() in places:
            file_index[str(Path(file))] = places[Path(file).resolve()]
            names[places[Path(file).resolve()]] = file
    found = ledger.delivered_positions(record.job, record.run_id, [i for _, _, i in todo])
    for identity, pos in found.items():
        at_file, at_line = place(pos)
        delivered[identity] = (pos, names.get(at_file, ""), at_line)
    return _pick(todo, delivered, file_index)


def _pick(
    todo: list[tuple[str, int, str]], delivered: _Delivered, file_index: dict[str, int] | None
) -> RetryRows:
    """``todo`` by file, less the rows a later delivered row of their identity overrode
    (``file_index``: each file's place in the run; None: nothing supersedes)."""
    out = RetryRows()
    for file, line, identity in todo:
        index = file_index.get(str(Path(file))) if file_index is not None else None
        later = delivered.get(identity) if index is not None else None
        if later is not None and index is not None and later[0] > position(index, line):
            where = f"{later[1]}:{later[2]}" if later[1] else f"line {later[2]}"
            out.superseded.append(f"{file}:{line} (by {where})")
            if not later[1] or str(Path(later[1])) < str(Path(file)):
                # the later row cannot be read back, or the retry (its files in the order of
                # their paths) would read it first: sent alone, this row would undo it
                continue
            out.wanted.setdefault(Path(later[1]), set()).add(later[2])
        out.wanted.setdefault(Path(file), set()).add(line)
    return out
