"""The shared vocabulary of a row's fate, at the bottom of the package: what one request got
back (``Outcome``: a ``Response`` or a ``TransportFailure``) and what became of one row
(``Status``, ``RowResult``).

The bulk sender, its transport, the SDK (``importer.client``), the ledger's recorder and the
wiring that turns answers into report lines (``producer``, ``outputs``) all speak these; none
of them depends on ``requests``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from .errcodes import Category, ErrCode


class Status(IntEnum):
    """A row's final status. The integer values index arrays; the names go in reports."""

    OK = 0
    REJECTED = 1
    FAILED = 2
    NOT_SENT = 3
    UNCHANGED = 4
    #: dry run: passed every local check, would be sent
    VALID = 5
    #: resumed run: the run it continues delivered this row (or a later row of its identity)
    SKIPPED = 6
    #: ``job.duplicates``: another row of the run with the same identity is sent instead
    #: (``importer.duplicates``); never sent, never retried
    SKIPPED_DUPLICATE = 7

    @property
    def label(self) -> str:
        return self.name.lower()


#: the reason given for every row an aborted run left behind (the abort's own reason is in
#: the summary)
NOT_SENT_MESSAGE = "not sent: the run was aborted"
#: the reason given instead for every row an interrupted run (SIGINT, SIGTERM) did not send
INTERRUPTED_MESSAGE = "not sent: the run was interrupted"
#: the reason given instead for every row not sent because the account's requests reached
#: ``send.daily_quota`` (``--within-quota`` stops there on purpose): not an abort
QUOTA_MESSAGE = "not sent: the daily quota ran out (send.daily_quota); the next run resumes it"


@dataclass
class RowResult:
    """What became of one row.

    ``attempts`` and ``latency_ms`` are those of the request that decided the row (its
    retries included); ``request_id`` names that request (unique in the run, across
    ``--workers`` processes too; None: no request decided it). ``ambiguous``: some attempt of a
    request that carried the row got no answer after the whole request was sent (a timeout, or
    the connection closed), so the platform may still apply that request late.
    """

    status: Status
    errcode: int | None
    errmsg: str
    attempts: int
    latency_ms: float
    request_id: int | None = None
    ambiguous: bool = False


def not_sent() -> RowResult:
    """The result of a row the run left behind (it stopped or aborted before sending it)."""
    return RowResult(Status.NOT_SENT, None, NOT_SENT_MESSAGE, 0, 0.0)


#: HTTP statuses worth retrying: overload, server faults, and a server-side request timeout.
RETRYABLE_STATUSES = frozenset({408, 429})
#: HTTP statuses that say the configuration (URL, path, proxy credentials) is wrong.
FATAL_STATUSES = frozenset({401, 403, 404, 405, 407})


class TransportKind(StrEnum):
    """Why a call got no contract response."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP_STATUS = "http_status"
    PROTOCOL = "protocol"
    TLS = "tls"


@dataclass(frozen=True)
class Response:
    """The server's ``{"errcode": N, "errmsg": "..."}`` for one call."""

    errcode: ErrCode | int
    errmsg: str
    http_status: int = 200
    latency_ms: float = 0.0

    @property
    def category(self) -> Category | None:
        """The errcode's category, None for a number the seed does not define."""
        return self.errcode.category if isinstance(self.errcode, ErrCode) else None

    @property
    def ok(self) -> bool:
        return self.errcode == 0

    @property
    def retryable(self) -> bool:
        """10000, and 20004 (re-signed; fatal when it repeats). Unknown codes: not retryable."""
        return isinstance(self.errcode, ErrCode) and self.errcode.retryable

    @property
    def fatal(self) -> bool:
        """10003 and 20000: the run's configuration is wrong."""
        return isinstance(self.errcode, ErrCode) and self.errcode.fatal

    def as_dict(self) -> dict[str, Any]:
        """What the JS SDK hands its callback: ``{"errcode": N, "errmsg": "..."}``."""
        return {"errcode": int(self.errcode), "errmsg": self.errmsg}


@dataclass(frozen=True)
class TransportFailure:
    """A call that got no contract response. ``message`` never contains the SECRET."""

    kind: TransportKind
    message: str
    http_status: int | None = None
    #: the raw ``Retry-After`` header of a 429/503, if any
    retry_after: str | None = None
    latency_ms: float = 0.0
    #: a reused keep-alive connection the server had already closed: the request never
    #: reached the server, so it may be retried at once, without backoff (set by
    #: ``importer.send.transport``)
    stale: bool = False
    #: the connection closed while the request body was being sent: like HTTP 413, the
    #: request was too big for the platform (set by ``importer.send.transport``)
    while_sending: bool = False
    #: the whole request went out and then no answer came (a timeout, the connection closed):
    #: the platform may have applied it, and may still apply it late (set by
    #: ``importer.send.transport``)
    sent: bool = False

    @property
    def ok(self) -> bool:
        return False

    @property
    def too_big(self) -> bool:
        """The platform found the request too big (HTTP 413, or it closed the connection while
        the body was being sent): a smaller batch may pass."""
        return self.http_status == 413 or self.while_sending

    @property
    def retryable(self) -> bool:
        if self.kind is TransportKind.TLS:
            return False
        if self.kind is TransportKind.HTTP_STATUS:
            status = self.http_status or 0
            return status >= 500 or status in RETRYABLE_STATUSES
        return True

    @property
    def fatal(self) -> bool:
        """Every request would fail the same way: TLS verification failed, or a redirect, 401,
        403, 404 or 405 (wrong URL, path or credentials). Other non-retryable statuses (400,
        413, ...) concern the one request."""
        if self.kind is TransportKind.TLS:
            return True
        status = self.http_status or 0
        return self.kind is TransportKind.HTTP_STATUS and (
            300 <= status < 400 or status in FATAL_STATUSES
        )

    def as_dict(self) -> dict[str, Any]:
        """Callback form; ``errcode`` is None so ported ``resp.errcode == 0`` checks fail."""
        return {
            "errcode": None,
            "errmsg": self.message,
            "kind": self.kind.value,
            "http_status": self.http_status,
            "retry_after": self.retry_after,
        }


Outcome = Response | TransportFailure


def describe(outcome: Outcome) -> str:
    """One line for a message: ``errcode errmsg`` of an answer, else the failure's message."""
    if isinstance(outcome, Response):
        return f"{int(outcome.errcode)} {outcome.errmsg}"
    return outcome.message
