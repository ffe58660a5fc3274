"""``select_changes``: which valid rows of a plan are new or changed (issue 15).

The reference rule every engine must agree with (it mirrors ``importer.ledger.classify`` for a
changed-only run). The state maps an identity hash to the body hash of the body last delivered
for it; only valid rows are given.

- ``by_last`` (``user`` jobs, judged by their last row): an identity is unchanged, all its rows
  dropped, when the body hash of its LAST row in file order equals the state's hash; otherwise
  ALL its rows are kept, in order (earlier rows may carry values the last leaves empty:
  ``dmimport run``'s ``job.duplicates`` then decides as for a file).
- otherwise (``event``, ``user_delete``): per identity, the rows before its first row whose hash
  differs from the state's (every row, when the identity is not in the state) are unchanged;
  that row and every later row of the identity are kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["by_last_for", "select_changes"]


def by_last_for(kind: str) -> bool:
    """Whether a job of ``kind`` judges an identity by its last row (``user`` jobs)."""
    return kind == "user"


def select_changes(
    identity_hash: np.ndarray,
    order: np.ndarray,
    body_hash: np.ndarray,
    state_hash: np.ndarray,
    in_state: np.ndarray,
    by_last: bool,
) -> np.ndarray:
    """The rows to send (a bool per row, in the input's order) among valid rows given in any
    order: ``identity_hash`` and ``body_hash`` (int64, ``outcomes_of``'s), ``order`` (int64,
    a row's rank in file order: (source, row) order), ``state_hash`` and ``in_state`` (the
    state's body hash of the row's identity, and whether the state holds it; ``state_hash``
    is ignored where ``in_state`` is false). Vectorised: one sort, no Python loop."""
    ident = np.asarray(identity_hash, dtype=np.int64)
    n = ident.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    differs = ~np.asarray(in_state, dtype=bool) | (
        np.asarray(body_hash, dtype=np.int64) != np.asarray(state_hash, dtype=np.int64)
    )
    perm = np.lexsort((np.asarray(order, dtype=np.int64), ident))
    ids = ident[perm]
    diff = differs[perm]
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(ids[1:], ids[:-1], out=start[1:])
    group = np.cumsum(start) - 1
    if by_last:
        last = np.empty(n, dtype=bool)
        last[-1] = True
        last[:-1] = start[1:]
        chosen = diff[np.flatnonzero(last)][group]
    else:
        seen = np.cumsum(diff, dtype=np.int64)
        before = (seen - diff)[np.flatnonzero(start)]  # the differing rows before each group
        chosen = seen - before[group] > 0
    out = np.empty(n, dtype=bool)
    out[perm] = chosen
    return out
