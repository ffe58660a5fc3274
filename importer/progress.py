"""A run's progress: the rows answered so far and the run's total (``RunProgress``, fed by
``importer.outputs``), and the line ``dmimport`` draws from them on a terminal
(``ProgressBar``).

A row is *answered* once it has its final outcome: ``ok`` or ``failed`` when the platform
answers its request, ``rejected``, ``skipped`` or ``unchanged`` when its batch is handed to the
sender (nothing is sent for it), ``not_sent`` when the run ends without sending it; in a dry run
(``validate``), when it is checked. The progress callback (``importer.run(progress=...)``)
receives, besides the reported rows by status (``rows``, ``ok``, ``rejected``, ...):

- ``answered``: the rows answered so far;
- ``total``: the run's rows: exact (``total_exact`` 1) once the files are read, or when the
  daily quota's counting pre-pass read them before sending (``importer.quota``) or the run
  retries known lines; before that an estimate (``total_exact`` 0): the files' lines, counted
  on a thread of their own, or for compressed files the rows read scaled by the bytes read out
  of the files' size (0: nothing to go on yet);
- ``bytes_read``, ``bytes_total``: how much of the files (as stored) is read;
- ``elapsed_ms``: the time since the run started (the summary's ``duration_s`` at the end).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

import numpy as np

from .load import Source
from .outcomes import Status
from .producer import BatchState, Reading
from .quota import file_lines


class RunProgress:
    """Counts a run's answered rows as batches are handed to the sender and finished, and
    makes the counts handed to the progress callback (``counts``). Thread-safe: batches are
    finished on the loop thread and on the producer's."""

    def __init__(self, known_total: int | None = None) -> None:
        #: the run's rows when known before they are read (the quota's pre-pass; a retry)
        self.known_total = known_total
        #: the files' lines (less the CSV headers), when counted (``count_lines``): the total
        #: until the files are read, unless it is known
        self.lines: int | None = None
        #: how far the producer has read the files (set when it starts)
        self.reading: Reading | None = None
        self._settled = 0  # rows answered, counted here (not the platform's answers)
        self._platform_done = 0  # platform answers of finished batches (counted in _settled)
        self._handed: set[int] = set()
        self._lock = threading.Lock()
        self._over = threading.Event()

    def over(self) -> None:
        """The run is over: stop counting lines."""
        self._over.set()

    def handed(self, state: BatchState) -> None:
        """``state`` goes to the sender: its rows that need no send are answered now."""
        with self._lock:
            self._handed.add(id(state))
            self._settled += _lines(state) - len(state.valid)

    def finished(self, state: BatchState, lines: int) -> None:
        """``state`` is reported, in ``lines`` report lines: all answered."""
        with self._lock:
            if id(state) not in self._handed:
                self._settled += lines
                return
            self._handed.discard(id(state))
            self._settled += len(state.valid)
            sent = state.status[state.valid]
            self._platform_done += int(np.count_nonzero(sent != int(Status.NOT_SENT)))

    def reported(self, lines: int) -> None:
        """``lines`` report lines of rows that were never in a batch handed to the sender."""
        with self._lock:
            self._settled += lines

    def counts(
        self, rows: int, by_status: Mapping[str, int], platform: Counter[str], elapsed: float
    ) -> dict[str, int]:
        """The counts for the progress callback: ``rows`` reported so far, ``by_status``,
        ``platform``: the rows the platform answered so far, by status; ``elapsed``: seconds
        since the run started."""
        answered_by_platform = sum(platform.values())
        with self._lock:
            answered = self._settled + answered_by_platform - self._platform_done
        reading = self.reading
        exact = True
        if reading is not None and reading.done:
            total = reading.rows
        elif self.known_total is not None:
            total = self.known_total
        elif self.lines is not None:
            exact, total = False, self.lines
        elif reading is not None and reading.rows and 0 < reading.bytes_read < reading.bytes_total:
            # (a file read into the buffers whole tells nothing: unknown until it is parsed)
            exact = False
            total = round(reading.rows * reading.bytes_total / reading.bytes_read)
        else:
            exact, total = False, 0
        return {
            "rows": rows,
            **by_status,
            "answered": answered,
            "total": max(total, answered) if total else 0,
            "total_exact": int(exact),
            "bytes_read": reading.bytes_read if reading is not None else 0,
            "bytes_total": reading.bytes_total if reading is not None else 0,
            "elapsed_ms": round(elapsed * 1000),
        }

    def begin(self, known_total: int | None, sources: Sequence[Source]) -> None:
        """The run starts: its total if known (else its lines are counted: ``count_lines``)."""
        self.known_total = known_total
        if known_total is None:
            self.count_lines(sources)

    def count_lines(self, sources: Sequence[Source]) -> None:
        """Count the lines of ``sources`` on a thread of its own, at C speed (a row takes a
        line at least: CSV values with line breaks make the count a little high), for an
        estimate of the total while the files are read: a read position tells little, with
        the megabytes the CSV reader reads ahead. Not for compressed files (their rows are
        estimated from the bytes read) nor Parquet (the bytes read follow its rows). The
        count stops when the run ends (``over``)."""
        if any(s.compressed or s.format == "parquet" for s in sources):
            return

        def count() -> None:
            n = 0
            for source in sources:
                try:
                    n += file_lines(source.path, stop=self._over) - (source.format == "csv")
                except OSError:
                    return
                if self._over.is_set():
                    return
            self.lines = n

        threading.Thread(target=count, name="dmimport-lines", daemon=True).start()


