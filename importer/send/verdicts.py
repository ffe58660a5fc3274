"""What each attempt's outcome means for the run: retry it, report it, bisect the batch it
answered, or stop the run (and with which words)."""

from __future__ import annotations

from typing import NamedTuple

from ..errcodes import Category, ErrCode
from ..outcomes import Outcome, Response, TransportFailure
from ..protocol import Profile


class Verdict(NamedTuple):
    """``retry``: the policy retries the outcome; ``abort``: the reason to stop the run
    (None: go on), with ``errcode`` when an errcode made it."""

    retry: bool
    abort: str | None = None
    errcode: int | None = None


GO_ON = Verdict(False)
RETRY = Verdict(True)


class Verdicts:
    """Judges one sender's outcomes under ``profile``; counts the signature failures in a row
    (20004 is fatal only when it repeats ``abort_after_signature_failures`` times)."""

    def __init__(
        self, profile: Profile, kind: str, shown_url: str, abort_after_signature_failures: int
    ) -> None:
        self.profile = profile
        self.kind = kind
        self.shown_url = shown_url
        self.abort_after_signature_failures = abort_after_signature_failures
        self._signature_failures = 0

    def judge(self, outcome: Outcome) -> Verdict:
        """Classify one attempt (called exactly once per attempt)."""
        if isinstance(outcome, Response):
            code = outcome.errcode
            if not isinstance(code, ErrCode):
                return GO_ON  # a code the seed does not define: report it, do not guess
            category = self.profile.category(code)
            if category is Category.SUCCESS:
                self._signature_failures = 0
                return GO_ON
            if category is Category.FATAL:
                return Verdict(False, self._fatal_answer(code, outcome.errmsg), int(code))
            if category is Category.FATAL_IF_REPEATED:
                self._signature_failures += 1
                if self._signature_failures >= self.abort_after_signature_failures:
                    reason = (
                        f"{int(code)} {code.description} {self._signature_failures} times in a "
                        "row: check the SECRET and this machine's clock"
                    )
                    return Verdict(False, reason, int(code))
                return RETRY
            return RETRY if category is Category.RETRYABLE else GO_ON
        if outcome.fatal:
            return Verdict(False, self._fatal_failure(outcome))
        return RETRY if outcome.retryable else GO_ON

    def bisects(self, outcome: Outcome) -> bool:
        """An answer that says some record of the request is wrong (a row error, or a code
        the seed does not define): a batch answered so is resolved by bisection; a single
        record answered so is refused."""
        if not isinstance(outcome, Response) or outcome.errcode == ErrCode.OK:
            return False
        code = outcome.errcode
        return not isinstance(code, ErrCode) or self.profile.category(code) is Category.ROW_ERROR

    def _fatal_answer(self, code: ErrCode, errmsg: str) -> str:
        """The abort reason for a fatal errcode, with the profile's advice when it has some."""
        # the platform's message may already start with the code's description (in any case):
        # '20000 Authentication failed: unknown secret', never said twice
        said = errmsg.strip()
        if not said.casefold().startswith(code.description.casefold()):
            said = f"{code.description}: {said}" if said else code.description
        advice = self.profile.advice(code, self.kind)
        return f"{int(code)} {said}" + (f": {advice}" if advice else "")

    def _fatal_failure(self, outcome: TransportFailure) -> str:
        """The abort reason for a failure every request would meet: a wrong URL (named, the
        SECRET shown as ``***``), a proxy refusing us, a certificate not trusted."""
        status, message = outcome.http_status, outcome.message
        if status is None:
            return f"{message}: every request would fail the same way"
        if status == 407:
            return (
                f"{message} from the proxy for {self.shown_url}: check the proxy settings "
                "(HTTP_PROXY, HTTPS_PROXY) and its credentials"
            )
        return f"{message} from {self.shown_url}: check target.base_url and target.path"
