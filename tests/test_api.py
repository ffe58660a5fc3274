"""The Python API (``import importer``), against the sandbox: each entry point, a ``Config`` with
overrides, where reports and the ledger go (never the current folder unless told), and runs
from inside an event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import write_csv

import importer
from importer import errors
from importer.sandbox import Sandbox

CONFIG = """
job: {name: apitest, kind: user, primary_keys: [phone]}
columns:
  phone: phone
  username: name
send: {concurrency: 4}
"""

PUBLIC = {
    "run", "arun", "validate", "preview", "retry", "list_runs", "load_config", "quota_today",
    "Config", "RunSummary", "Status", "Client", "SDK", "outcomes_of", "OUTCOME_SCHEMA", "source",
    "verify", "VerifySummary",
}  # fmt: skip
EXCEPTIONS = {
    "DmImportError", "UsageError", "NothingToRetry", "ConfigError", "LoadError",
    "LockedError", "LedgerError", "DiskFullError", "Interrupted", "QuotaError", "InputIncomplete",
    "OpenApiError", "OpenApiForbidden",
    "HeldError", "TruncatedInput",
}  # fmt: skip


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder: every test checks that nothing was written into it."""
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


def _job(tmp_path: Path, n: int = 20, prefix: str = "0161") -> tuple[Path, Path]:
    config = tmp_path / "job.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    rows = [[f"{prefix}{i:07d}", f"name-{i}"] for i in range(n)]
    return config, write_csv(tmp_path / "people.csv", ["phone", "name"], rows)


def test_all_is_exactly_the_api_and_the_exception_tree() -> None:
    assert set(importer.__all__) == PUBLIC | EXCEPTIONS
    assert len(importer.__all__) == len(set(importer.__all__))
    # the exception tree is every public exception of importer.errors
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }
    assert defined == EXCEPTIONS
    for name in importer.__all__:
        assert getattr(importer, name) is not None
    assert importer.ConfigError is errors.ConfigError
    assert issubclass(importer.SDK, importer.Client)


