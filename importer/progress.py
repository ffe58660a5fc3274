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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

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


class _Line(tqdm):
    """tqdm's line with the rate always a number of rows per second (``{rate_noinv}``), and
    a pause without answers bringing the smoothed rate down as it goes on."""

    @property
    def format_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = super().format_dict
        ema_dt = self._ema_dt()  # None once closed: tqdm's last line is the plain average
        if ema_dt:
            ema_dn = self._ema_dn()
            waited = d["elapsed"] - (self.last_print_t - self.start_t)
            if waited > ema_dt:  # no answer for longer than usual: as if one came now
                a = self.smoothing
                pending = self.n - self.last_print_n
                late = ((1 - a) * ema_dn + a * pending) / ((1 - a) * ema_dt + a * waited)
                d["rate"] = min(d["rate"], late)
        if d["rate"] is None:  # rows over the time since the run started (tqdm's own rule)
            d["rate"] = self.n / d["elapsed"] if d["elapsed"] > 0 else 0.0
        return d


class ProgressBar:
    """The progress line on a terminal (``stream``), drawn by tqdm: rows answered of the
    total, percent, rows per second, the time left at that rate, the time so far, and the
    rejected and failed rows::

        3,000/6,000 rows  50% |#####-----| 1,012 rows/s  ETA 00:03  [00:03], rejected=0 failed=0

    ``~6,100`` marks an estimated total (tqdm's ``desc``, before the total); ``/? rows`` a
    total not known yet. tqdm redraws only when it is updated, so a thread of our own
    refreshes the line every ``interval`` seconds once the first counts arrive (the time so
    far and the rate move even while no answer comes).

    The rate: the counts feed tqdm (``update`` by the rows answered since the last call),
    which keeps an exponential moving average (``smoothing`` 0.1) of the rows and of the time
    between its redraws that moved (``mininterval``: at least ``interval`` apart). The ratio of
    the two averages is a weighted average of rates the run achieved over real intervals, so
    it is never above what the run does; with 0.1 the weight lies mostly on the last ten
    samples, the last 5 s or so (0.3, tqdm's default, follows single bursts of answers; 0,
    the average since the start, lags a run that sped up or slowed down). A pause without
    answers brings it down as it goes on (as if an answer came now). tqdm's clock starts when
    the run started (``elapsed_ms``), so its first interval counts the run's start-up, and its
    last line (``close``) shows rows answered over the run's own time: the rate it
    achieved."""

    #: the line with a total (``desc``: ``~`` when estimated), and without one yet
    FORMAT = ("{n:,}/{desc}{total:,} rows {percentage:3.0f}% |{bar}| {rate_noinv:,.0f} rows/s"
              "  ETA {remaining}  [{elapsed}]{postfix}")  # fmt: skip
    FORMAT_NO_TOTAL = "{n:,}/? rows {rate_noinv:,.0f} rows/s  [{elapsed}]{postfix}"

    def __init__(self, stream: TextIO, *, interval: float = 0.5, smoothing: float = 0.1) -> None:
        self.stream = stream
        self.interval = interval
        self.smoothing = smoothing
        self.bar: Any = None  # made at the first counts (tqdm draws when it is made)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._gone = False  # the terminal is gone
        self._thread: threading.Thread | None = None

    def __call__(self, counts: Mapping[str, int]) -> None:
        """New counts (``RunProgress.counts``): redraw."""
        with self._lock:
            if self.bar is None:
                self._open(counts.get("elapsed_ms", 0) / 1000)
        self._draw(lambda: self._set(counts))
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="dmimport-progress")
            self._thread.daemon = True
            self._thread.start()

    def _open(self, elapsed: float) -> None:
        # a terminal that says it is 0x0 (a pty nobody sized: script(1), some containers)
        # would get no line at all from tqdm: 80 columns (and 24 rows) instead
        columns, rows = _size(self.stream)
        sized = columns > 0 and rows > 0
        self.bar = _Line(total=None, unit="rows", file=self.stream, dynamic_ncols=sized,
                         ncols=None if sized else columns or 80,
                         nrows=None if sized else rows or 24, mininterval=self.interval, miniters=1,
                         smoothing=self.smoothing, ascii="-#", bar_format=self.FORMAT_NO_TOTAL,
                         delay=1)  # fmt: skip
        # the run's clock: its first rate interval starts when the run did (``delay`` kept
        # tqdm from drawing the line before; it draws from now on)
        self.bar.start_t = self.bar.last_print_t = time.time() - elapsed
        self.bar.delay = 0

    def _set(self, counts: Mapping[str, int]) -> None:
        bar = self.bar
        total = counts.get("total", 0) or None
        bar.total = total
        bar.bar_format = self.FORMAT if total else self.FORMAT_NO_TOTAL
        bar.set_description_str("" if counts.get("total_exact", 0) else "~", refresh=False)
        rejected, failed = counts.get("rejected", 0), counts.get("failed", 0)
        bar.set_postfix_str(f"rejected={rejected:,} failed={failed:,}", refresh=False)
        answered = counts.get("answered", counts.get("rows", 0))
        if answered > bar.n:
            bar.update(answered - bar.n)  # feeds the rate's average, redraws if due
        else:
            bar.refresh()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw(lambda: self.bar.refresh())

    def _draw(self, action: Callable[[], object]) -> None:
        with self._lock:
            if self.bar is None or self._gone:
                return
            try:
                action()
            except (OSError, ValueError):  # the terminal has gone: draw no more
                self._gone = True
                self._stop.set()

    def clear(self) -> None:
        """Blank the line (before a log line is written there; the next draw puts it back)."""
        self._draw(lambda: self.bar.clear())

    def close(self) -> None:
        """Stop redrawing; the last line, with the run's average rate, stays on screen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._draw(lambda: self.bar.close())


def _size(stream: TextIO) -> tuple[int, int]:
    """The columns and rows of the terminal ``stream`` is on (0 where it does not say)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return size.columns, size.lines
