"""Docs that cannot rot: every command and option of the CLI is in docs/cli.md, every doc the
README links exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from importer.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_and_option_is_documented(command: str) -> None:
    assert f"`dmimport {command}" in CLI_DOC, f"docs/cli.md lacks a section for {command}"
    for action in _subcommands()[command]._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert f"`{flag}" in CLI_DOC, f"docs/cli.md does not mention {command} {flag}"


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)]+)\)", readme)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link


def test_every_test_docs_reliability_cites_exists() -> None:
    # docs/reliability.md says which test proves each claim: a renamed or deleted test must
    # not leave the page citing a proof that no longer runs
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"(?<![\w/])(test_[a-z0-9_]+)(?![\w.])", text))
    assert len(cited) > 50
    defined: set[str] = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    assert sorted(cited - defined) == []


def test_the_readme_names_the_results_columns_as_they_are() -> None:
    from importer.report import RESULT_COLUMNS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{', '.join(RESULT_COLUMNS)}`" in " ".join(readme.split())


def test_systemd_units_in_the_docs_hold_no_comment_after_a_value() -> None:
    # systemd reads `Key=value  # note` as the value "value  # note": a unit copied from the
    # docs would then fail (EnvironmentFile= naming a file that does not exist)
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```ini\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                if re.match(r"[A-Za-z]+=", line):
                    assert not re.search(r"\s[#;]", line), f"{doc.name}: {line}"
