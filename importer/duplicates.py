"""``job.duplicates``: what a run does with rows that share an identity (the same customer's
primary-key values; for events the same event name and ``event_id``), decided over the whole
input before anything is sent.

``find_duplicates`` is the pre-pass: it reads and checks every row once (no bodies), counts
the valid rows per event name as the daily quota's counting pass did (so a plain run still
reads its files once before sending; the plan counts only rows that will be sent), and
spills each valid row's identity key and position to temporary files
(``ledger.DuplicateSpill``). The few rows of repeated identities then get their verdicts
(``ledger.Duplicates``); ``BatchDuplicates`` turns a batch's into statuses and reasons:

- ``keep_last`` (default for ``user`` and ``user_delete``): the last row is sent; an earlier
  one is ``skipped_duplicate``, "duplicate of line N (job.duplicates: keep_last keeps the
  last)" -- except a customer's earlier row that is the last to set a property the last
  row leaves empty: it is sent as before (in file order, so the last row's values win), or
  that value would be lost;
- ``keep_first``: the first row is sent, later ones ``skipped_duplicate``;
- ``reject`` (default for ``event``: the platform keeps an event's first row, so a later
  status would be silently lost): the first is sent, later ones ``rejected`` with an empty
  errcode (a local decision, not a platform's errcode, like a malformed record) and a reason
  naming the row kept;
- ``keep_all``: no pre-pass, every row is sent in file order (as before ``job.duplicates``).

The verdicts depend only on the rows read, so a resumed run (same files) and ``dmimport
retry`` (the failed rows alone) make the same choices; a skipped or rejected duplicate is
never recorded as failed, so nothing retries it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .config import Config
from .ledger import REJECT_DUPLICATE, SKIP_DUPLICATE, Duplicates, DuplicateSpill, place
from .load import Source
from .map import Mapped, Mapper
from .quota import RowCount, count_rows

log = logging.getLogger("importer")

__all__ = ["BatchDuplicates", "duplicate_reason", "find_duplicates"]


def find_duplicates(
    config: Config,
    sources: Sequence[Source],
    *,
    mapper: Mapper | None = None,
    only: dict[Path, set[int]] | None = None,
    stop: threading.Event | None = None,
    observe: Callable[[Mapped, int], None] | None = None,
) -> tuple[Duplicates, RowCount | None]:
    """The pre-pass over ``sources``: the run's duplicates, and the valid rows that are to be
    sent (per event name; duplicates not sent are taken off), for the daily quota's plan.
    ``job.duplicates: keep_all`` reads nothing (no duplicates, no count: None) unless
    ``observe`` (``importer.guard``) is given, which sees each mapped batch of the pass."""
    job = config.job
    if job.duplicate_policy == "keep_all":
        if observe is not None:
            count_rows(config, sources, mapper=mapper, only=only, stop=stop, observe=observe)
        return Duplicates.none("keep_all"), None
    spill = DuplicateSpill(job.kind, job.duplicate_policy, job.event_name)
    try:
        count = count_rows(
            config, sources, mapper=mapper, only=only, stop=stop, spill=spill, observe=observe
        )
        t0 = time.perf_counter()
        found = spill.resolve()
    except BaseException:
        spill.close()
        raise
    groups = Counter(count.groups)
    groups.subtract(found.excluded)
    if found.found:
        what = "rejected" if found.policy == "reject" else "skipped (skipped_duplicate)"
        log.info(
            "job.duplicates: %s: %s row(s) repeat the identity of another row and are %s",
            found.policy,
            f"{found.found:,}",
            what,
        )
    seconds = count.seconds + time.perf_counter() - t0
    # the rows read (bad records included) stay the progress display's total
    return found, RowCount({k: v for k, v in groups.items() if v > 0}, seconds, count.read)


def duplicate_reason(code: int, policy: str, kind: str, where: str, event_id: str | None) -> str:
    """The reason a report gives a duplicate row: ``where`` names the row its identity keeps
    (``line 7``, or ``orders-2.csv line 7`` in another file)."""
    if code == SKIP_DUPLICATE:
        which = "last" if policy == "keep_last" else "first"
        return f"duplicate of {where} (job.duplicates: {policy} keeps the {which})"
    if kind == "event":
        return (
            f"duplicate event_id '{event_id or ''}' of {where}: the platform keeps the first; "
            "set job.duplicates: keep_last to send the last instead"
        )
    return (
        f"duplicate customer of {where} (the same primary-key values): job.duplicates: reject "
        "sends the first only; set job.duplicates: keep_last to send the last instead"
    )


class BatchDuplicates:
    """A batch's duplicate verdicts: ``skip`` and ``reject`` (masks per row) and the reason
    of each such row (``reasons``: row -> text)."""

    def __init__(
        self,
        duplicates: Duplicates,
        mapped: Mapped,
        file_index: int,
        paths: Sequence[Path],
        kind: str,
    ) -> None:
        codes, refs = duplicates.verdicts(file_index, mapped.lines)
        ok = mapped.ok
        self.skip = ok & (codes == SKIP_DUPLICATE)
        self.reject = ok & (codes == REJECT_DUPLICATE)
        self.any = bool(self.skip.any() or self.reject.any())
        self.reasons: dict[int, str] = {}
        if not self.any:
            return
        rows = np.flatnonzero(self.skip | self.reject).tolist()
        ids = mapped.event_ids
        for i in rows:
            at_file, at_line = place(int(refs[i]))
            where = f"line {at_line}"
            if at_file != file_index:
                where = f"{paths[at_file].name} {where}"
            event_id = ids[i].as_py() if ids is not None else None
            self.reasons[i] = duplicate_reason(
                int(codes[i]), duplicates.policy, kind, where, event_id
            )

    @property
    def send(self) -> np.ndarray:
        """Per row: not held back as a duplicate."""
        return ~(self.skip | self.reject)
