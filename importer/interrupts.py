"""What stops a run before its last row is sent, from any thread: a full disk, SIGINT and
SIGTERM.

A full disk (the report's or the ledger's) stops the sending as a fatal answer does: no new
row is sent, and the rows not sent end ``not_sent`` (``disk_full``). A signal stops it the same
way and the run ends ``interrupted`` (``signal_handlers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, Literal

from .errors import DiskFullError, Interrupted
from .exitcodes import STOP_SIGNALS
from .send import MultiProcessSender, Sender


class Stopper:
    """Stops one run's sending. ``stop`` is set once nothing more will be sent (the producer
    then builds no more bodies)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        #: what a signal does now: "prepare" raises Interrupted, "send" stops the sending,
        #: "finish" (every row has its outcome, the report is being written) waits for it
        self.phase: Literal["prepare", "send", "finish"] = "prepare"
        #: the signal number that stopped the sending
        self.interrupted: int | None = None
        self._signals = 0
        self._sender: Sender | MultiProcessSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def sending(self, sender: Sender | MultiProcessSender, loop: asyncio.AbstractEventLoop) -> None:
        """``sender`` sends on ``loop`` from now on."""
        self._sender, self._loop = sender, loop
        self.phase = "send"

    @property
    def quota_exhausted(self) -> bool:
        """The sending stopped because the account's requests reached ``send.daily_quota``."""
        return self._sender is not None and self._sender.quota_exhausted

    def disk_full(self, exc: DiskFullError) -> None:
        """A disk is full: no new row is sent, and the rows not sent yet end ``not_sent``,
        as when a fatal answer aborts a run. Called on any thread."""
        self.stop.set()
        sender, loop = self._sender, self._loop
        if sender is None or loop is None:
            return  # not sending (validate): the caller stops by itself

        def stop() -> None:
            if not sender.aborted:
                sender.abort(str(exc))

        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            stop()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is over: nothing to stop
                loop.call_soon_threadsafe(stop)

    @contextlib.contextmanager
    def signal_handlers(self, enabled: bool = True) -> Iterator[None]:
        """SIGINT and SIGTERM in the ``with`` block (when ``enabled``, main thread only). The
        first one while sending stops the sending: requests in flight end, retry waits are
        cut short, every row not sent is ``not_sent``, the report is written and the run is
        ``interrupted`` in the ledger (resumed by the next run); exit code 128 + the signal
        number. Before sending, it raises ``Interrupted``; after, the report being written is
        finished. A second signal raises ``Interrupted`` at once."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1 and self.phase == "send":
            self.interrupted = signum
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is over: nothing to stop
                    loop.call_soon_threadsafe(self._interrupt, signum)
            return
        if self._signals == 1 and self.phase == "finish":
            return
        raise Interrupted(signum)

    def _interrupt(self, signum: int) -> None:
        """On the loop: stop the sending (see ``signal_handlers``)."""
        self.interrupted = signum
        self.stop.set()
        sender = self._sender
        if sender is not None and not sender.stopping:
            sender.stop(f"interrupted by {signal.Signals(signum).name}")
