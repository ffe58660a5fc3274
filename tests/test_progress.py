"""The progress line ``dmimport run`` draws on a terminal: rows answered of the total, the
percent, the rate over the last seconds and the time left, redrawn while the run sends; and
the rate it shows last is the one the run achieved. The command runs as a user runs it, its
stderr a pseudo-terminal, against the sandbox on loopback."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import on_terminal, write_csv

import importer
from importer.sandbox import Sandbox

pytestmark = pytest.mark.slow  # the command in a subprocess

CONFIG = """
job: {kind: user, primary_keys: [phone]}
columns:
  phone: phone
  username: name
send:
  concurrency: 2
  rate_limit: 4
"""

#: a job that reads its files only once: job.duplicates needs no pre-pass
NO_PRE_PASS = CONFIG.replace(
    "primary_keys: [phone]}", "primary_keys: [phone], duplicates: keep_all}"
)
assert NO_PRE_PASS != CONFIG

#: one drawing of the line (by tqdm):
#: ``3,000/6,000 rows  50% |...| 1,012 rows/s  ETA 00:03  [00:03], rejected=0 failed=0``
LINE = re.compile(
    r"(?P<answered>[\d,]+)/(?P<approx>~?)(?P<total>[\d,]+) rows +(?P<pct>\d+)% \|[#-]+\| "
    r"(?P<rate>[\d,]+) rows/s  ETA (?P<eta>\?|\d+:\d\d(?::\d\d)?)  \[(?P<elapsed>[\d:]+)\]"
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_bar_shows_answered_rows_of_the_total_with_rate_and_eta(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    rows = [[f"139{i:08d}", f"name {i}"] for i in range(6000)]
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    code, out, chunks = on_terminal(
        "run", "job.yaml", data, "--base-url", sb.url, "--json", cwd=tmp_path, secret=sb.secret
    )
    summary = json.loads(out)
    assert code == 0 and summary["counts"]["ok"] == 6000
    # 12 requests of 500 rows at 4 requests a second: the run lasts seconds
    assert 2.0 < summary["duration_s"] < 10, summary["duration_s"]

    drawn = [(t, m) for t, chunk in chunks for m in LINE.finditer(chunk)]
    assert drawn, "".join(c for _, c in chunks)
    # the total is known from the start (the daily quota's pre-pass read the file)
    assert {m["total"] for _, m in drawn} == {"6,000"} and not any(m["approx"] for _, m in drawn)
    counts = [_number(m["answered"]) for _, m in drawn]
    assert counts == sorted(counts)  # answered rows only grow
    # the rows answered while the run sends, not once at the end: several counts below the
    # total; the line redrawn at least every second (twice a second, on a busy machine)
    below = sorted({c for c in counts if 0 < c < 6000})
    assert len(below) >= 2, counts
    times = [t for t, _ in drawn]
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.5
    assert any(m["eta"] != "?" and 0 < _number(m["answered"]) < 6000 for _, m in drawn)
    # the percent follows the count
    for _, m in drawn:
        assert int(m["pct"]) == round(100 * _number(m["answered"]) / 6000)
    # the last line: every row answered, and the rate the run achieved
    last = drawn[-1][1]
    assert last["answered"] == "6,000" and last["pct"] == "100" and last["eta"] == "00:00"
    achieved = 6000 / summary["duration_s"]
    assert abs(_number(last["rate"]) - achieved) <= 0.2 * achieved, (last[0], achieved)
    # no rate shown is above what the run does at full speed: 4 requests of 500 rows a second
    # (with a second's burst)
    for _, m in drawn:
        assert _number(m["rate"]) <= 2 * 4 * 500, m[0]


def test_validate_counts_checked_rows_and_estimates_the_total_from_bytes(tmp_path: Path) -> None:
    # no daily quota and job.duplicates: keep_all, so no pre-pass: until the file is read,
    # the total is estimated (marked ~), then it is the rows read
    config = NO_PRE_PASS + "  daily_quota: 0\ninput: {batch_rows: 1000}\n"
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    rows = [[f"139{i:08d}", f"name {i}"] for i in range(6000)]
    rows[10][0] = ""  # no primary key: rejected
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    code, out, chunks = on_terminal("validate", "job.yaml", data, "--json", cwd=tmp_path,
                                        secret="unused")  # fmt: skip
    summary = json.loads(out)
    assert code == 1 and summary["counts"]["valid"] == 5999
    drawn = [m for _, chunk in chunks for m in LINE.finditer(chunk)]
    assert drawn, "".join(c for _, c in chunks)
    for m in drawn:  # an estimate is marked, and never below what was checked
        assert m["approx"] or m["total"] == "6,000"
        assert _number(m["total"]) >= _number(m["answered"])
    last = drawn[-1]
    assert (last["answered"], last["approx"], last["total"]) == ("6,000", "", "6,000")
    text = "".join(c for _, c in chunks)
    assert text.rstrip().rsplit("\r", 1)[-1].endswith(", rejected=1 failed=0"), text


def test_a_terminal_that_says_it_is_0_columns_wide_gets_an_80_column_line(tmp_path: Path) -> None:
    config = CONFIG + "  daily_quota: 0\n"
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    rows = [[f"139{i:08d}", f"name {i}"] for i in range(3000)]
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    code, out, chunks = on_terminal("validate", "job.yaml", data, "--json", cwd=tmp_path,
                                    secret="unused", columns=0)  # fmt: skip
    assert code == 0, out
    text = "".join(c for _, c in chunks)
    drawn = [m for m in LINE.finditer(text)]
    assert drawn, repr(text)
    assert drawn[-1]["answered"] == drawn[-1]["total"] == "3,000"
    lines = [line for line in text.split("\r") if LINE.search(line)]
    assert max(len(line.rstrip("\x1b[K")) for line in lines) <= 80, lines


def test_until_the_file_is_read_the_total_is_estimated_from_its_lines(tmp_path: Path) -> None:
    # no daily quota and job.duplicates: keep_all, so no pre-pass counting the rows: the
    # library's progress callback gets the file's lines (less the header) as an estimate of
    # the total, then the rows read
    config = NO_PRE_PASS + "  daily_quota: 0\ninput: {batch_rows: 2000}\n"
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    rows = [[f"139{i:08d}", f"name {i:06d} " + "x" * 200] for i in range(40_000)]
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    seen: list[dict[str, int]] = []
    summary = importer.run(tmp_path / "job.yaml", data, dry_run=True, progress=seen.append,
                           report_dir=tmp_path / "reports")  # fmt: skip
    assert summary.rows == 40_000
    estimates = [c for c in seen if c["total"] and not c["total_exact"]]
    assert estimates and all(c["total"] == 40_000 for c in estimates), seen[:3]
    assert all(c["bytes_total"] == data.stat().st_size for c in seen if c["answered"])
    last = seen[-1]
    assert (last["answered"], last["total"], last["total_exact"]) == (40_000, 40_000, 1)
    assert last["rows"] == last["valid"] == 40_000
    assert last["bytes_read"] == last["bytes_total"]
    answered = [c["answered"] for c in seen]
    assert answered == sorted(answered) and len(set(answered)) >= 10


@pytest.mark.parametrize("policy", ["reject", "keep_last"])
def test_the_duplicates_pre_pass_gives_the_total_before_the_rows_go(
    policy: str, tmp_path: Path
) -> None:
    # job.duplicates reads every row before any is checked or sent: from the first call on,
    # the total is the rows it read (bad ones included), not unknown until the end
    job = f"job: {{kind: event, event_name: order, primary_keys: [phone], duplicates: {policy}}}"
    config = job + (
        "\ncolumns:\n  phone: phone\n  event_id: {from: oid}\n"
        "  create_time: {from: at, type: datetime}\n"
    )
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    rows = [[f"139{i:08d}", f"O{i % 2990}", "2024-03-05 10:20:30"] for i in range(3000)]
    rows[7][2] = "not a time"
    data = write_csv(tmp_path / "orders.csv", ["phone", "oid", "at"], rows)
    seen: list[dict[str, int]] = []
    summary = importer.run(tmp_path / "job.yaml", data, dry_run=True, progress=seen.append,
                           report_dir=tmp_path / "reports")  # fmt: skip
    assert summary.rows == 3000 and summary.counts["rejected"] >= 1
    assert (seen[0]["answered"], seen[0]["total"], seen[0]["total_exact"]) == (0, 3000, 1)
    assert all(c["total"] == 3000 for c in seen)


def test_the_duplicates_pre_pass_gives_the_exact_total_from_the_start(tmp_path: Path) -> None:
    # no daily quota, but job.duplicates (keep_last for users) reads every row before sending:
    # the total is the rows it read, exact from the first count on, and no line is counted
    config = CONFIG + "  daily_quota: 0\ninput: {batch_rows: 2000}\n"
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    rows = [[f"139{i:08d}", f"name {i}"] for i in range(10_000)]
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    seen: list[dict[str, int]] = []
    importer.run(tmp_path / "job.yaml", data, dry_run=True, progress=seen.append,
                 report_dir=tmp_path / "reports")  # fmt: skip
    assert seen and all((c["total"], c["total_exact"]) == (10_000, 1) for c in seen), seen[:3]
