"""`make demo` keeps working: demo.py (a script of the checkout, not of the package) imports
the sample data into a sandbox of its own, writes its reports where it is told, and leaves no
ledger behind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from helpers import ROOT


def test_the_demo_imports_the_sample_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("demo", ROOT / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(tmp_path / "reports") == 0
    out = capsys.readouterr().out
    assert "sandbox now holds 11 customers and 9 events" in out
    assert len(list((tmp_path / "reports").glob("*/summary.json"))) == 3
    # its ledger lived in the sandbox's temporary folder: none in the reports, none in the
    # current folder (the test's own, see conftest), where a default ledger would go
    assert list(tmp_path.rglob("*.db")) == []
