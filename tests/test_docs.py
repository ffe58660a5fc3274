"""Docs that cannot rot: every command and option of the CLI is in docs/cli.md, every doc the
README links exists."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import DMIMPORT

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


def _doc_units() -> list[tuple[str, str]]:
    """Every ```ini block of the README and docs/, with the doc it is in."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        found += [(doc.name, b) for b in re.findall(r"```ini\n(.*?)```", text, flags=re.S)]
    return found


def test_systemd_units_in_the_docs_hold_no_comment_after_a_value() -> None:
    # systemd reads `Key=value  # note` as the value "value  # note": a unit copied from the
    # docs would then fail (EnvironmentFile= naming a file that does not exist).
    # systemd-analyze verify does not see it (the file is only opened when the unit starts)
    units = _doc_units()
    assert len(units) >= 3
    for doc, block in units:
        for line in block.splitlines():
            if re.match(r"[A-Za-z]+=", line):
                assert not re.search(r"\s[#;]", line), f"{doc}: {line}"
                # exit 1 is what --max-reject-rate raises above the accepted share
                # (docs/exit-codes.md): a unit that counts it as success hides those nights
                if line.startswith("SuccessExitStatus="):
                    assert "1" not in line.split("=", 1)[1].split(), f"{doc}: {line}"


def _scheduling_blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "scheduling.md").read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _run_flags(command: str) -> list[str]:
    """The options of a ``dmimport run`` command line, each one `dmimport run` has."""
    words = command.split()
    assert "run" in words, command
    flags = [w for w in words[words.index("run") :] if w.startswith("--")]
    known = {f for a in _subcommands()["run"]._actions for f in a.option_strings}
    assert sorted(set(flags) - known) == [], command
    return flags


def test_the_systemd_unit_and_timer_of_scheduling_md_pass_systemd_analyze_verify(
    tmp_path: Path,
) -> None:
    service, timer = (b for b in _scheduling_blocks("ini") if "[Service]" in b or "[Timer]" in b)
    assert "[Service]" in service and "[Timer]" in timer
    start = re.search(r"^ExecStart=(\S+) (.*)$", service, flags=re.M)
    assert start is not None
    assert "--max-reject-rate" in _run_flags(start.group(2))
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # the parser check above still ran (and runs for every unit)
        return
    # the unit's ExecStart must exist for verify: the installed dmimport, its arguments as
    # the doc writes them
    real = service.replace(start.group(1), str(DMIMPORT))
    (tmp_path / "dmimport-customers.service").write_text(real, encoding="utf-8")
    (tmp_path / "dmimport-customers.timer").write_text(timer, encoding="utf-8")

    def verify(*names: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [analyze, "verify", *(str(tmp_path / n) for n in names)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip

    out = verify("dmimport-customers.service", "dmimport-customers.timer")
    said = [ln for ln in (out.stdout + out.stderr).splitlines() if "dmimport-customers" in ln]
    assert out.returncode == 0 and said == [], out.stdout + out.stderr
    # and verify does read the files: a mistyped value is reported, with the line
    (tmp_path / "broken.service").write_text(
        real.replace("Type=oneshot", "Type=oneshott"), encoding="utf-8"
    )
    broken = verify("broken.service")
    assert "broken.service:" in broken.stderr and "oneshott" in broken.stderr


def test_the_cron_line_of_scheduling_md_is_a_valid_crontab_line() -> None:
    (block,) = _scheduling_blocks("cron")
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert len(fields) == 6, lines[0]
    for field, top in zip(fields[:5], (59, 23, 31, 12, 7), strict=True):
        assert re.fullmatch(r"\*|\d+([,-]\d+)*(/\d+)?|\*/\d+", field), field
        assert all(int(n) <= top for n in re.findall(r"\d+", field)), field
    command = fields[5]
    # cron turns an unescaped % into a new line
    assert not re.search(r"(?<!\\)%", command), command
    run = command[command.index("dmimport run") : command.index(">>")]
    flags = _run_flags(run)
    assert "--max-reject-rate" in flags and "--quiet" in flags
    # a night that does not exit 0 says so (cron mails what a job prints)
    assert re.search(r"2>&1 \|\| echo .*\$\?", command), command


#: repository paths the docs name that are not in the repository, on purpose: what
#: ``make bench`` writes (git-ignored). Paths under reports/, state/, exports/, data/, /var,
#: /etc are the user's and never checked; a config a doc's own ``dmimport init --out PATH``
#: writes is the user's too.
NOT_IN_THE_REPOSITORY = ("bench/results.json", "bench/data/")
#: a repository path, wherever a doc names it (prose, backticks, links, code blocks)
_REPO_PATH = re.compile(
    r"(?<![\w./-])((?:configs|sample_data|importer|docs|tests|bench)/[\w.*/-]*[\w*/])"
)


def test_every_repository_file_the_docs_name_exists() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    texts = {doc: doc.read_text(encoding="utf-8") for doc in docs}
    written = {m for t in texts.values() for m in re.findall(r"dmimport init .*--out (\S+)", t)}
    missing = []
    checked = 0
    for doc, text in texts.items():
        for path in _REPO_PATH.findall(text):
            if path in written or path.startswith(NOT_IN_THE_REPOSITORY):
                continue
            checked += 1
            found = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
            if not found:
                missing.append(f"{doc.name}: {path}")
        for link in re.findall(r"\]\(([^)\s]+)\)", text):  # relative to the doc
            target = link.split("#")[0]
            if target and not re.match(r"[a-z]+:", target):
                checked += 1
                if not (doc.parent / target).exists():
                    missing.append(f"{doc.name}: ({link})")
    assert checked > 100
    assert missing == []
