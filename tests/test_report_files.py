"""Where a run's files go, and what happens when they cannot be written: one rejects file per
input whatever the inputs are called (issue 11 #4)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from csvfiles import write_csv

from importer.pipeline import RunSummary, run, validate
from importer.sandbox import Sandbox

COLUMNS = ["phone", "email", "name", "age"]

CONFIG = """
job: {{name: customers, kind: user, primary_keys: [phone, email]}}
columns:
  phone: phone
  email: email
  username: name
  age: {{from: age, type: integer}}
send: {{concurrency: 4, retry: {{max_attempts: 2, initial_backoff_s: 0.01, max_backoff_s: 0.02}}}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        CONFIG.format(reports=tmp_path / "reports", state=tmp_path / "state.db"), encoding="utf-8"
    )
    return path


def _inputs(tmp_path: Path) -> dict[Path, set[str]]:
    """Inputs whose names meet in every way a rejects name could: the same stem, the same
    name in two folders, names differing only in case, odd characters. Each has rows that are
    rejected (age not a number); the value -> the ages of those rows, all distinct."""
    names = [
        "in/customers.2024-12-01.csv",
        "in/customers.2024-12-02.csv",
        "other/customers.2024-12-01.csv",
        "in/Customers.csv",
        "in/CUSTOMERS.csv",
        "in/cust omers:新*?.csv",
        "in/cust_omers_新__.csv",
    ]
    made: dict[Path, set[str]] = {}
    for f, name in enumerate(names):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[f"0188{f:02d}{i:05d}", f"f{f}u{i}@x.cn", f"n{i}", str(i)] for i in range(6)]
        bad = {f"bad-{f}-{i}" for i in (1, 4)}
        for i in (1, 4):
            rows[i][3] = f"bad-{f}-{i}"
        write_csv(path, COLUMNS, rows)
        made[path] = bad
    return made


def _check_rejects(summary: RunSummary, inputs: dict[Path, set[str]]) -> None:
    assert summary.report_dir is not None
    data = json.loads((summary.report_dir / "summary.json").read_text(encoding="utf-8"))
    assert data["counts"]["rejected"] == 2 * len(inputs)
    assert len(summary.rejects_paths) == len(inputs)
    assert len({p.name.casefold() for p in summary.rejects_paths}) == len(inputs)
    assert sorted(data["rejects"]) == sorted(str(p) for p in summary.rejects_paths)
    found: list[str] = []
    for path in summary.rejects_paths:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == COLUMNS
        found.extend(r[3] for r in rows[1:])
    assert sorted(found) == sorted(v for bad in inputs.values() for v in bad)
    names = sorted(p.name for p in summary.rejects_paths)
    assert names == sorted(
        [
            "rejects-customers.2024-12-01.csv",
            "rejects-customers.2024-12-01-2.csv",
            "rejects-customers.2024-12-02.csv",
            "rejects-CUSTOMERS.csv",
            "rejects-Customers-2.csv",
            "rejects-cust_omers_新__.csv",
            "rejects-cust_omers_新__-2.csv",
        ]
    )


def test_inputs_with_meeting_names_get_one_rejects_file_each_in_validate(
    tmp_path: Path,
) -> None:
    inputs = _inputs(tmp_path)
    summary = validate(_config(tmp_path), sorted(inputs))
    assert summary.exit_code == 1
    _check_rejects(summary, inputs)


def test_inputs_with_meeting_names_get_one_rejects_file_each_in_run(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    inputs = _inputs(tmp_path)
    summary = run(_config(tmp_path), sorted(inputs), overrides={"target.base_url": sb.url})
    assert summary.exit_code == 1
    assert summary.counts["ok"] == 4 * len(inputs)
    _check_rejects(summary, inputs)
