"""Propose a job config for a file (``dmimport init``): header and a sample in, commented YAML out.

The proposal is a starting point the user reads and edits, so every guess is written next to
the line it shaped, with the evidence (``# 手机号: 998/1000 sample values look like phone
numbers``). Guesses are deliberately conservative, because a wrong type costs more than a
missing one:

- a column becomes ``integer`` only when every non-empty sample value is a plain integer
  without a leading zero and shorter than 16 digits (ids with leading zeros and 17-digit order
  numbers stay text, as do 0/1-only columns, which may be flags or counts);
- phone numbers, e-mail addresses and anything named like an id stay text;
- a type is kept only when the mapper itself converts every sample value with it, so the
  proposal never rejects a sample row the file's own values did not already doom.

The result always passes ``parse_job`` but for the ``CHANGE_ME`` placeholders left where the
sample does not tell (``Proposal.placeholders``); ``propose`` checks that before returning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import PLACEHOLDER, is_placeholder_problem
from ..errors import ConfigError, UsageError
from ..job import parse_job
from ..load import InputOptions, Source
from ..protocol import KINDS
from .infer import ColumnGuess, infer
from .names import property_name
from .plan import plan_proposal
from .render import render_yaml
from .sample import Sample, nested_list, read_sample


class InitError(UsageError):
    """``dmimport init`` cannot do what was asked (existing output file, unknown kind)."""


@dataclass
class Proposal:
    """A proposed config: the YAML ``text`` and what the CLI should tell the user."""

    text: str
    kind: str
    source: Source
    sample_rows: int
    columns: list[ColumnGuess]
    #: property names, in config order
    properties: list[str]
    primary_keys: list[str]
    #: things to check before the first run, one sentence each
    notes: list[str]
    #: the key paths left ``CHANGE_ME`` for the user to fill
    placeholders: list[str] = field(default_factory=list)
    #: columns left out because they hold lists or objects, with what they hold
    nested: dict[str, str] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """What ``dmimport init`` says on stderr: the nested columns skipped and the
        placeholders to fill (the config is a draft: it is written anyway)."""
        out: list[str] = []
        if self.nested:
            out.append(f"skipped (nested, not a flat value): {nested_list(self.nested)}")
        if self.placeholders:
            n = len(self.placeholders)
            out.append(
                f"{n} placeholder{'s' if n > 1 else ''} to fill ({PLACEHOLDER}): "
                + ", ".join(self.placeholders)
                + "; check-config and run refuse the config until each is replaced"
            )
        return out


def propose_config(
    path: str | Path,
    kind: str,
    *,
    sample_rows: int = 1000,
    event_name: str | None = None,
    input_options: InputOptions | None = None,
) -> str:
    """The YAML text (with comments) of a config that imports ``path`` as ``kind``."""
    return propose(
        path, kind, sample_rows=sample_rows, event_name=event_name, input_options=input_options
    ).text


def propose(
    path: str | Path,
    kind: str,
    *,
    sample_rows: int = 1000,
    event_name: str | None = None,
    input_options: InputOptions | None = None,
) -> Proposal:
    """Read the header and the first ``sample_rows`` rows of ``path`` and propose a config.

    Raises ``InitError`` for an unknown kind or an event name given for another kind,
    ``LoadError`` for a file the loader cannot read.
    """
    if kind not in KINDS:
        raise InitError(f"unknown kind '{kind}': expected one of {', '.join(KINDS)}")
    if event_name is not None and kind != "event":
        raise InitError("an event name only applies to kind event")
    if event_name is not None and not event_name.strip():
        raise InitError("the event name must not be empty")
    if sample_rows < 1:
        raise InitError("sample_rows must be at least 1")
    path = Path(path)
    options = input_options or InputOptions()
    sample = read_sample(path, options, sample_rows)
    guesses = _guess_columns(sample)
    plan = plan_proposal(kind, guesses, event_name, sample.rows)
    text = render_yaml(path, kind, sample, plan)
    try:
        parse_job(yaml.safe_load(text), source=str(path))
    except ConfigError as exc:
        # its CHANGE_MEs are refused until the user fills them; anything else is a bug
        real = [p for p in exc.problems if not is_placeholder_problem(p.message)]
        if real:
            raise ConfigError(real, source=str(path)) from None
    return Proposal(
        text,
        kind,
        sample.source,
        sample.rows,
        guesses,
        [name for name, _, _ in plan.properties],
        plan.primary_keys,
        plan.notes,
        plan.placeholders,
        dict(sample.nested),
    )


def _guess_columns(sample: Sample) -> list[ColumnGuess]:
    guesses: list[ColumnGuess] = []
    for position, header in enumerate(sample.columns, 1):
        name, how = property_name(header, position)
        guess = infer(header, name, sample.values[header], sample.rows)
        guess.position = position
        if how == "no English name known":
            guess.why = f"no English name known -> {name}; {guess.why}"
        guesses.append(guess)
    return guesses
