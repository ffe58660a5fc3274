"""The command line as a user runs it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, cli_env, dmimport

from importer.sandbox import Sandbox

pytestmark = pytest.mark.slow  # the command in a subprocess


@pytest.fixture(autouse=True)
def _checkout_files(tmp_path: Path) -> None:
    """The repository's configs/ and sample_data/ linked into the test's own folder (its
    current folder, see conftest), so that a default reports/ and its ledger stay there."""
    for name in ("configs", "sample_data"):
        (tmp_path / name).symlink_to(ROOT / name)


def test_version_and_help() -> None:
    out = dmimport("--version")
    assert out.returncode == 0 and out.stdout.startswith("dmimport ")
    helptext = dmimport("--help").stdout
    for command in ("run", "validate", "check-config", "sandbox"):
        assert command in helptext


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    ok = dmimport("check-config", "configs/customers.yaml")
    assert ok.returncode == 0
    assert ok.stdout.strip() == ("configs/customers.yaml: ok (job customers, kind user, 9 columns)")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "job: {kind: user, primary_keys: [phone]}\ncolumns: {phone: p}\nsend: {concurency: 4}\n"
    )
    out = dmimport("check-config", bad)
    assert out.returncode == 2
    assert "send.concurency" in out.stderr and "did you mean 'concurrency'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_sample_against_sandbox_exit_code_and_summary(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    out = dmimport(
        "run", "configs/customers.yaml", "sample_data/customers.csv",
        "--base-url", sb.url, "--report-dir", tmp_path, "--quiet",
        env={"DMART_SECRET": sb.secret},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "rejected" in out.stdout and "exit code 1" in out.stdout
    assert "Traceback" not in out.stderr
    assert len(sb.customers()) == 9
    # the 9 valid rows went in one batch, and the summary says so
    lines = out.stdout.splitlines()
    at = lines.index(next(ln for ln in lines if ln.startswith("  requests ")))
    assert lines[at].split() == ["requests", "1"]
    assert lines[at + 1].strip() == "1 batch of up to 500 rows"


def test_run_json_summary(fresh_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = fresh_sandbox()
    out = dmimport(
        "run", "configs/delete_customers.yaml", "sample_data/delete_customers.csv",
        "--base-url", sb.url, "--report-dir", tmp_path, "--json", "--concurrency", "2",
        env={"DMART_SECRET": sb.secret},
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["counts"]["ok"] == 3
    # deletes go one a request (no batch form is documented)
    assert summary["requests"] == 3
    assert summary["sending"] == {
        "requests": 3, "batch_requests": 0, "bisect_requests": 0, "too_big_splits": 0,
        "batch_rows": 1, "late_resends": 0, "late_resend_failures": 0,
    }  # fmt: skip
    assert summary["exit_code"] == out.returncode


def test_validate_sends_nothing_and_needs_no_secret(tmp_path: Path) -> None:
    out = dmimport(
        "validate", "configs/customers.yaml", "sample_data/customers_gb18030.csv",
        "--report-dir", tmp_path, "--json",
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["mode"] == "dry-run"
    assert (summary["counts"]["valid"], summary["counts"]["rejected"]) == (4, 1)
    assert out.returncode == 1


def test_conflicting_flags_are_refused_before_any_work() -> None:
    out = dmimport(
        "run", "configs/customers.yaml", "sample_data/customers.csv", "--dry-run", "--debug"
    )
    assert out.returncode == 2
    assert "--dry-run and --debug exclude each other" in out.stderr


def test_missing_input_file_is_a_clear_error(tmp_path: Path) -> None:
    out = dmimport("validate", "configs/customers.yaml", tmp_path / "nope.csv")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert "nope.csv" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_secret_refuses_the_run(tmp_path: Path) -> None:
    out = dmimport("run", "configs/customers.yaml", "sample_data/customers.csv")
    assert out.returncode == 2
    assert "environment variable DMART_SECRET is not set" in out.stderr


def test_fatal_secret_aborts_with_exit_code_3(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    out = dmimport(
        "run", "configs/customers.yaml", "sample_data/customers.csv",
        "--base-url", sb.url, "--report-dir", tmp_path,
        env={"DMART_SECRET": "wrong-secret"},
    )  # fmt: skip
    assert out.returncode == 3
    assert "ABORTED: 20000 Authentication failed" in out.stdout
    assert "wrong-secret" not in out.stdout + out.stderr


def test_sandbox_subcommand_help() -> None:
    out = dmimport("sandbox", "serve", "--help")
    assert out.returncode == 0
    assert "--fault-seed" in out.stdout


def test_config_error_shows_the_yaml_line_with_a_pointer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: p\n"
        "  age: {from: a, type: int}\nsend: {concurency: 4}\n"
    )
    out = dmimport("check-config", bad)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert "    4 |   age: {from: a, type: int}" in lines
    pointer = lines[lines.index("    4 |   age: {from: a, type: int}") + 1]
    assert pointer == (
        "      |                  ^ expected one of string, integer, number, boolean, datetime,"
        " got 'int'"
    )
    assert "    5 | send: {concurency: 4}" in lines


def test_turning_tls_verification_off_is_loudly_warned(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    text = (ROOT / "configs/customers.yaml").read_text(encoding="utf-8")
    cfg.write_text(text.replace("  debug: false\n", "  debug: false\n  tls_verify: false\n"))
    out = dmimport("run", cfg, "sample_data/customers.csv", "--report-dir", tmp_path)
    assert "TLS certificate verification is OFF" in out.stderr


def _into_a_closed_pipe(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``dmimport ARGS | reader`` where the reader has already exited (as ``head`` does once
    it has its lines): every write to stdout fails with EPIPE."""
    read_end, write_end = os.pipe()
    reader = subprocess.Popen([sys.executable, "-c", "pass"], stdin=read_end)
    os.close(read_end)
    assert reader.wait(timeout=60) == 0
    try:
        return dmimport(*args, stdout=write_end, stderr=subprocess.PIPE, cwd=cwd, env=env)
    finally:
        os.close(write_end)


