"""Malformed CSV quoting: found in the byte stream and marked for Arrow's reader."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


class Quotes:
    """Finds malformed quoting in a CSV byte stream, and marks it for Arrow's reader.

    Arrow, like most CSV readers, repairs a value with text after its closing quote:
    ``a,"b"c,d`` gives ``bc``, and ``"Bret \\"Hit Man\\" Hart"`` (a backslash-escaped quote
    without ``input.escape_char``) something else again. Such a record must be a bad record,
    never sent altered. This follows the quoting state of the whole stream, vectorized over
    the quote characters of each piece (a piece without a quote costs one ``find``), exactly
    as Arrow reads it: a quote opens a quoted value only at the start of a field (elsewhere it
    is a literal character), inside quotes ``""`` is a quote, and with an escape character an
    escaped quote is a literal character. Where a closing quote is followed by anything but a
    delimiter or a line end, ``MARK`` (a delimiter, a token no file holds, and ``width`` more
    delimiters) is inserted after it: the record then has too many fields, so Arrow hands it
    to the invalid-row handler, which finds the token, takes it out again and reports the
    record as malformed (``malformed_reason``).
    """

    def __init__(self, delimiter: str, escape: str | None, width: int) -> None:
        self.delim = ord(delimiter)
        self.esc = ord(escape) if escape else None
        nonce = os.urandom(8).hex()
        self.token = f"\x1admimport-malformed-quote-{nonce}\x1a"
        self.mark = (delimiter + self.token + delimiter * width).encode()
        # an unknown escape (\N with escape_char \): the same, before the escape character;
        # inside quotes the mark closes the quotes before it and opens them again after it
        self.escape_token = f"\x1admimport-unknown-escape-{nonce}\x1a"
        self.escape_mark = (delimiter + self.escape_token + delimiter * width).encode()
        self._escapable = np.array([0x22, self.esc or 0x22, self.delim, 0x0A, 0x0D], np.uint8)
        self.inside = False  # inside quotes at the end of what was handed on
        self.prev = -1  # the last byte handed on; -1 at the start of the file (a field start)
        self.prev_escaped = False
        self._hold = b""  # trailing quotes (and escapes) kept back: what follows decides
        self._special = b'"' + (escape.encode() if escape else b"")

    def feed(self, piece: bytes | memoryview, final: bool) -> bytes | memoryview:
        """``piece`` as Arrow must get it: marked where the quoting is malformed."""
        if self._hold:
            piece, self._hold = self._hold + bytes(piece), b""
        n = len(piece)
        if not n:
            return piece
        if not final:
            keep = n
            while keep and piece[keep - 1] in self._special:
                keep -= 1
            if keep < n:
                self._hold = bytes(piece[keep:])
                piece, n = piece[:keep], keep
                if not n:
                    return piece
        v = np.frombuffer(piece, dtype=np.uint8)
        escaped = None
        unknown = np.zeros(0, dtype=np.int64)  # escape characters that escape nothing known
        carry = self.inside
        if self.esc is not None:
            escaped, after = self._escaped(v)
            known = np.isin(v[after], self._escapable)
            unknown = after[~known] - 1
            quote = v == 0x22
            quote &= ~escaped
            q = np.flatnonzero(quote).astype(np.int32)
        else:
            q = np.flatnonzero(v == 0x22).astype(np.int32)
        if not len(q):
            self._advance(v, escaped)
            marks = [(int(p), self._escape_mark(carry)) for p in unknown.tolist()]
            return self._marked(piece, marks)
        if escaped is None and self._alternating(v, q):
            self.inside ^= bool(len(q) % 2)
            self._advance(v, escaped)
            return piece
        # runs of consecutive quotes: where each starts (rs), its length, where it ends (re)
        first = np.flatnonzero(np.diff(q, prepend=-2) != 1)
        rs = q[first]
        odd = (np.diff(first, append=len(q)) & 1).astype(bool)
        re_ = q[np.append(first[1:], len(q)) - 1] + 1
        before = v[rs - 1]  # rs[0] - 1 may be -1: fixed below
        d = self.delim
        start = (before == d) | (before == 0x0A) | (before == 0x0D)
        if escaped is not None:
            start &= ~escaped[rs - 1]
        if rs[0] == 0:
            start[0] = (self.prev in (d, 0x0A, 0x0D, -1)) and not self.prev_escaped
        # Per run, outside quotes: an odd run at a field start opens a value (a toggle), an
        # odd run elsewhere is literal (the state stays 'outside'); inside quotes an odd run
        # closes the value: after an odd run not at a field start the state is 'outside'
        # whatever it was (a reset); an even run leaves it as it was.
        toggles = np.cumsum(odd & start, dtype=np.int32)
        base = np.where(odd & ~start, toggles, np.int32(-int(self.inside)))
        np.maximum.accumulate(base, out=base)  # toggles at the last reset (never decreases)
        state = ((toggles - base) & 1).astype(bool)
        was = np.empty_like(state)
        was[0] = self.inside
        was[1:] = state[:-1]
        closes = np.where(was, odd, start & ~odd)
        follows = v[np.minimum(re_, n - 1)]
        ends = (follows == d) | (follows == 0x0A) | (follows == 0x0D)
        ends[-1] |= re_[-1] >= n
        bad = np.flatnonzero(closes & ~ends)
        self.inside = bool(state[-1])
        self._advance(v, escaped)
        marks = [(pos, self.mark) for pos in re_[bad].tolist()]
        if len(unknown):
            run = np.searchsorted(re_, unknown, side="right") - 1
            within = np.where(run >= 0, state[np.maximum(run, 0)], carry)
            marks += [
                (int(p), self._escape_mark(bool(w)))
                for p, w in zip(unknown.tolist(), within.tolist(), strict=True)
            ]
        return self._marked(piece, sorted(marks, key=lambda m: m[0]))

    def _escape_mark(self, inside: bool) -> bytes:
        return b'"' + self.escape_mark + b'"' if inside else self.escape_mark

    @staticmethod
    def _marked(piece: bytes | memoryview, marks: list[tuple[int, bytes]]) -> bytes | memoryview:
        if not marks:
            return piece
        parts = []
        at = 0
        for pos, mark in marks:
            parts.append(piece[at:pos])
            parts.append(mark)
            at = pos
        parts.append(piece[at:])
        return b"".join(parts)

    def _alternating(self, v: np.ndarray, q: np.ndarray) -> bool:
        """The common case, checked in a few passes: single quotes that open a value at a
        field start and close it before a delimiter or line end, in turn. True means the
        piece is well quoted; False that the exact state machine must decide."""
        if len(q) > 1 and np.diff(q).min() < 2:
            return False  # a doubled quote
        d = self.delim
        opening = q[int(self.inside) :: 2]
        if len(opening):
            before = v[opening - 1]
            if opening[0] == 0:
                before[0] = self.prev if self.prev >= 0 else d
            if not ((before == d) | (before == 0x0A) | (before == 0x0D)).all():
                return False
        closing = q[1 - int(self.inside) :: 2]
        if len(closing) and closing[-1] == len(v) - 1:
            closing = closing[:-1]  # the end of the file (pieces keep a last quote back)
        after = v[closing + 1]
        return bool(((after == d) | (after == 0x0A) | (after == 0x0D)).all())

    def _escaped(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which bytes an escape character makes literal (the one after an odd run), as a
        mask and as positions."""
        n = len(v)
        escaped = np.zeros(n, dtype=bool)
        after = np.zeros(0, dtype=np.int64)
        e = np.flatnonzero(v == self.esc)
        if len(e):
            first = np.flatnonzero(np.diff(e, prepend=-2) != 1)
            lengths = np.diff(first, append=len(e))
            after = e[first] + lengths
            after = after[(lengths & 1).astype(bool) & (after < n)]
            escaped[after] = True
        return escaped, after

    def _advance(self, v: np.ndarray, escaped: np.ndarray | None) -> None:
        self.prev = int(v[-1])
        self.prev_escaped = bool(escaped[-1]) if escaped is not None else False

    def malformed_reason(
        self, text: str, names: Sequence[str], delimiter: str, escape: str | None
    ) -> tuple[str, str, str | None] | None:
        """For a record Arrow found invalid: (its text without the marks, the reason, the
        column) if it was marked here, else None."""
        at_quote = text.find(self.token)
        at_escape = text.find(self.escape_token)
        if at_quote < 0 and at_escape < 0:
            return None
        escape_mark = self.escape_mark.decode()
        original = text.replace(f'"{escape_mark}"', "").replace(escape_mark, "")
        original = original.replace(self.mark.decode(), "")
        if at_escape < 0 or 0 <= at_quote < at_escape:
            head = text[: at_quote - 1]  # the record up to the closing quote
            what = "malformed quoting: text after the closing quote in {}"
        else:
            start = at_escape - 1
            end = start + len(escape_mark)
            if text.startswith(f'"{escape_mark}"', start - 1):
                start, end = start - 1, end + 1
            head = text[:start]  # the record up to the escape character
            sequence = text[end : end + 2].replace('"', '\\"')
            what = (
                f'unknown escape sequence "{sequence}" in {{}} (input.escape_char escapes only '
                "quotes, delimiters, line ends and itself)"
            )
        fields = next(csv.reader(io.StringIO(head, newline=""), **csv_dialect(delimiter, escape)))
        column = names[len(fields) - 1] if 0 < len(fields) <= len(names) else None
        where = f'column "{column}"' if column is not None else f"column {len(fields)}"
        return original, what.format(where), column


def csv_dialect(delimiter: str, escape: str | None) -> dict[str, Any]:
    """Python's ``csv`` options that read as Arrow does with these options."""
    return {"delimiter": delimiter, "quotechar": '"', "doublequote": True, "escapechar": escape}