def test_import_importer_loads_neither_requests_nor_the_pipeline() -> None:
    code = (
        "import sys, importer\n"
        "heavy = ('requests', 'importer.client', 'importer.pipeline', 'importer.api')\n"
        "assert not [m for m in heavy if m in sys.modules], sorted(sys.modules)\n"
        "importer.run, importer.ConfigError\n"
        "assert 'requests' not in sys.modules\n"
        "importer.SDK\n"
        "assert 'requests' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_takes_a_config_with_overrides_a_report_dir_and_a_ledger(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    config, data = _job(tmp_path)
    cfg = importer.load_config(config)
    assert isinstance(cfg, importer.Config)
    state = tmp_path / "state" / "job.db"
    summary = importer.run(
        cfg,
        [data],
        overrides={"target.base_url": sb.url, "send.concurrency": 2},
        report_dir=tmp_path / "out",
        ledger=state,
    )
    assert isinstance(summary, importer.RunSummary)
    # 20 customers go in one batch: one request
    assert (summary.exit_code, summary.counts["ok"], summary.requests) == (0, 20, 1)
    assert summary.sending.batch_requests == 1 and summary.sending.batch_rows == 500
    assert summary.report_dir is not None and summary.report_dir.parent == tmp_path / "out"
    assert (summary.report_dir / "results.csv").is_file()
    assert state.is_file()
    assert len(sb.customers()) == 20
    assert importer.Status.OK.name == "OK"
    # the job's memory is that ledger: the same rows again, changed-only, send nothing
    again = importer.run(
        config,
        [data],
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "out2",
        ledger=state,
        changed_only=True,
    )
    assert (again.counts["unchanged"], again.requests) == (20, 0)
    runs = importer.list_runs(config, ledger=state)
    assert [r.run_id for r in runs] == [again.run_id, summary.run_id]
    assert list(cwd.iterdir()) == []


def test_a_bad_override_of_a_config_object_is_worded_as_for_a_file(tmp_path: Path) -> None:
    config, _ = _job(tmp_path)
    bad = {"send.concurrency": 0, "send.retyr": 3}
    with pytest.raises(importer.ConfigError) as from_object:
        importer.load_config(importer.load_config(config), overrides=bad)
    with pytest.raises(importer.ConfigError) as from_file:
        importer.load_config(config, overrides=bad)
    assert str(from_object.value) == (
        "invalid config <config>:\n"
        "  send.concurrency: must be >= 1, got 0\n"
        "  send.retyr: unknown key 'retyr' -- did you mean 'retry'?"
    )
    assert from_file.value.problems == from_object.value.problems
    assert str(from_file.value).startswith(f"invalid config {config}:\n")
    # and a run refuses it before anything is read
    with pytest.raises(importer.ConfigError) as info:
        importer.run(importer.load_config(config), [tmp_path / "absent.csv"], overrides=bad)
    assert info.value.problems == from_file.value.problems


def test_overrides_of_a_config_object_keep_what_it_set(tmp_path: Path) -> None:
    config, _ = _job(tmp_path)
    cfg = importer.load_config(config)
    assert importer.load_config(cfg) is cfg
    changed = importer.load_config(cfg, overrides={"send.concurrency": 7, "report.dir": "x"})
    assert (changed.send.concurrency, changed.report.dir) == (7, "x")
    assert changed.job == cfg.job and changed.columns == cfg.columns
    assert importer.load_config(cfg, overrides={"send.concurrency": 4}) == cfg


def test_without_a_report_folder_the_run_is_refused_before_anything_is_sent(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    config, data = _job(tmp_path)
    with pytest.raises(importer.ConfigError) as info:
        importer.run(config, [data], overrides={"target.base_url": sb.url})
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("report.dir", "no folder for the run's reports: neither report_dir nor report.dir is set"),
        (
            "state.path",
            "no place for the job's ledger: neither ledger, state.path nor report.dir is set",
        ),
    ]
    # a report folder alone does not say where the job's ledger is
    with pytest.raises(importer.ConfigError) as info:
        importer.run(config, [data], overrides={"target.base_url": sb.url}, report_dir="r")
    assert [p.path for p in info.value.problems] == ["state.path"]
    with pytest.raises(importer.ConfigError):
        importer.validate(config, [data])
    with pytest.raises(importer.ConfigError) as info:  # where would the job's runs be?
        importer.list_runs(config)
    assert [p.path for p in info.value.problems] == ["state.path"]
    assert sb.stats()["requests"] == 0
    assert list(cwd.iterdir()) == []
    # report.dir in the config says both; a dry run needs no ledger
    summary = importer.validate(config, [data], overrides={"report.dir": str(tmp_path / "reports")})
    assert summary.report_dir is not None and summary.report_dir.parent == tmp_path / "reports"
    assert summary.counts["valid"] == 20
    summary = importer.run(
        config,
        [data],
        overrides={"target.base_url": sb.url, "state.enabled": False},
        report_dir=tmp_path / "r",
    )
    assert summary.counts["ok"] == 20
    assert list(cwd.iterdir()) == []


def test_run_inside_a_running_event_loop(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jupyter, an async program: run() may not start an event loop on this thread
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    config, data = _job(tmp_path)

    async def main() -> importer.RunSummary:
        return importer.run(
            config,
            [data],
            overrides={"target.base_url": sb.url},
            report_dir=tmp_path / "r",
            ledger=tmp_path / "state.db",
        )

    summary = asyncio.run(main())
    assert (summary.exit_code, summary.counts["ok"]) == (0, 20)
    assert list(cwd.iterdir()) == []


def test_arun_leaves_the_event_loop_free(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    config, data = _job(tmp_path, n=300)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async def main() -> importer.RunSummary:
        ticker = asyncio.create_task(tick())
        try:
            return await importer.arun(
                importer.load_config(config),
                [data],
                overrides={"target.base_url": sb.url},
                report_dir=tmp_path / "r",
                ledger=tmp_path / "state.db",
            )
        finally:
            ticker.cancel()

    summary = asyncio.run(main())
    assert (summary.exit_code, summary.counts["ok"]) == (0, 300)
    assert ticks > 0
    assert list(cwd.iterdir()) == []


def test_preview_takes_a_config_with_overrides(tmp_path: Path, cwd: Path) -> None:
    config, data = _job(tmp_path, n=5)
    cfg = importer.load_config(config)
    shown = importer.preview(cfg, data, n=2, overrides={"job.max_value_length": 4})
    assert [r.line for r in shown.rows] == [2, 3]
    assert shown.plan.rows == 5
    assert shown.plan.rejected == 5  # every name is longer than 4 characters
    assert importer.preview(config, data).plan.valid == 5
    assert list(cwd.iterdir()) == []


def test_retry_sends_again_the_rows_a_run_did_not_deliver(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, n=50)
    state = tmp_path / "state.db"
    places = {"overrides": {"target.base_url": sb.url}, "ledger": state}
    monkeypatch.setenv("DMART_SECRET", "not-the-secret")
    failed = importer.run(config, [data], report_dir=tmp_path / "r1", **places)  # type: ignore[arg-type]
    assert failed.exit_code == 3 and failed.counts["ok"] == 0

    monkeypatch.setenv("DMART_SECRET", sb.secret)
    with pytest.raises(importer.UsageError):  # the job has no ledger there
        importer.retry(config, failed.run_id, report_dir=tmp_path / "r2", ledger=tmp_path / "x.db")
    again = importer.retry(config, failed.run_id, report_dir=tmp_path / "r2", **places)  # type: ignore[arg-type]
    assert (again.exit_code, again.counts["ok"]) == (0, 50)
    assert len(sb.customers()) == 50
    # the retry's own results: nothing left to send
    assert again.results_path is not None
    with pytest.raises(importer.NothingToRetry):
        importer.retry(config, again.results_path, report_dir=tmp_path / "r3", **places)  # type: ignore[arg-type]
    with pytest.raises(importer.LedgerError, match="is not in the ledger"):
        importer.retry(config, "20240101T000000-abcdef", report_dir=tmp_path / "r3", **places)  # type: ignore[arg-type]
    assert list(cwd.iterdir()) == []


def test_one_file_may_be_given_as_a_path_not_a_list(tmp_path: Path, cwd: Path) -> None:
    # a str is a path here, not a sequence of one-letter paths ('.', '/', ...)
    config, data = _job(tmp_path, n=3)
    reports = tmp_path / "reports"
    for one in (str(data), data):
        summary = importer.validate(config, one, report_dir=reports)
        assert summary.counts["valid"] == 3
    assert list(cwd.iterdir()) == []


def test_arguments_the_command_line_would_refuse_are_usage_errors(
    tmp_path: Path, cwd: Path
) -> None:
    config, data = _job(tmp_path, n=3)
    reports = tmp_path / "reports"
    refused = {
        "no input files: files is empty": dict(files=[]),
        "max_reject_rate must be between 0 and 1, got 5": dict(max_reject_rate=5),
        "max_reject_rate must be between 0 and 1, got -0.1": dict(max_reject_rate=-0.1),
        # found at the end of a run, after sending, this was exit 5 and a run left "killed"
        "is a folder, not a file": dict(metrics_file=tmp_path),
        f"cannot be created: {data} is not a folder": dict(metrics_file=data / "m.prom"),
    }
    for message, kwargs in refused.items():
        arguments: dict[str, Any] = {"files": [data], "dry_run": True, **kwargs}
        with pytest.raises(importer.UsageError, match=message) as info:
            importer.run(config, report_dir=reports, **arguments)
        assert info.value.exit_code == 2
    assert not reports.exists()
    assert list(cwd.iterdir()) == []


def test_arguments_of_the_wrong_type_say_what_is_expected(tmp_path: Path, cwd: Path) -> None:
    config, data = _job(tmp_path, n=3)
    with pytest.raises(TypeError, match="overrides must be a dict of dotted keys and values"):
        importer.load_config(config, overrides=[("send.concurrency", 4)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a Config or the path of a YAML file"):
        importer.validate(42, [data], report_dir=tmp_path / "r")  # type: ignore[arg-type]
    assert list(cwd.iterdir()) == []
