"""Refusing incomplete exports (issue 16): ``input.ready``, a cut last record, ``input.min_rows``
and ``input.min_size_ratio`` stop a run before anything is sent, exit code 7, against the real
sandbox over loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import dmimport, write_csv, write_file

import importer
from importer import InputIncomplete, exitcodes
from importer.ledger import Ledger
from importer.previewer import render_preview
from importer.sandbox import Sandbox

ROWS = [[f"0162{i:07d}", f"name-{i}"] for i in range(20)]


@pytest.fixture
def sb(fresh_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return fresh_sandbox()


def _config(tmp_path: Path, url: str, **input_options: Any) -> Path:
    """A customer job (phone, name) against ``url`` with ``input_options``."""
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "job": {"name": "readyjob", "kind": "user", "primary_keys": ["phone"]},
                "target": {"base_url": url},
                "columns": {"phone": "phone", "username": "name"},
                "input": input_options,
                "send": {"rate_limit": None},
                "report": {"dir": str(tmp_path / "reports")},
            }
        ),
        encoding="utf-8",
    )
    return config


def _run(tmp_path: Path, sb: Sandbox, *args: Any, **input_options: Any) -> Any:
    """``dmimport run`` of ``_config(tmp_path, sb.url, **input_options)`` with ``args``."""
    return dmimport("run", _config(tmp_path, sb.url, **input_options), *args, secret=sb.secret)


def _data(tmp_path: Path, rows: list[list[str]] = ROWS, name: str = "customers.csv") -> Path:
    return write_csv(tmp_path / name, ["phone", "name"], rows)


def _refused(out: Any, sb: Sandbox, *problems: str) -> dict[str, Any]:
    """The run exited 7 with exactly ``problems`` (one: ``...; nothing was sent``), sent
    nothing, and its summary.json says the same; the summary."""
    assert out.returncode == exitcodes.INPUT_INCOMPLETE == 7, out.stderr
    lines = out.stderr.splitlines()
    if len(problems) == 1:
        said = [f"error: {problems[0]}; nothing was sent"]
    else:
        said = [f"error: {len(problems)} input files look incomplete; nothing was sent:"]
        said += [f"  {p}" for p in problems]
    assert lines[:-1] == said
    assert lines[-1].startswith("report: ") and lines[-1].endswith("summary.json")
    assert sb.stats()["requests"] == 0
    summary = json.loads(Path(lines[-1].removeprefix("report: ")).read_text(encoding="utf-8"))
    assert summary["exit_code"] == 7 and summary["requests"] == 0 and summary["rows"] == 0
    assert summary["refused"] == "\n".join(said).removeprefix("error: ")
    return summary


def _cut_off(data: Path, last: str = "record has 1 of the header's 2 fields") -> str:
    """The problem said of ``data`` whose last record (or line: ``last``) is cut off."""
    return (
        f"{data}: its last {last} and the file does not end with a line break: the export "
        "looks cut off"
    )


def _last_run(tmp_path: Path) -> tuple[str, int | None]:
    with Ledger(tmp_path / "state" / "state.db") as led:
        record = led.runs("readyjob", limit=1)[0]
    return record.status, record.exit_code


# -- a cut last record: refused whatever input.ready says -----------------------------------------
def test_a_cut_last_csv_record_is_refused_with_exit_7_even_with_ready_none(
    tmp_path: Path, sb: Sandbox
) -> None:
    data = write_file(tmp_path / "customers.csv", "phone,name\n01620000001,a\n01620000002,b\n0162")
    out = _run(tmp_path, sb, data)
    _refused(out, sb, _cut_off(data))
    assert _last_run(tmp_path) == ("refused", 7)  # `dmimport runs` shows it


def test_a_cut_last_record_inside_quotes_is_found_by_the_loader(
    tmp_path: Path, sb: Sandbox
) -> None:
    data = write_file(tmp_path / "customers.csv", 'phone,name\n01620000001,a\n01620000002,"b')
    out = _run(tmp_path, sb, data)
    _refused(out, sb, _cut_off(data, "record ends inside a quoted field"))
    # a quoted field over two lines, the record short
    write_file(data, 'phone,name\n01620000001,"a\nb"\n"0162\n0000002"')
    out = _run(tmp_path, sb, data)
    _refused(out, sb, _cut_off(data))


def test_a_cut_last_json_line_is_refused(tmp_path: Path, sb: Sandbox) -> None:
    data = write_file(
        tmp_path / "customers.jsonl",
        '{"phone": "01620000001", "name": "a"}\n{"phone": "0162000',
    )
    out = _run(tmp_path, sb, data, "--json")
    summary = _refused(out, sb, _cut_off(data, "line (18 bytes) is not valid JSON"))
    assert json.loads(out.stdout) == summary  # --json: the refused run's summary on stdout


def test_a_cut_last_record_of_a_gzip_file_is_refused(tmp_path: Path, sb: Sandbox) -> None:
    data = tmp_path / "customers.csv.gz"
    data.write_bytes(gzip.compress(b"phone,name\n01620000001,a\n0162"))
    out = _run(tmp_path, sb, data)
    _refused(out, sb, _cut_off(data))


def test_a_gzip_file_cut_mid_stream_is_refused_as_incomplete_with_exit_7(
    tmp_path: Path, sb: Sandbox
) -> None:
    # the exporter still writing the .gz: its stream has no end yet. Was exit 2 (a bad file:
    # "fix your setup"), with no summary.json and no refused run in the ledger
    rows = "".join(f"0162{i:07d},name-{i}\n" for i in range(5000))
    packed = gzip.compress(("phone,name\n" + rows).encode())
    data = write_file(tmp_path / "customers.csv.gz", packed[: len(packed) // 2])
    out = _run(tmp_path, sb, data)
    summary = _refused(
        out, sb,
        f"{data}: it ends before the end of its gzip stream: the export looks cut off (still "
        "being written, or a copy that broke off)",
    )  # fmt: skip
    assert summary["exit_code"] == 7
    assert _last_run(tmp_path) == ("refused", 7)
    data.write_bytes(packed)  # once whole, it goes
    assert _run(tmp_path, sb, data).returncode == 0


def test_utf16_files_are_judged_by_their_characters_not_their_bytes(
    tmp_path: Path, sb: Sandbox
) -> None:
    config = _config(tmp_path, sb.url, encoding="utf-16")
    whole = write_file(tmp_path / "whole.csv", "phone,name\n01620000001,a\n", encoding="utf-16")
    out = dmimport("run", config, whole, secret=sb.secret)  # its last byte is not b"\n"
    assert out.returncode == 0, out.stderr
    cut = write_file(tmp_path / "cut.csv", "phone,name\n01620000001,a\n0162", encoding="utf-16")
    out = dmimport("run", config, cut, secret=sb.secret)
    assert out.returncode == 7, out.stderr
    assert out.stderr.splitlines()[0] == f"error: {_cut_off(cut)}; nothing was sent"
    assert sb.stats()["items"]["stored"] == 1


def test_a_whole_last_record_without_a_final_line_break_is_sent(
    tmp_path: Path, sb: Sandbox
) -> None:
    data = write_file(tmp_path / "customers.csv", "phone,name\n01620000001,a\n01620000002,b")
    out = _run(tmp_path, sb, data)
    assert out.returncode == 0, out.stderr
    assert sb.stats()["items"]["stored"] == 2


# -- input.min_rows -------------------------------------------------------------------------------
def test_min_rows_refuses_a_header_only_file_and_a_short_one(tmp_path: Path, sb: Sandbox) -> None:
    config = _config(tmp_path, sb.url, min_rows=5)
    header_only = _data(tmp_path, [], "empty.csv")
    short = _data(tmp_path, ROWS[:3], "short.csv")
    metrics = tmp_path / "dmimport.prom"
    out = dmimport("run", config, header_only, short, "--metrics-file", metrics, secret=sb.secret)
    _refused(
        out, sb,
        f"{header_only}: 0 rows (a header only), fewer than input.min_rows 5: the export "
        "looks incomplete; lower input.min_rows if the file is right",
        f"{short}: 3 rows, fewer than input.min_rows 5: the export looks incomplete; lower "
        "input.min_rows if the file is right",
    )  # fmt: skip
    # a dashboard sees the refusal: the metrics file has the run's exit code
    assert 'dmimport_exit_code{job="readyjob"} 7' in metrics.read_text(encoding="utf-8")


def test_min_rows_passes_a_file_with_enough_rows(tmp_path: Path, sb: Sandbox) -> None:
    out = _run(tmp_path, sb, _data(tmp_path), min_rows=20)
    assert out.returncode == 0, out.stderr
    assert sb.stats()["items"]["stored"] == 20


# -- input.min_size_ratio -------------------------------------------------------------------------
def test_min_size_ratio_holds_a_file_much_smaller_than_the_last_runs(
    tmp_path: Path, sb: Sandbox
) -> None:
    config = _config(tmp_path, sb.url, min_size_ratio=0.5)
    data = _data(tmp_path, ROWS[:3])
    # the first run has no ledger to judge by: not held, however small
    first = dmimport("run", config, data, secret=sb.secret)
    assert first.returncode == 0, first.stderr
    _data(tmp_path, ROWS)  # the full export: the next night's baseline
    assert dmimport("run", config, data, secret=sb.secret).returncode == 0
    was = data.stat().st_size
    sent = sb.stats()["requests"]
    _data(tmp_path, ROWS[:4])  # a cut export, every record whole
    size = data.stat().st_size
    out = dmimport("run", config, data, secret=sb.secret)
    assert sb.stats()["requests"] == sent
    assert out.returncode == 7, out.stderr
    assert out.stderr.splitlines()[0] == (
        f"error: {data}: {size:,} bytes, {100 * size / was:.0f} % of the last run's {was:,} "
        "bytes (input.min_size_ratio 0.5): the export looks incomplete; run again once it is "
        "complete, or lower input.min_size_ratio if the file really shrank; nothing was sent"
    )
    assert _last_run(tmp_path) == ("refused", 7)
    # the refused run is not the baseline: the same small file is refused again
    assert dmimport("run", config, data, secret=sb.secret).returncode == 7
    _data(tmp_path, ROWS[:12])  # more than half of the last accepted input
    assert dmimport("run", config, data, secret=sb.secret).returncode == 0


def test_min_size_ratio_holds_several_dated_files_much_smaller_together(
    tmp_path: Path, sb: Sandbox
) -> None:
    # parts with the date in their names: no path matches the last run's, and each run read
    # two files, so no file had anything to be compared with: a cut export went through
    config = _config(tmp_path, sb.url, min_size_ratio=0.5)
    rows = [[f"0163{i:07d}", f"name-{i}"] for i in range(200)]
    yesterday = [_data(tmp_path, rows[:100], f"part{p}_20261205.csv") for p in (1, 2)]
    assert dmimport("run", config, *yesterday, secret=sb.secret).returncode == 0
    was = sum(f.stat().st_size for f in yesterday)
    sent = sb.stats()["requests"]
    today = [_data(tmp_path, rows[:10], f"part{p}_20261206.csv") for p in (1, 2)]
    size = sum(f.stat().st_size for f in today)
    out = dmimport("run", config, *today, secret=sb.secret)
    why = (
        f"this run's 2 files hold {size:,} bytes in all, {100 * size / was:.0f} % of the last "
        f"run's 2 files' {was:,} bytes (input.min_size_ratio 0.5): the export looks incomplete; "
        "run again once it is complete, or lower input.min_size_ratio if the input really shrank"
    )
    assert out.returncode == 7, out.stderr
    assert out.stderr.splitlines()[:-1] == [
        "error: 2 input files look incomplete; nothing was sent:",
        *(f"  {f}: {why}" for f in today),
    ]
    assert sb.stats()["requests"] == sent
    assert _last_run(tmp_path) == ("refused", 7)
    # the whole of today's export, both parts: let through
    today = [
        _data(tmp_path, rows[100 * (p - 1) : 100 * p], f"part{p}_20261206.csv") for p in (1, 2)
    ]
    assert dmimport("run", config, *today, secret=sb.secret).returncode == 0


# -- input.ready: manifest ------------------------------------------------------------------------
def _manifest(data: Path, **fields: Any) -> Path:
    path = data.with_name(data.name + ".manifest.json")
    path.write_text(json.dumps(fields), encoding="utf-8")
    return path


def test_manifest_missing_is_refused(tmp_path: Path, sb: Sandbox) -> None:
    data = write_file(tmp_path / "customers.csv", b"")  # not even a header yet: exit 7, not 2
    out = _run(tmp_path, sb, data, ready="manifest")
    _refused(
        out, sb,
        f"{data}: no manifest customers.csv.manifest.json and no _SUCCESS marker in "
        f"{tmp_path} (input.ready: manifest): the export has not said it is complete",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "found"),
    [
        ({"bytes": 99}, "{size:,} bytes, the manifest customers.csv.manifest.json says 99"),
        ({"rows": 21}, "20 rows, the manifest customers.csv.manifest.json says 21"),
        (
            {"sha256": "ab" * 32},
            "SHA-256 {sha:.12}..., the manifest customers.csv.manifest.json says abababababab...",
        ),
    ],
)
def test_a_manifest_field_that_does_not_match_is_refused(
    tmp_path: Path, sb: Sandbox, fields: dict[str, Any], found: str
) -> None:
    data = _data(tmp_path)
    _manifest(data, **fields)
    out = _run(tmp_path, sb, data, ready="manifest")
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    said = found.format(size=data.stat().st_size, sha=sha)
    _refused(out, sb, f"{data}: {said} (input.ready: manifest)")


def test_a_manifest_that_matches_lets_the_run_send(tmp_path: Path, sb: Sandbox) -> None:
    data = _data(tmp_path)
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    _manifest(data, rows=20, bytes=data.stat().st_size, sha256=sha)
    out = _run(tmp_path, sb, data, ready="manifest")
    assert out.returncode == 0, out.stderr
    assert sb.stats()["items"]["stored"] == 20


def test_a_redshift_manifest_and_a_success_marker_are_accepted(tmp_path: Path, sb: Sandbox) -> None:
    config = _config(tmp_path, sb.url, ready="manifest")
    data = _data(tmp_path)
    meta = {"content_length": data.stat().st_size, "record_count": 20}
    _manifest(data, entries=[{"url": "s3://bucket/x/customers.csv", "meta": meta}])
    assert dmimport("run", config, data, secret=sb.secret).returncode == 0
    other = tmp_path / "spark"
    other.mkdir()
    marked = _data(other, ROWS[:5])
    (other / "_SUCCESS").touch()
    assert dmimport("run", config, marked, secret=sb.secret).returncode == 0
    assert sb.stats()["items"]["stored"] == 25


def test_a_folder_or_a_pattern_never_reads_a_manifest_as_data(tmp_path: Path, sb: Sandbox) -> None:
    config = _config(tmp_path, sb.url, ready="manifest")
    exports = tmp_path / "exports"
    exports.mkdir()
    data = _data(exports)
    _manifest(data, rows=20, bytes=data.stat().st_size)
    for given in (exports, exports / "customers*"):
        out = dmimport("run", config, given, "--json", "--full", secret=sb.secret)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert [f["path"] for f in summary["files"]] == [str(data)]
        assert summary["rows"] == 20
    assert sb.stats()["items"]["stored"] == 40


def test_a_success_marker_older_than_the_file_is_refused(tmp_path: Path, sb: Sandbox) -> None:
    marker = tmp_path / "_SUCCESS"
    marker.touch()
    os.utime(marker, (time.time() - 3600, time.time() - 3600))  # yesterday's export
    data = _data(tmp_path)
    out = _run(tmp_path, sb, data, ready="manifest")
    _refused(
        out, sb,
        f"{data}: the _SUCCESS marker is older than the file (the file was written again "
        "after it): the export has not said it is complete (input.ready: manifest)",
    )  # fmt: skip


# -- input.ready: {stable_for_s: N} ---------------------------------------------------------------
def test_a_file_unchanged_for_long_enough_passes_at_once(tmp_path: Path, sb: Sandbox) -> None:
    data = _data(tmp_path)
    os.utime(data, (time.time() - 120, time.time() - 120))
    config = _config(tmp_path, sb.url, ready={"stable_for_s": 60})
    t0 = time.monotonic()
    out = dmimport("run", config, data, secret=sb.secret)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 30  # it did not wait the 60 s
    assert sb.stats()["items"]["stored"] == 20


def test_a_fresh_file_is_sent_once_it_stayed_unchanged(
    tmp_path: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path)
    config = importer.load_config(_config(tmp_path, sb.url, ready={"stable_for_s": 1.5}))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    t0 = time.monotonic()
    summary = importer.run(config, [data])
    waited = time.monotonic() - t0
    assert summary.exit_code == 0 and summary.counts["ok"] == 20
    assert waited >= 1.0  # it waited for the file's 1.5 quiet seconds


def test_a_file_still_empty_when_the_run_starts_is_waited_for_not_refused_as_empty(
    tmp_path: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_file(tmp_path / "customers.csv", b"")  # the exporter has only created it
    config = importer.load_config(_config(tmp_path, sb.url, ready={"stable_for_s": 1}))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    writer = threading.Timer(0.5, lambda: _data(tmp_path))
    writer.start()
    try:
        summary = importer.run(config, [data])
    finally:
        writer.join()
    assert summary.exit_code == 0 and summary.counts["ok"] == 20


@pytest.fixture
def growing(tmp_path: Path) -> Iterator[Path]:
    """A file a writer appends a record to every 0.1 s until the test ends."""
    data = _data(tmp_path)
    stop = threading.Event()

    def append() -> None:
        i = 0
        while not stop.wait(0.1):
            with open(data, "a", encoding="utf-8") as fh:
                fh.write(f"0170{i:07d},late-{i}\n")
            i += 1

    writer = threading.Thread(target=append)
    writer.start()
    try:
        yield data
    finally:
        stop.set()
        writer.join()


def test_a_file_that_keeps_changing_is_refused_after_waiting(
    tmp_path: Path, sb: Sandbox, growing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 s: a writer appending every 0.1 s on a loaded machine never pauses that long
    config = importer.load_config(_config(tmp_path, sb.url, ready={"stable_for_s": 1}))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    t0 = time.monotonic()
    with pytest.raises(InputIncomplete) as caught:
        importer.run(config, [growing])
    waited = time.monotonic() - t0
    assert 2.9 <= waited < 15  # 3 x stable_for_s, then refused
    [problem] = caught.value.problems
    assert problem.startswith(f"{growing}: still being written: its size went from ")
    assert problem.endswith(
        " s of waiting, never unchanged for 1 s (input.ready: {stable_for_s: 1})"
    )
    assert caught.value.exit_code == 7
    assert caught.value.summary.refused == f"{problem}; nothing was sent"
    assert sb.stats()["requests"] == 0


# -- validate, preview, the config ----------------------------------------------------------------
def test_validate_refuses_and_preview_warns(tmp_path: Path, sb: Sandbox) -> None:
    data = write_file(tmp_path / "customers.csv", "phone,name\n01620000001,a\n0162")
    config = _config(tmp_path, sb.url)
    problem = _cut_off(data)
    out = dmimport("validate", config, data)
    assert out.returncode == 7
    assert out.stderr.splitlines()[0] == f"error: {problem}; nothing was sent"
    assert not (tmp_path / "state").exists()  # a dry run records nothing in a ledger
    got = importer.preview(config, data)
    assert got.incomplete == problem
    assert render_preview(got).splitlines()[2] == (
        f"warning: a run would refuse it (exit 7): {problem}"
    )
    assert sb.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("ready", "said"),
    [
        ("yes", "expected none, manifest or {stable_for_s: N}, got 'yes'"),
        ({"stable_for_s": 0}, "stable_for_s must be > 0 and <= 86,400 (seconds), got 0"),
        ({"stable_s": 5}, "expected none, manifest or {stable_for_s: N}: unknown key 'stable_s'"),
    ],
)
def test_a_bad_ready_setting_is_refused_naming_the_key(
    tmp_path: Path, sb: Sandbox, ready: Any, said: str
) -> None:
    out = _run(tmp_path, sb, _data(tmp_path), ready=ready)
    assert out.returncode == 2
    [line] = [x for x in out.stderr.splitlines() if "input.ready" in x]
    assert line.startswith("  input.ready (line ")
    assert line.endswith(f"): {said} -- e.g. ready: manifest, or ready: {{stable_for_s: 60}}")
    assert sb.stats()["requests"] == 0
