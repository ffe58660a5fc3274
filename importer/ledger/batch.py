"""The ledger as the pipeline uses it: mapped batches in, verdicts and outcomes out.

The pipeline hands over a mapped batch and the index of its file in the run; how a row's
place is packed into one integer (``position``, which ``retry`` shares), how verdicts are
coded and how body hashes are keyed stays in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .classify import DONE, HELD, SEND, UNCHANGED, RunInfo
from .rowhash import keys64
from .store import Ledger

#: a row's position is ``(file index << 40) + line``: the line is its low 40 bits
_LINE_BITS = 40
_LINE_MASK = (1 << _LINE_BITS) - 1


def position(file_index: int, line: int) -> int:
    """The row on ``line`` of the run's file number ``file_index`` as the ledger orders rows:
    by file, then line."""
    return (file_index << _LINE_BITS) + line


def place(pos: int) -> tuple[int, int]:
    """(file index, line) of a ``position``."""
    return pos >> _LINE_BITS, pos & _LINE_MASK


def positions_of(file_index: int, lines: np.ndarray) -> np.ndarray:
    """``position`` of each of ``lines`` of file number ``file_index``, as int64."""
    return (np.int64(file_index) << np.int64(_LINE_BITS)) + lines


def places_of(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``place`` of each of ``positions``: (file indices, lines)."""
    return positions >> _LINE_BITS, positions & _LINE_MASK


class _Hashes(Protocol):
    def keys(self, rows: np.ndarray) -> np.ndarray: ...


class MappedRows(Protocol):
    """What the ledger reads of a mapped batch (``importer.map.Mapped``)."""

    n: int
    lines: np.ndarray
    errcode: np.ndarray
    identity: list[str]
    identity_text: pa.Array | None
    event_names: list[str | None] | None

    @property
    def properties_hash(self) -> _Hashes | None: ...


class Identities:
    """A row's ledger identity: its primary-key values (``mapped.identity``), after its event
    name for events (``order_detail|phone=138...;event_id=E1``)."""

    def __init__(self, kind: str, event_name: str | None) -> None:
        self._event = kind == "event"
        self._event_name = event_name

    def __call__(self, mapped: MappedRows, rows: np.ndarray) -> tuple[list[str], pa.Array]:
        """The identities of ``rows``, as a list and as an Arrow array (for ``keys64``)."""
        text = mapped.identity_text
        assert text is not None
        every = len(rows) == len(text)
        if not self._event:
            if every:
                return mapped.identity, text
            return [mapped.identity[i] for i in rows.tolist()], text.take(rows)
        name = self._event_name
        names: Any = name if name is not None else pa.array(mapped.event_names, pa.string())
        text = pc.binary_join_element_wise(names, text, "|")
        if not every:
            text = text.take(rows)
        return text.to_pylist(), text


class Verdicts:
    """The ledger's verdict on each row of a batch (rows rejected locally: ``send``)."""

    def __init__(self, codes: np.ndarray) -> None:
        self._codes = codes

    @property
    def send(self) -> np.ndarray:
        """Per row: to be sent."""
        return self._codes == SEND

    @property
    def done(self) -> np.ndarray:
        """Per row: the runs this one resumed delivered it (or a later row of its identity)."""
        return self._codes == DONE

    @property
    def unchanged(self) -> np.ndarray:
        """Per row: the platform already holds exactly this body (changed-only)."""
        return self._codes == UNCHANGED

    @property
    def held(self) -> np.ndarray:
        """Per row: its identity's last row in the run decides (``BatchClassifier.held``)."""
        return self._codes == HELD


@dataclass(frozen=True)
class QuietRows:
    """Held rows of one file that need no send: each is ``unchanged`` (its identity's last
    row, whose body the platform holds) or else superseded by that row, at
    ``superseded_by`` (file index, line)."""

    file_index: int
    lines: list[int]
    identities: list[str]
    unchanged: list[bool]
    superseded_by: list[tuple[int, int] | None]


@dataclass(frozen=True)
class Held:
    """What became of the held rows: per file, those to report without a send (``quiet``)
    and the lines to read again and send (``resend``, by file index)."""

    quiet: list[QuietRows]
    resend: dict[int, set[int]]


