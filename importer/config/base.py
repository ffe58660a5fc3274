"""What every section of the config shares: the strict model base, validator errors that
keep their wording, did-you-mean hints, and the lone-surrogate check."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
)

from ..errors import escaped

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def did_you_mean(word: str, choices: Iterator[str] | list[str] | set[str]) -> str | None:
    pool = list(choices)
    lowered = {c.casefold(): c for c in pool}
    if word.casefold() in lowered:
        return f"did you mean '{lowered[word.casefold()]}'?"
    swapped = [c for c in pool if sorted(c.casefold()) == sorted(word.casefold())]
    if swapped:  # 'form' is a typo of 'from' far more often than of 'format'
        return f"did you mean '{swapped[0]}'?"
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problems(data: Any) -> list[tuple[tuple[str, ...], str, str | None]]:
    """Every key and string value that is not valid Unicode text: a lone surrogate (YAML's
    ``"\\uDFAA"``, or a command-line override of undecodable bytes) can be neither a column
    name in a file nor sent, so it is refused here rather than fail the run later."""
    out: list[tuple[tuple[str, ...], str, str | None]] = []

    def problem(path: tuple[str, ...], text: str) -> None:
        bad = escaped(_SURROGATE.findall(text)[0])
        out.append(
            (
                path,
                f"not valid Unicode text: holds a lone surrogate ({bad})",
                "a \\uD800-\\uDFFF escape is half of a pair; write the character itself",
            )
        )

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                here = (*path, str(k))
                if isinstance(k, str) and _SURROGATE.search(k):
                    problem(here, k)
                walk(v, here)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, str(i)))
        elif isinstance(value, str) and _SURROGATE.search(value):
            problem(path, value)

    walk(data, ())
    return out


def show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)
