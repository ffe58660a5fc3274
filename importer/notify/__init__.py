"""Telling the team: the run's summary to the webhooks of ``notify:`` (docs/notify.md).

``importer.run`` and ``importer.retry`` call ``notify_run`` once the run's report is written
(``notify_error`` when the run stopped with an error); a dry run notifies nobody. Each entry
fires by its ``on:``: ``failure`` (exit code not 0), ``always``, or ``held`` (a guard held the
run, exit 8, or its input was incomplete, exit 7). A webhook that fails -- no answer within
``timeout_s``, an HTTP error, or the service's own refusal (``errcode`` / ``code`` not 0) --
is tried once more, then logged as a warning; it never changes the run's exit code.

The message (``message.Message``) holds no SECRET, no webhook URL or secret and no unmasked
key value. The URLs and secrets come from the environment variables the entries name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import exitcodes
from ..config import Config, NotifyHook
from ..report import RunSummary
from ..secrets import redact
from . import services
from .message import GATE_CODES, Message, from_error, from_summary

__all__ = [
    "Delivery",
    "Message",
    "fires",
    "notify_error",
    "notify_run",
    "send",
]

log = logging.getLogger("importer.notify")

#: attempts per webhook: the first, and one more after a failure that may pass
ATTEMPTS = 2
#: seconds between them
RETRY_PAUSE_S = 1.0


@dataclass(frozen=True)
class Delivery:
    """How one webhook went: ``index`` in ``notify:``, its ``type``, whether the service took
    the message, after how many ``attempts``, and ``problem`` when it did not (redacted)."""

    index: int
    type: str
    delivered: bool
    attempts: int
    problem: str | None = None


def fires(hook: NotifyHook, exit_code: int) -> bool:
    """Whether ``hook`` is told about a run that exited ``exit_code``."""
    if hook.on == "always":
        return True
    if hook.on == "held":
        return exit_code in GATE_CODES
    return exit_code != exitcodes.OK


def notify_run(config: Config, summary: RunSummary) -> list[Delivery]:
    """Tell ``config.notify``'s webhooks about the run ``summary`` reports (a dry run: none)."""
    if summary.mode == "dry-run":
        return []
    return send(config.notify, from_summary(summary))


def notify_error(config: Config, exc: BaseException) -> list[Delivery]:
    """Tell ``config.notify``'s webhooks about a run that stopped with ``exc``."""
    code = exitcodes.for_exception(exc)
    return send(config.notify, from_error(config.job_name, exc, code))


def send(
    hooks: list[NotifyHook], message: Message, *, clock: Callable[[], float] = time.time
) -> list[Delivery]:
    """Post ``message`` to each of ``hooks`` whose ``on:`` fires for its exit code, one after
    the other; a failure is logged as a warning (never raised)."""
    out = []
    for index, hook in enumerate(hooks):
        if not fires(hook, message.exit_code):
            continue
        delivery = _deliver(index, hook, message, clock)
        if not delivery.delivered:
            log.warning(
                "notify[%d] (%s, $%s): not delivered after %d attempt%s: %s (the run's exit code "
                "stays %d)",
                index,
                hook.type,
                hook.url_env,
                delivery.attempts,
                "" if delivery.attempts == 1 else "s",
                delivery.problem,
                message.exit_code,
            )
        out.append(delivery)
    return out


def _deliver(
    index: int, hook: NotifyHook, message: Message, clock: Callable[[], float]
) -> Delivery:
    url = os.environ.get(hook.url_env, "").strip()
    if not url:
        unset = f"environment variable {hook.url_env} is not set"
        return Delivery(index, hook.type, False, 0, unset)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # the value is never quoted: it is a token-bearing URL, or something worse
        return Delivery(
            index,
            hook.type,
            False,
            0,
            f"environment variable {hook.url_env} does not hold an http:// or https:// URL",
        )
    secret = None
    if hook.secret_env is not None:
        secret = os.environ.get(hook.secret_env, "").strip()
        if not secret:
            return Delivery(
                index,
                hook.type,
                False,
                0,
                f"environment variable {hook.secret_env} is not set (it must hold the "
                "signing secret)",
            )
    problem: str | None = None
    attempts = 0
    for attempts in range(1, ATTEMPTS + 1):
        target, body = services.request(hook, message, url, secret, clock())
        problem, again = _post(hook.type, target, body, hook.timeout_s)
        if problem is None:
            return Delivery(index, hook.type, True, attempts)
        if not again or attempts == ATTEMPTS:
            break
        time.sleep(RETRY_PAUSE_S)
    secrets = [url, *([secret] if secret else [])]
    return Delivery(index, hook.type, False, attempts, redact(problem or "", secrets))


def _post(kind: str, url: str, body: bytes, timeout_s: float) -> tuple[str | None, bool]:
    """POST ``body`` to ``url``: (what went wrong or None, whether trying again may help).
    The whole exchange gets ``timeout_s`` (a service that answers a byte at a time does not
    hold the run past it: the socket's own timeout is per read)."""
    result: list[tuple[str | None, bool]] = []
    worker = threading.Thread(
        target=lambda: result.append(_exchange(kind, url, body, timeout_s)),
        name="dmimport-notify",
        daemon=True,  # a service still dripping its answer is left to the socket's timeout
    )
    worker.start()
    worker.join(timeout_s)
    if not result:
        return f"no answer within {timeout_s:g} s", True
    return result[0]


def _exchange(kind: str, url: str, body: bytes, timeout_s: float) -> tuple[str | None, bool]:
    # only a run that tells someone pays for them (a run loads no requests: test_layout)
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError

    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "dmimport"}
    try:
        # a Session per call: the environment's proxies, no pooled connection kept after it
        with (
            requests.Session() as session,
            session.post(
                url,
                data=body,
                headers=headers,
                timeout=timeout_s,
                # a POST's 301/302/303 would be followed with a GET without the message, and
                # the page it lands on may well answer 200
                allow_redirects=False,
                stream=True,
            ) as answer,
        ):
            status = answer.status_code
            raw = answer.raw.read(65536, decode_content=True)
    except (requests.RequestException, Urllib3Error, OSError, ValueError) as exc:
        cause = _cause(exc)
        if isinstance(exc, requests.Timeout | ReadTimeoutError) or isinstance(cause, TimeoutError):
            return f"no answer within {timeout_s:g} s", True
        return f"could not send: {str(cause) or type(cause).__name__}", True
    if 300 <= status < 400:
        return (
            f"HTTP {status}: a redirect, not followed (the message would not go with it); "
            "set the URL of the webhook itself",
            False,
        )
    if not 200 <= status < 300:
        return f"HTTP {status}", status == 429 or status >= 500
    return services.answer_problem(kind, status, raw), False


def _cause(exc: BaseException) -> BaseException:
    """The innermost error under ``exc`` (a refused connection's ``OSError``): requests' and
    urllib3's own messages quote the URL, which carries the webhook's token."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return exc