class BatchClassifier:
    """Classifies a run's mapped batches, in file order, on a connection of its own (so that
    it may run in another thread than the one recording outcomes)."""

    def __init__(
        self,
        ledger: Ledger,
        job: str,
        run: RunInfo,
        identities: Identities,
        *,
        kind: str,
        changed_only: bool,
    ) -> None:
        self._ledger = ledger.reader()
        self._job = job
        self._run = run
        self._identities = identities
        self._changed_only = changed_only
        # a later row of a customer overrides the earlier ones: the last one decides
        self._judge_by_last = changed_only and kind == "user"
        self._held_identity: dict[int, str] = {}

    def close(self) -> None:
        self._ledger.close()

    def classify(
        self, mapped: MappedRows, file_index: int, rows: np.ndarray | None = None
    ) -> Verdicts:
        """The verdicts on the rows of ``mapped``, the next batch of file ``file_index``: on
        the rows that pass the local checks, or on ``rows`` (a mask) when given (the others,
        duplicates held back say, are left out as if they were not in the file)."""
        verdict = np.zeros(mapped.n, dtype=np.int8)
        valid = np.flatnonzero(mapped.errcode == 0 if rows is None else rows)
        if len(valid) == 0:
            return Verdicts(verdict)
        identities, text = self._identities(mapped, valid)
        positions = positions_of(file_index, mapped.lines[valid])
        hashes = mapped.properties_hash
        # changed-only compares the hashes: all at once; a resume alone reads none
        keys = hashes.keys(valid) if self._changed_only and hashes is not None else None
        verdict[valid] = self._ledger.classify(
            self._job,
            self._run,
            identities,
            positions,
            keys,
            changed_only=self._changed_only,
            identity_keys=keys64(text),
            judge_by_last=self._judge_by_last,
        )
        if self._judge_by_last:
            for j in np.flatnonzero(verdict[valid] == HELD).tolist():
                self._held_identity[int(positions[j])] = identities[j]
        return Verdicts(verdict)

    @property
    def holds_rows(self) -> bool:
        """Whether some rows were held: ``held`` decides them once every row was classified."""
        return bool(self._held_identity)

    def held(self) -> Held:
        """Decide the held rows (``Ledger.resolve_held``), once every row was classified."""
        positions, verdicts, superseded_by = self._ledger.resolve_held(self._run)
        resend: dict[int, set[int]] = {}
        for at in positions[verdicts == SEND].tolist():
            index, line = place(at)
            resend.setdefault(index, set()).add(line)
        quiet: list[QuietRows] = []
        rows = np.flatnonzero(verdicts != SEND)
        files, lines = places_of(positions[rows])
        for index in np.unique(files).tolist():
            picked = files == index
            mine = rows[picked]
            at = positions[mine].tolist()
            quiet.append(
                QuietRows(
                    file_index=index,
                    lines=lines[picked].tolist(),
                    identities=[self._held_identity[p] for p in at],
                    unchanged=(verdicts[mine] == UNCHANGED).tolist(),
                    superseded_by=[
                        place(by) if by >= 0 else None for by in superseded_by[mine].tolist()
                    ],
                )
            )
        return Held(quiet, resend)


class BatchOutcomes:
    """What ``Ledger.record`` needs of a batch's rows (identity, position, body hash),
    made once for the batch: ``item`` gives a row's record."""

    def __init__(
        self, mapped: MappedRows, file_index: int, rows: np.ndarray, identities: Identities
    ) -> None:
        n = mapped.n
        ident = [""] * n
        if len(rows):
            for j, text in zip(rows.tolist(), identities(mapped, rows)[0], strict=True):
                ident[j] = text
        self._identity = ident
        self._position = positions_of(file_index, mapped.lines).tolist()
        hashes: list[int | None] = [None] * n
        if mapped.properties_hash is not None and len(rows):
            keys = mapped.properties_hash.keys(rows).tolist()
            for j, key in zip(rows.tolist(), keys, strict=True):
                hashes[j] = key
        self._hash = hashes

    def item(self, i: int, status: str) -> tuple[str, int, str, int | None]:
        """Row ``i``'s outcome ``status`` as ``Ledger.record`` takes it."""
        return (self._identity[i], self._position[i], status, self._hash[i])

    def items(self, rows: list[int], status: str) -> list[tuple[str, int, str, int | None]]:
        """``item`` of each of ``rows``, all with outcome ``status``."""
        ident, position, hashes = self._identity, self._position, self._hash
        return [(ident[i], position[i], status, hashes[i]) for i in rows]