def _lines(state: BatchState) -> int:
    """The report lines a batch makes now (its held rows are reported at the end)."""
    return state.mapped.n + len(state.batch.bad) - len(state.held)


class ProgressBar:
    """The progress line on a terminal (``stream``): rows answered of the total, percent,
    rows per second over the last ``window`` seconds of answers, the time left at that rate,
    the time so far, and the rejected and failed rows::

        3,000/6,000 rows  50% |######------| 1,012 rows/s  ETA 0:03  [0:03]  rejected=0 failed=0

    ``~6,100`` marks a total estimated from the bytes read. The line is redrawn every
    ``interval`` seconds by a thread of its own once the first counts arrive (the time so far
    and the rate move even while no answer comes), and at each update. The last line (``close``)
    shows the run's own average: rows answered over the time since the run started
    (``elapsed_ms``; else since the bar was made), so the rate shown last is the one the run
    achieved."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 0.5,
        window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.window = window
        self.clock = clock
        self.started = clock()
        self.counts: dict[str, int] | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, counts: dict[str, int]) -> None:
        """New counts (``RunProgress.counts``): redraw."""
        with self._lock:
            self.counts = dict(counts)
            if "elapsed_ms" in counts:  # the run's own clock, from when it started
                self.started = self.clock() - counts["elapsed_ms"] / 1000
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="dmimport-progress")
            self._thread.daemon = True
            self._thread.start()
        self.draw()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self, *, final: bool = False) -> None:
        with self._lock:
            if self.counts is None:
                return
            line = self.render(self.counts, final=final)
            width = _width(self.stream)
            try:
                self.stream.write("\r" + line[: width - 1] + "\x1b[K" + ("\n" if final else ""))
                self.stream.flush()
            except (OSError, ValueError):  # the terminal has gone
                self._stop.set()

    def clear(self) -> None:
        """Blank the line (before a log line is written there; the next draw puts it back)."""
        with self._lock:
            if self.counts is not None:
                try:
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass

    def render(self, counts: Mapping[str, int], *, final: bool = False) -> str:
        """The line for ``counts`` now (a sample of the rate window is taken)."""
        now = self.clock()
        answered = counts.get("answered", counts.get("rows", 0))
        total = counts.get("total", 0)
        exact = bool(counts.get("total_exact", 0))
        elapsed = now - self.started
        if final:
            rate: float | None = answered / elapsed if elapsed > 0 else None
        else:
            rate = self._rate(now, answered)
        if total:
            share = min(1.0, answered / total)
            head = f"{answered:,}/{'' if exact else '~'}{total:,} rows {share * 100:3.0f}%"
            bar = _bar(share, 20)
            left = max(0, total - answered)
            eta = _clock(left / rate) if rate else ("0:00" if not left else "-:--")
        else:
            head, bar, eta = f"{answered:,} rows   ?%", " " * 20, "-:--"
        speed = f"{rate:,.0f} rows/s" if rate is not None else "- rows/s"
        tail = f"rejected={counts.get('rejected', 0):,} failed={counts.get('failed', 0):,}"
        return f"{head} |{bar}| {speed}  ETA {eta}  [{_clock(elapsed)}]  {tail}"

    def _rate(self, now: float, answered: int) -> float | None:
        """Rows answered per second over the last ``window`` seconds (None before a second
        of answers has been seen)."""
        samples = self._samples
        samples.append((now, answered))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        t0, a0 = samples[0]
        if now - t0 < 1.0 or answered == 0:
            return None
        return (answered - a0) / (now - t0)

    def close(self) -> None:
        """Stop redrawing; the last line, with the run's average rate, stays on screen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.draw(final=True)


def _bar(share: float, width: int) -> str:
    full = int(share * width)
    return "#" * full + "-" * (width - full)


def _clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _width(stream: TextIO) -> int:
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        width = 80
    return width if width > 20 else 80
