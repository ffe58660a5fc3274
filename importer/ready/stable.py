"""``input.ready: {stable_for_s: N}``: wait until every file's size and modification time
have not changed for N seconds.

A file whose modification time is already N seconds old is ready at once (any write moves
it). Otherwise the run re-checks every ``min(1, N/10)`` seconds and waits, at most
``WAIT_FACTOR * N`` seconds in all; a file still changing then refuses the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: the longest wait, in multiples of ``stable_for_s``: a file that settles within the first
#: two thirds of it has time to show N quiet seconds
WAIT_FACTOR = 3


def _state(path: Path) -> tuple[int, float] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime


def unstable(
    paths: Sequence[Path],
    seconds: float,
    *,
    wait: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[Path, str]:
    """The files of ``paths`` not unchanged for ``seconds``, each with what was seen. With
    ``wait`` false (``preview``), judged on the modification times alone, without waiting."""
    start = clock()
    first = {p: _state(p) for p in paths}
    now_wall = time.time()
    # the monotonic moment since which each file has not changed
    quiet_since = {
        p: start - max(0.0, now_wall - s[1]) if s is not None else start for p, s in first.items()
    }
    last = dict(first)
    poll = min(1.0, seconds / 10)
    deadline = start + WAIT_FACTOR * seconds
    while True:
        now = clock()
        waiting = [p for p in paths if now - quiet_since[p] < seconds]
        if not waiting:
            return {}
        if not wait or now >= deadline:
            return {p: _seen(first[p], last[p], now - start, seconds, wait) for p in waiting}
        sleep(min(poll, max(0.0, deadline - now)))
        for p in waiting:
            state = _state(p)
            if state != last[p]:
                last[p] = state
                quiet_since[p] = clock()


def _seen(
    before: tuple[int, float] | None,
    after: tuple[int, float] | None,
    waited: float,
    seconds: float,
    waiting: bool,
) -> str:
    rule = f"(input.ready: {{stable_for_s: {seconds:g}}})"
    if after is None:
        return f"it disappeared while waiting for it to stay unchanged {rule}"
    if not waiting:
        age = max(0.0, time.time() - after[1])
        return f"it was modified {age:.1f} s ago, less than {seconds:g} s {rule}"
    if before is not None and before[0] != after[0]:
        change = f"its size went from {before[0]:,} to {after[0]:,} bytes"
    else:
        change = "it was modified again"
    return (
        f"still being written: {change} in {waited:.1f} s of waiting, never unchanged for "
        f"{seconds:g} s {rule}"
    )