def test_a_closed_stdout_pipe_ends_quietly(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # issue 11 #23: `dmimport validate ... | head` ended with "internal error: BrokenPipeError"
    (tmp_path / "job.yaml").write_text(
        "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: phone\n  username: name\n",
        encoding="utf-8",
    )
    rows = "".join(f"1380000{i:04d},name {i}\n" for i in range(600))
    (tmp_path / "c.csv").write_text("phone,name\n" + rows + "x,y,z\n", encoding="utf-8")
    for json_flag in ([], ["--json"]):
        out = _into_a_closed_pipe("validate", "job.yaml", "c.csv", *json_flag, cwd=tmp_path)
        assert (out.returncode, out.stderr) == (1, "")  # the run's own exit code, no message
    summaries = sorted(tmp_path.glob("reports/*/summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        summary = json.loads(path.read_text(encoding="utf-8"))
        assert (summary["rows"], summary["counts"]["valid"]) == (601, 600)
    out = _into_a_closed_pipe("preview", "job.yaml", "c.csv", "-n", "500", cwd=tmp_path)
    assert (out.returncode, out.stderr) == (0, "")
    # a real run: sent, reported and recorded as finished all the same
    sb = fresh_sandbox()
    out = _into_a_closed_pipe(
        "run", "job.yaml", "c.csv", "--base-url", sb.url, cwd=tmp_path,
        env={"DMART_SECRET": sb.secret},
    )  # fmt: skip
    assert (out.returncode, out.stderr) == (1, "")
    assert len(sb.customers()) == 600
    runs = dmimport("runs", "job.yaml", "--json", cwd=tmp_path)
    assert [(r["status"], r["exit_code"], r["counts"]["ok"]) for r in json.loads(runs.stdout)] == [
        ("done", 1, 600)
    ]


# SIGTERM sent to this process while the run path (`importer.api`, and the pipeline with it) is
# being imported (the signal is delivered at the import of `importer.ledger`, which happens
# while `importer.api` is imported)
_SIGTERM_DURING_IMPORT = """
import importlib.abc, os, signal, sys

class SigtermOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "importer.ledger" and "importer.api" in sys.modules:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SigtermOnImport())
from importer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_the_pipeline_is_imported_exits_143_in_one_line(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # was: "internal error: ImportError: cannot import name 'Interrupted' from partially
    # initialized module 'importer.pipeline'", exit 5; or, when a library's optional import
    # swallowed that ImportError, the signal was lost and the run went on to exit 0
    sb = fresh_sandbox()
    env = cli_env(sb.secret)
    out = subprocess.run(
        [sys.executable, "-c", _SIGTERM_DURING_IMPORT, "run", ROOT / "configs/customers.yaml",
         ROOT / "sample_data/customers.csv", "--base-url", sb.url, "--report-dir", tmp_path,
         "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert (out.returncode, out.stderr, out.stdout) == (143, "interrupted (SIGTERM)\n", "")
    assert sb.stats()["requests"] == 0


def test_exit_1_means_rows_only_nothing_to_retry_exits_0_with_a_message(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    env = {"DMART_SECRET": sb.secret}
    first = dmimport(
        "run", "configs/delete_customers.yaml", "sample_data/delete_customers.csv",
        "--base-url", sb.url, "--report-dir", tmp_path, "--json", env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    results = json.loads(first.stdout)["results"]
    out = dmimport("retry", "configs/delete_customers.yaml", results, "--base-url", sb.url, env=env)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == f"nothing to retry: {results} has no failed or not_sent rows\n"
    # --json stays JSON, for a script reading it
    out = dmimport(
        "retry", "configs/delete_customers.yaml", results, "--base-url", sb.url, "--json", env=env
    )  # fmt: skip
    assert (out.returncode, out.stderr) == (0, "")
    assert json.loads(out.stdout) == {
        "exit_code": 0,
        "nothing_to_retry": f"nothing to retry: {results} has no failed or not_sent rows",
    }


def test_a_command_that_needs_a_ledger_before_the_first_run_is_a_usage_error(
    tmp_path: Path,
) -> None:
    config = ROOT / "configs" / "customers.yaml"
    ledger = Path("state") / "state.db"  # next to the config's report.dir (reports)
    advice = (
        f"error: no ledger at {ledger}: no run of this job has been recorded yet; "
        "`dmimport run CONFIG FILES` records one (or set state.path to the job's ledger)\n"
    )
    runs = dmimport("runs", config, cwd=tmp_path)
    assert (runs.returncode, runs.stdout, runs.stderr) == (2, "", advice)
    retry = dmimport("retry", config, "20261201T020000-abcdef", cwd=tmp_path)
    assert (retry.returncode, retry.stdout, retry.stderr) == (2, "", advice)


def test_dmimport_allocates_arrow_buffers_from_jemalloc_where_pyarrow_has_it() -> None:
    # what a run frees goes back (mimalloc kept it: a 200,000-row send peaked 60 MB higher)
    code = (
        "import pyarrow as pa, importer.cli as c; "
        "pa.jemalloc_memory_pool(); print(c.arrow_memory_pool())"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "jemalloc", out.stderr
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # the user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "system", out.stderr
