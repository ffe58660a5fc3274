"""What a report may show of a row's personal data (``report.mask_pii``).

Phones and e-mails are masked the way the seed does (``183****6527``, ``ti****@qdum.com``):
in a row's identity, in the values a message quotes, and wherever a message names the row's
own customer keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def mask_value(text: str) -> str:
    """Mask a phone (``183****6527``) or an email (``ti****@qdum.com``) the way the seed does."""
    if "@" in text:
        local, _, domain = text.partition("@")
        keep = local[:2]
        return f"{keep}****@{domain}"
    if len(text) >= 7:
        return f"{text[:3]}****{text[-4:]}"
    return "****"


_QUOTED = re.compile(r"'([^']*)'")
_PII_LIKE = re.compile(r"\d{7,}|@")


def mask_quoted(message: str) -> str:
    """Mask values quoted in a reason (``'13800138000' is not ...``) that look like a phone
    or an email: a local rejection quotes the offending cell."""

    def repl(m: re.Match[str]) -> str:
        value = m.group(1)
        return f"'{mask_value(value)}'" if _PII_LIKE.search(value) else m.group(0)

    return _QUOTED.sub(repl, message)


#: an e-mail address, or a phone-like run of 7+ digits (``+``, single spaces or dashes between)
_PII_TOKEN = re.compile(
    r"(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)|(?<![\d+])(?P<phone>\+?\d(?:[ -]?\d){6,})(?!\d)"
)
#: a date (``2024-12-01``, ``2024-12-01 10``) is not a phone, though its digits run as long
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?: \d{1,2})?")
_ASCII_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def mask_pii_text(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with the given values (a row's own key values: a platform's message may name
    the customer), every e-mail- and phone-like token, and quoted phones and e-mails masked
    the way ``mask_value`` does (``138****5678``, ``al****@corp.cn``)."""
    for value in values:
        if len(value) >= 3 and value in text:
            text = _replace_word(text, value, mask_value(value))
    text = mask_quoted(text)

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if m.group("phone") is not None and (
            _DATE.fullmatch(token) or _in_name(text, m.start(), m.end())
        ):
            return token
        return mask_value(token)

    return _PII_TOKEN.sub(repl, text)


#: a word that names a file or folder: a ``/`` and an ASCII letter in it
_PATH_WORD = re.compile(r"[^\s'\"]*/[^\s'\"]*")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _in_name(text: str, start: int, end: int) -> bool:
    """Whether the digits at ``text[start:end]`` are part of a name, not a phone: joined to
    an ASCII letter (a run id ``20261206T021500-3fa2c1``, a hash), or inside a path (the
    report folder ``reports/nightly-20261206T021500-3fa2c1/plan.json`` an error names, which
    the reader copies into ``--approve``)."""
    if (start > 0 and text[start - 1] in _LETTERS) or (end < len(text) and text[end] in _LETTERS):
        return True
    for word in _PATH_WORD.finditer(text):
        if word.start() <= start and end <= word.end():
            return any(c in _LETTERS for c in word.group(0))
    return False


#: a value ``mask_value`` masked (``138****5678``, ``al****@corp.cn``, ``****``)
_MASKED = re.compile(r"[^\s'\"/,;()]*\*\*\*\*[^\s'\"/,;()]*")


def without_row_values(text: str) -> str:
    """``text`` with every e-mail- and phone-like token and every masked value replaced by
    ``…``: the words two rows' messages share, to count reasons by."""

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        return token if m.group("phone") is not None and _DATE.fullmatch(token) else "…"

    return _MASKED.sub("…", _PII_TOKEN.sub(repl, text))


def _replace_word(text: str, value: str, masked: str) -> str:
    """Every occurrence of ``value`` in ``text`` that is not part of a longer ASCII word or
    number (``C1024`` in ``customer C1024 is ...``, not in ``C10245``)."""
    out: list[str] = []
    pos = 0
    start = text.find(value)
    while start >= 0:
        end = start + len(value)
        inside = (start > 0 and text[start - 1] in _ASCII_WORD) or (
            end < len(text) and text[end] in _ASCII_WORD
        )
        if not inside:
            out += [text[pos:start], masked]
            pos = end
        start = text.find(value, end if not inside else start + 1)
    return "".join(out) + text[pos:]


class PiiMask:
    """``report.mask_pii``: what a report may show of a row's personal data.

    ``identity_keys`` are the names in a row's identity, in order (``phone=...;email=...``,
    events add ``event_id``); ``customer_keys`` those that identify a customer (the primary
    keys): their values are masked wherever they appear, in the identity and in any message;
    so are e-mail- and phone-like tokens in every message."""

    def __init__(self, identity_keys: Iterable[str], customer_keys: Iterable[str]) -> None:
        keys = list(identity_keys)
        self.customer_keys = frozenset(customer_keys)
        # split on the known keys, so a value holding ';' or '=' stays whole
        self._split = re.compile("(?:^|;)(" + "|".join(re.escape(k) for k in keys) + ")=")

    def identity(self, identity: str) -> tuple[str, list[str]]:
        """(the masked identity, the customer-key values it held)."""
        parts = self._split.split(identity)
        if len(parts) < 3 or parts[0]:
            return mask_pii_text(identity), []
        shown: list[str] = []
        values: list[str] = []
        for key, value in zip(parts[1::2], parts[2::2], strict=True):
            if key in self.customer_keys and value:
                values.append(value)
                shown.append(f"{key}={mask_value(value)}")
            else:
                shown.append(f"{key}={mask_pii_text(value)}")
        return ";".join(shown), values

    def lines(self, identities: list[str], errmsgs: list[str | None]) -> None:
        """Mask a batch of report lines in place: their identities and messages."""
        for i, (identity, errmsg) in enumerate(zip(identities, errmsgs, strict=True)):
            masked, values = self.identity(identity) if identity else ("", [])
            identities[i] = masked
            if errmsg:
                errmsgs[i] = mask_pii_text(errmsg, values)

    def text(self, text: str) -> str:
        """A message with no row behind it (an abort's reason)."""
        return mask_pii_text(text)
