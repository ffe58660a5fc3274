"""The map stage: a table of source text in, per-row local verdicts and exact request bodies out."""

from .mapper import (
    FALSE_WORDS,
    TRUE_WORDS,
    BodyList,
    HashList,
    LazyList,
    Mapped,
    Mapper,
    constant_problems,
    convert_values,
)

__all__ = [
    "FALSE_WORDS",
    "TRUE_WORDS",
    "BodyList",
    "HashList",
    "LazyList",
    "Mapped",
    "Mapper",
    "constant_problems",
    "convert_values",
]
