"""A column's ``transform`` steps, vectorised; ``digits`` and ``phone_cn`` may refuse values.

A step that refuses a value marks its row with a reason (``Cleaned.refused``/``problem``): the
checks reject the row with the profile's wrong-type code, as for a value that does not convert,
and the row keeps its cell as read (the text a reason and the row's identity show), so junk is
never turned into a key. The first step that refuses a value gives its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import bools, buffers, byte_lengths, value_bytes, within

#: The reason of a value Excel wrote in scientific notation (its last digits are gone).
SCIENTIFIC = (
    "is in scientific notation: Excel rounded it, the digits are lost; "
    "format the column as text in Excel and export again"
)
LETTERS = "has letters"
#: ``phone_cn``: what a value may hold besides digits and a leading ``+86``.
PHONE_OTHER = "has characters other than digits, spaces, dashes, dots and parentheses"
PHONE_COUNTRY = "has a country code other than +86"
PHONE_START = "does not start with 13-19"
#: ``digits``: what a value may hold besides the digits 0-9 (after NFKC); anything else (a
#: second number after ``/`` or ``;``, a mask ``138****8000``, an amount's ``,``) would make
#: a key of digits that belong to no one.
DIGITS_OTHER = "has characters other than the digits 0-9, spaces, dashes, dots, parentheses and a +"

_SCIENTIFIC = r"^\s*[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)[eE][+-]?\d+\s*$"
_LETTER = r"\pL"
#: ``phone_cn`` drops these (after NFKC, so full-width forms are ASCII already): whitespace,
#: the dashes (hyphen-minus, U+2010-U+2015, U+2212), dots and parentheses.
_PHONE_NOISE = r"[\s\x{2010}-\x{2015}\x{2212}.()-]+"
_MOBILE = r"^1[3-9]\d{9}$"
#: ``digits``: the characters a value may hold (after NFKC), as ``_PHONE_NOISE`` plus ``+``.
_DIGITS_SHAPE = r"^[\s\d\x{2010}-\x{2015}\x{2212}.()+-]*$"
#: the ASCII bytes of ``_DIGITS_SHAPE``: a value with any other byte is matched against it
_DIGITS_BYTES = np.zeros(256, dtype=bool)
_DIGITS_BYTES[list(b"0123456789 \t\n\r\x0b\x0c.()+-")] = True
#: a number a spreadsheet keeps as text: ``'0755 1234`` or the formula ``="0755 1234"``
_AS_TEXT = r"^(\s*)(?:'|=\x22([^\x22]*)\x22)([^'=\x22]*)$"
#: a whole number a spreadsheet wrote as a float (``13800138000.0``): its ``.0`` is dropped
#: (as ``integer`` does), not read as one more digit
_EXCEL_FLOAT = r"^(\s*\+?\d+)\.0+(\s*)$"


@dataclass
class Cleaned:
    """A column after its transforms."""

    #: the text after the steps; a refused row keeps its cell as read
    text: pa.Array
    #: per row: a step refused the value (all False when none did)
    refused: np.ndarray
    #: per row the reason of the refusal (``"has letters"``), null elsewhere; None when no
    #: row is refused
    problem: pa.Array | None = None


def _flagged(text: pa.Array, flag: np.ndarray) -> np.ndarray:
    """Per value: one of its bytes is flagged (``flag`` is per byte of ``value_bytes``)."""
    out = np.zeros(len(text), dtype=bool)
    where = np.flatnonzero(flag)
    if len(where):
        offsets, _ = buffers(text)
        out[np.searchsorted(offsets - offsets[0], where, side="right") - 1] = True
    return out


def _non_ascii(text: pa.Array) -> np.ndarray:
    """Per value: it has a byte outside ASCII."""
    return _flagged(text, value_bytes(text) >= 0x80)


def _refusals(text: pa.Array, strict: bool = False) -> pa.Array | None:
    """Per value: SCIENTIFIC, LETTERS (or with ``strict``, DIGITS_OTHER) or null; None when no
    value is refused. Only values with an ASCII letter or a non-ASCII byte (with ``strict``:
    any byte ``digits`` does not keep or drop) are matched (a byte scan finds them)."""
    data = value_bytes(text)
    if strict:
        flag = ~_DIGITS_BYTES[data]
    else:
        folded = data | 0x20
        flag = (data >= 0x80) | ((folded >= ord("a")) & (folded <= ord("z")))
    suspect = _flagged(text, flag) & bools(pc.is_valid(text))
    if not suspect.any():
        return None
    some = text.filter(pa.array(suspect))
    sci = pc.match_substring_regex(some, _SCIENTIFIC)
    letters = pc.match_substring_regex(some, _LETTER)
    other: pa.Scalar | pa.Array = pa.scalar(None, pa.string())
    if strict:
        other = pc.if_else(
            pc.match_substring_regex(some, _DIGITS_SHAPE), other, pa.scalar(DIGITS_OTHER)
        )
    why = pc.if_else(sci, SCIENTIFIC, pc.if_else(letters, LETTERS, other))
    return pc.replace_with_mask(pa.nulls(len(text), pa.string()), pa.array(suspect), why)


def _plain(text: pa.Array) -> pa.Array:
    """``text`` with its non-ASCII values NFKC-normalised (full-width digits, spaces, ``+``
    and parentheses become ASCII; ASCII values are left as they are), a whole number
    written as a float (``13800138000.0``) without its ``.0``, and a number a spreadsheet
    was told to keep as text (``'0755...`` or ``="0755..."``) without those marks."""
    wide = _non_ascii(text)
    if wide.any():
        text = pc.replace_with_mask(
            text, pa.array(wide), pc.utf8_normalize(text.filter(pa.array(wide)), "NFKC")
        )
    data = value_bytes(text)
    if _flagged(text, (data == ord("=")) | (data == ord("'"))).any():
        text = pc.replace_substring_regex(text, _AS_TEXT, r"\1\2\3")
        data = value_bytes(text)
    dotted = _flagged(text, data == ord("."))
    if not dotted.any():
        return text
    some = pc.replace_substring_regex(text.filter(pa.array(dotted)), _EXCEL_FLOAT, r"\1\2")
    return pc.replace_with_mask(text, pa.array(dotted), some)


def _digits(text: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """``digits``: (the digits, with a leading ``+`` kept; the refusal reasons or None).
    Full-width digits count (NFKC); a value with anything but digits, spaces, dashes, dots,
    parentheses and ``+`` is refused, so no key is made of digits that belong to no one."""
    if within(text, "0", "9"):
        return text, None
    text = _plain(text)
    plus = pc.starts_with(pc.utf8_trim_whitespace(text), "+")
    only = pc.replace_substring_regex(text, r"[^0-9]+", "")
    keep_plus = pc.and_(plus, pc.not_equal(only, ""))
    out = pc.if_else(keep_plus, pc.binary_join_element_wise("+", only, ""), only)
    return out, _refusals(text, strict=True)


def _phone_cn(text: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """``phone_cn``: (the 11 digits of a Chinese mobile number; the refusal reasons)."""
    lengths = byte_lengths(text)
    present = bools(pc.is_valid(text))
    if within(text, "0", "9") and (lengths[present] == 11).all():
        good = bools(pc.match_substring_regex(text, _MOBILE)) | ~present
        if good.all():
            return text, None
        why = pc.if_else(pa.array(good), pa.scalar(None, pa.string()), PHONE_START)
        return text, why
    norm = _plain(text)
    early = _refusals(norm)
    norm = pc.replace_substring_regex(norm, _PHONE_NOISE, "")
    norm = pc.replace_substring_regex(norm, r"^(?:\+86|0086|86(1[3-9]\d{9})$)", r"\1")
    rest = ~(bools(pc.match_substring_regex(norm, _MOBILE)) | bools(pc.equal(norm, "")))
    rest &= bools(pc.is_valid(norm))
    if not rest.any():
        return norm, early
    why = pc.replace_with_mask(
        pa.nulls(len(norm), pa.string()), pa.array(rest), _phone_problems(norm.filter(rest))
    )
    return norm, why if early is None else pc.coalesce(early, why)


def _phone_problems(norm: pa.Array) -> pa.Array:
    """Why each of these cleaned values (none an 11-digit mobile number, none empty) is not."""
    digits_only = pc.match_substring_regex(norm, r"^\d*$")
    count = pc.cast(pc.utf8_length(norm), pa.string())
    wrong_length = pc.binary_join_element_wise("has ", count, " digits; a mobile number has 11", "")
    length_ok = pc.equal(pc.utf8_length(norm), 11)
    return pc.if_else(
        digits_only,
        pc.if_else(length_ok, PHONE_START, wrong_length),
        pc.if_else(pc.starts_with(norm, "+"), PHONE_COUNTRY, PHONE_OTHER),
    )


def transform(text: pa.Array, steps: Sequence[str]) -> Cleaned:
    """``text`` after a column's ``transform`` steps, in order."""
    cell = text
    problem: pa.Array | None = None
    for step in steps:
        why: pa.Array | None = None
        if step == "strip":
            text = pc.utf8_trim_whitespace(text)
        elif step == "lower":
            text = pc.utf8_lower(text)
        elif step == "upper":
            text = pc.utf8_upper(text)
        elif step == "nfkc":
            text = pc.utf8_normalize(text, "NFKC")
        elif step == "collapse_spaces":
            text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
        elif step == "digits":
            text, why = _digits(text)
        elif step == "phone_cn":
            text, why = _phone_cn(text)
        if why is not None and pc.any(pc.is_valid(why)).as_py():
            problem = why if problem is None else pc.coalesce(problem, why)
    if problem is None:
        return Cleaned(text, np.zeros(len(text), dtype=bool))
    refused = bools(pc.is_valid(problem))
    return Cleaned(pc.if_else(pa.array(refused), cell, text), refused, problem)
