"""Reports for people (issue 14 #8): results.csv opens in Excel (UTF-8 with a byte-order mark,
or ``report.encoding``), ``rejects.reasons.csv`` says why each rejected row is there while the
rejects files stay importable, ``--encoding`` on run/validate/preview, and an encoding
mismatch says what the file looks like instead of asking to set what is set."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from helpers import dmimport, write_file

from importer.api import run, validate
from importer.errors import ConfigError, LoadError
from importer.report import RESULT_COLUMNS, RunSummary, read_results
from importer.sandbox import Sandbox

CONFIG = """
job: {{name: members, kind: user, primary_keys: [phone]}}
columns:
  phone: 手机号
  username: 姓名
  age: {{from: 年龄, type: integer}}
send: {{concurrency: 4, retry: {{max_attempts: 2, initial_backoff_s: 0.01, max_backoff_s: 0.02}}}}
{extra}
"""
HEADER = "手机号,姓名,年龄,备注\n"
REASON_COLUMNS = ["file", "line", "column", "errcode", "reason"]


def _config(tmp_path: Path, extra: str = "") -> Path:
    return write_file(tmp_path / "job.yaml", CONFIG.format(extra=extra))


def _run(
    sb: Sandbox, config: Path, files: list[Path], tmp_path: Path, **kwargs: object
) -> RunSummary:
    return run(
        config,
        files,
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "rep",
        ledger=tmp_path / "state.db",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def secret(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("DMART_SECRET", sandbox.secret)
    return sandbox


# -- results.csv: UTF-8 with a BOM by default, or report.encoding ---------------------------------


def test_results_csv_starts_with_a_bom_and_reads_back_exactly_with_utf8_sig(
    secret: Sandbox, tmp_path: Path
) -> None:
    data = write_file(
        tmp_path / "会员.csv", HEADER + "13800138000,张三,30,好\n13800138001,李四,三十,\n"
    )

    summary = _run(secret, _config(tmp_path), [data], tmp_path)

    assert summary.results_path is not None
    raw = summary.results_path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    assert raw[3:].decode("utf-8").startswith('"file","line","kind"')  # one mark, then text
    with open(summary.results_path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(RESULT_COLUMNS)
    frame = pd.read_csv(summary.results_path, encoding="utf-8-sig", dtype=str)
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert frame["errmsg"].tolist()[1] == "column 年龄 (property age): '三十' is not an integer"
    assert frame["file"].tolist() == [str(data), str(data)]
    # retry's reader takes the mark off too
    assert [(r.line, r.status) for r in read_results(summary.results_path)] == [
        (2, "ok"),
        (3, "rejected"),
    ]


def test_report_encoding_gb18030_writes_results_and_reasons_in_gb18030_and_rejects_as_input(
    secret: Sandbox, tmp_path: Path
) -> None:
    data = write_file(tmp_path / "c.csv", HEADER + "13800138000,张三,30,\n13800138001,李四,三十,\n")

    summary = _run(secret, _config(tmp_path, "report: {encoding: gb18030}"), [data], tmp_path)

    assert summary.results_path is not None and summary.reasons_path is not None
    raw = summary.results_path.read_bytes()
    assert not raw.startswith(codecs.BOM_UTF8)
    text = raw.decode("gb18030")
    assert "column 年龄 (property age): '三十' is not an integer" in text
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    frame = pd.read_csv(summary.results_path, encoding="gb18030", dtype=str)
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert not summary.reasons_path.read_bytes().startswith(codecs.BOM_UTF8)
    reasons = pd.read_csv(summary.reasons_path, encoding="gb18030", dtype=str)
    assert reasons.columns.tolist() == [*REASON_COLUMNS, "手机号", "姓名", "年龄", "备注"]
    assert reasons.iloc[0].tolist()[:8] == [
        str(data),
        "3",
        "年龄",
        "20003",
        "column 年龄 (property age): '三十' is not an integer",
        "13800138001",
        "李四",
        "三十",
    ]
    # the rejects file keeps the input's own encoding (UTF-8, no mark), to import again
    assert summary.rejects_paths[0].read_bytes() == (HEADER + "13800138001,李四,三十,\n").encode()
    # read back with the config's report.encoding, or by a config that has since changed
    for encoding in ("gb18030", "utf-8-sig", None):
        lines = read_results(summary.results_path, encoding)
        assert [(r.line, r.status) for r in lines] == [(2, "ok"), (3, "rejected")]


def test_a_results_csv_without_a_mark_reads_back_as_utf8_after_the_config_said_gb18030(
    secret: Sandbox, tmp_path: Path
) -> None:
    # written before (UTF-8 without a mark: earlier versions, or report.encoding: utf-8), then
    # the config changed to report.encoding: gb18030: `dmimport retry CONFIG results.csv`
    data = write_file(tmp_path / "会员 名单.csv", HEADER + "13800138000,张三,x,\n")
    plain = _run(secret, _config(tmp_path, "report: {encoding: utf-8}"), [data], tmp_path)
    assert plain.results_path is not None
    lines = list(read_results(plain.results_path, "gb18030"))
    assert [(r.file, r.line, r.status) for r in lines] == [(str(data), 2, "rejected")]


def test_report_encoding_utf8_has_no_bom_and_jsonl_never_has_one(
    secret: Sandbox, tmp_path: Path
) -> None:
    data = write_file(tmp_path / "c.csv", HEADER + "13800138000,张三,x,\n")

    plain = _run(secret, _config(tmp_path, "report: {encoding: utf-8}"), [data], tmp_path)
    jsonl = _run(secret, _config(tmp_path, "report: {format: jsonl}"), [data], tmp_path)

    assert plain.results_path is not None and plain.reasons_path is not None
    assert plain.results_path.read_bytes().startswith(b'"file","line"')
    assert plain.reasons_path.read_bytes().startswith(b'"file","line","column","errcode","reason",')
    assert jsonl.results_path is not None and jsonl.results_path.suffix == ".jsonl"
    first = jsonl.results_path.read_bytes().splitlines()[0]
    assert json.loads(first)["errmsg"] == "column 年龄 (property age): 'x' is not an integer"
    # the side file is CSV in report.encoding whatever the results' format: a mark by default
    assert jsonl.reasons_path is not None
    assert jsonl.reasons_path.read_bytes().startswith(codecs.BOM_UTF8 + b'"file","line",')


def test_an_unknown_report_encoding_is_refused_naming_the_choices(tmp_path: Path) -> None:
    data = write_file(tmp_path / "c.csv", HEADER)
    with pytest.raises(ConfigError) as info:
        validate(_config(tmp_path, "report: {encoding: latin-1}"), [data])
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("report.encoding", "expected one of utf-8-sig, utf-8, gb18030, got 'latin-1'")
    ]


# -- rejects.reasons.csv next to rejects files that stay importable -------------------------------


def test_two_inputs_rejects_stay_importable_and_reasons_say_line_and_why(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    shop = write_file(
        tmp_path / "shop.csv",
        HEADER
        + "13800138000,张三,30,好\n"
        + "13800138001,李四,三十,=1+1\n"  # line 3: not an integer
        + '13800138002,"王,五",4\n'  # line 4: a field short
        + "13800138003,赵六,40,\n",
    )
    crm = write_file(
        tmp_path / "crm.csv",
        "手机号,姓名,年龄\n13800138010,钱七,1\n13800138011,孙八,abc\n",
        encoding="gb18030",
    )
    config = _config(tmp_path)

    summary = _run(sb, config, [shop, crm], tmp_path)

    assert summary.counts["ok"] == 3 and summary.counts["rejected"] == 3
    rejects = {p.name: p for p in summary.rejects_paths}
    assert sorted(rejects) == ["rejects-crm.csv", "rejects-shop.csv"]
    # the rejects files: the rows as they were, in each input's encoding, nothing added
    assert rejects["rejects-shop.csv"].read_bytes() == (
        HEADER + "13800138001,李四,三十,=1+1\n" + '13800138002,"王,五",4\n'
    ).encode("utf-8")
    assert rejects["rejects-crm.csv"].read_bytes() == (
        "手机号,姓名,年龄\n13800138011,孙八,abc\n".encode("gb18030")
    )
    # the side file: one line per rejected row, its line and reason, then its fields
    assert summary.reasons_path == summary.report_dir / "rejects.reasons.csv"  # type: ignore[operator]
    assert json.loads((summary.report_dir / "summary.json").read_text())["rejects_reasons"] == (  # type: ignore[operator]
        str(summary.reasons_path)
    )
    assert summary.reasons_path.read_bytes().startswith(codecs.BOM_UTF8)
    with open(summary.reasons_path, encoding="utf-8-sig", newline="") as fh:
        got = list(csv.reader(fh))
    # rows in line order within a batch; batches (and files) as they finish
    assert [got[0], *sorted(got[1:], key=lambda r: (r[0] != str(shop), int(r[1])))] == [
        [*REASON_COLUMNS, "手机号", "姓名", "年龄", "备注"],
        [
            str(shop), "3", "年龄", "20003",
            "column 年龄 (property age): '三十' is not an integer",
            "13800138001", "李四", "三十", "'=1+1",
        ],
        [str(shop), "4", "", "", "expected 4 fields, found 3", "13800138002", "王,五", "4", ""],
        [
            str(crm), "3", "年龄", "20003",
            "column 年龄 (property age): 'abc' is not an integer",
            "13800138011", "孙八", "abc", "",
        ],
    ]  # fmt: skip
    frame = pd.read_csv(summary.reasons_path, encoding="utf-8-sig", dtype=str)
    assert frame.columns.tolist()[:5] == REASON_COLUMNS
    assert sorted(zip(frame["file"], frame["line"], strict=True)) == [
        (str(crm), "3"),
        (str(shop), "3"),
        (str(shop), "4"),
    ]

    # the workflow: fix the rejects files as they are, import them again
    fixed_shop = tmp_path / "fixed-shop.csv"
    fixed_shop.write_bytes(
        rejects["rejects-shop.csv"]
        .read_bytes()
        .replace("三十".encode(), b"30")
        .replace('"王,五",4'.encode(), '"王,五",4,'.encode())
    )
    fixed_crm = tmp_path / "fixed-crm.csv"
    fixed_crm.write_bytes(rejects["rejects-crm.csv"].read_bytes().replace(b"abc", b"22"))
    again = _run(sb, config, [fixed_shop, fixed_crm], tmp_path / "again")
    assert again.counts["ok"] == 3 and again.rejects_paths == []
    assert again.reasons_path is None
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert stored["13800138002"]["username"] == "王,五"
    assert stored["13800138011"] == {"phone": "13800138011", "username": "孙八", "age": 22}


def test_jsonl_reasons_carry_the_line_as_read(secret: Sandbox, tmp_path: Path) -> None:
    lines = [
        {"手机号": "13800138000", "姓名": "张三", "年龄": "1"},
        {"手机号": "13800138001", "姓名": "李四", "年龄": "x"},
    ]
    data = write_file(
        tmp_path / "c.jsonl",
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines) + '{"手机号": 1\n',
    )

    summary = _run(secret, _config(tmp_path), [data], tmp_path)

    assert summary.reasons_path is not None
    with open(summary.reasons_path, encoding="utf-8-sig", newline="") as fh:
        got = list(csv.reader(fh))
    assert got == [
        [*REASON_COLUMNS, "record"],
        [
            str(data), "2", "年龄", "20003", "column 年龄 (property age): 'x' is not an integer",
            json.dumps(lines[1], ensure_ascii=False),
        ],
        [
            str(data), "3", "", "",
            "invalid JSON: Expecting ',' delimiter at column 10", '{"手机号": 1',
        ],
    ]  # fmt: skip


# -- --encoding, and what a mismatch says ---------------------------------------------------------


def test_encoding_flag_overrides_input_encoding_and_an_unknown_one_exits_2(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "input: {encoding: utf-8}\ntarget: {base_url: 'http://127.0.0.1:9'}")
    data = write_file(tmp_path / "c.csv", HEADER + "13800138000,张三,30,\n", encoding="gb18030")

    bad = dmimport("validate", config, data, "--encoding", "nope", cwd=tmp_path)
    ok = dmimport("validate", config, data, "--encoding", "gb18030", "--json", cwd=tmp_path)
    shown = dmimport("preview", config, data, "--encoding", "gb18030", cwd=tmp_path)
    refused = dmimport("preview", config, data, cwd=tmp_path)

    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == (
        "dmimport validate: error: argument --encoding: unknown encoding 'nope' "
        "(e.g. utf-8, gb18030, auto)"
    )
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert (summary["files"][0]["encoding"], summary["counts"]["valid"]) == ("gb18030", 1)
    assert shown.returncode == 0 and '"username":"张三"' in shown.stdout
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: {data}: input.encoding is utf-8, but line 1 (the header) is not utf-8 text: it "
        "reads as GB18030 Chinese ('手机号,姓名,年龄,备注'); set input.encoding: gb18030 or "
        "auto, or --encoding gb18030"
    )


def test_a_gb18030_file_with_its_byte_order_mark_read_as_utf8_is_said_to_be_gb18030(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "input: {encoding: utf-8}")
    data = write_file(tmp_path / "c.csv", "\ufeff" + HEADER + "13800138000,张三,30,\n",
                      encoding="gb18030")  # fmt: skip
    assert data.read_bytes().startswith(b"\x84\x31\x95\x33")
    refused = dmimport("validate", config, data, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: {data}: input.encoding is utf-8, but line 1 (the header) is not utf-8 text: it "
        "reads as GB18030 Chinese ('手机号,姓名,年龄,备注'); set input.encoding: gb18030 or "
        "auto, or --encoding gb18030"
    )
    ok = dmimport("validate", config, data, "--encoding", "gb18030", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["counts"]["valid"] == 1


def test_a_utf8_file_read_as_gb18030_is_refused_saying_it_is_utf8(tmp_path: Path) -> None:
    config = _config(tmp_path, "input: {encoding: gb18030}")
    header = write_file(tmp_path / "h.csv", HEADER + "13800138000,张三,30,\n")

    with pytest.raises(LoadError) as first:
        validate(config, [header], report_dir=tmp_path / "rep")
    assert str(first.value) == (
        f"{header}: input.encoding is gb18030, but the bytes at line 1 are not gb18030 but "
        "valid UTF-8 (as is all the text of the file): the file is UTF-8; set input.encoding: "
        "utf-8 or auto, or --encoding utf-8"
    )

    ascii_header = write_file(
        tmp_path / "a.csv", "phone,name\n13800138000,zhang\n13800138001,李四伟\n"
    )
    other = write_file(
        tmp_path / "other.yaml",
        "job: {kind: user, primary_keys: [phone]}\ncolumns: {phone: phone, username: name}\n"
        "input: {encoding: gb18030}\n",
    )
    with pytest.raises(LoadError) as third:
        validate(other, [ascii_header], report_dir=tmp_path / "rep")
    assert str(third.value) == (
        f"{ascii_header}: input.encoding is gb18030, but the bytes at line 3 are not gb18030 "
        "but valid UTF-8 (as is all the text of the file): the file is UTF-8; set "
        "input.encoding: utf-8 or auto, or --encoding utf-8"
    )


def test_a_utf8_bom_is_honoured_whatever_input_encoding_says(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" of a fixed rejects file, for a job whose exports are GB18030."""
    config = _config(tmp_path, "input: {encoding: gb18030}")
    data = write_file(
        tmp_path / "fixed.csv", HEADER + "13800138000,张三,30,\n", encoding="utf-8-sig"
    )

    summary = validate(config, [data], report_dir=tmp_path / "rep")

    assert summary.counts["valid"] == 1
    assert (summary.files[0]["encoding"], summary.files[0]["encoding_reason"]) == (
        "utf-8-sig",
        "the file starts with a UTF-8 byte-order mark: read as UTF-8, not as gb18030 "
        "(input.encoding)",
    )


@pytest.mark.parametrize(
    ("encoding", "read_as"), [("utf-16", "utf-16"), ("utf-16-be", "utf-16"), ("utf-32", "utf-32")]
)
@pytest.mark.parametrize("declared", ["utf-8", "gb18030"])
def test_a_utf16_or_utf32_bom_is_honoured_whatever_input_encoding_says(
    tmp_path: Path, encoding: str, read_as: str, declared: str
) -> None:
    """A UTF-16 file declared utf-8 was refused as 'binary data ... UTF-16 text without a
    byte-order mark', though it has one."""
    config = _config(tmp_path, f"input: {{encoding: {declared}}}")
    text = HEADER + "13800138000,张三,30,\n"
    bom = codecs.BOM_UTF16_BE if encoding == "utf-16-be" else b""
    data = write_file(tmp_path / "fixed.csv", bom + text.encode(encoding))

    summary = validate(config, [data], report_dir=tmp_path / "rep")

    assert summary.counts["valid"] == 1
    assert (summary.files[0]["encoding"], summary.files[0]["encoding_reason"]) == (
        read_as,
        f"the file starts with a {read_as.upper()} byte-order mark: read as {read_as.upper()}, "
        f"not as {declared} (input.encoding)",
    )


def test_a_gb18030_file_with_a_gb18030_config_is_still_read_as_declared(tmp_path: Path) -> None:
    """Short GB18030 lines valid as UTF-8 by chance are no evidence against the declaration."""
    config = _config(tmp_path, "input: {encoding: gb18030}")
    data = write_file(tmp_path / "c.csv", HEADER + "13800138000,张三,30,\n", encoding="gb18030")

    summary = validate(config, [data], report_dir=tmp_path / "rep")

    assert summary.counts["valid"] == 1
    assert summary.files[0]["encoding"] == "gb18030"


def test_parquet_reasons_give_the_rows_values_as_text(secret: Sandbox, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "c.parquet"
    pq.write_table(
        pa.table(
            {
                "手机号": ["13800138000", "13800138001"],
                "姓名": ["张三", "李四"],
                "年龄": ["30", "三十"],
                "积分": pa.array([1.5, None], pa.float64()),
            }
        ),
        data,
    )

    summary = _run(secret, _config(tmp_path), [data], tmp_path)

    assert summary.reasons_path is not None
    frame = pd.read_csv(
        summary.reasons_path, encoding="utf-8-sig", dtype=str, keep_default_na=False
    )
    assert frame.to_dict("records") == [
        {
            "file": str(data),
            "line": "2",
            "column": "年龄",
            "errcode": "20003",
            "reason": "column 年龄 (property age): '三十' is not an integer",
            "手机号": "13800138001",
            "姓名": "李四",
            "年龄": "三十",
            "积分": "",
        }
    ]


def test_the_printed_summary_names_the_rejects_files_and_the_reasons(tmp_path: Path) -> None:
    config = _config(tmp_path, "target: {base_url: 'http://127.0.0.1:9'}")
    one = write_file(tmp_path / "one.csv", HEADER + "13800138000,张三,x,\n")
    two = write_file(tmp_path / "two.csv", HEADER + "13800138001,李四,y,\n")

    done = dmimport("validate", config, one, two, "--report-dir", "rep", cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert (
        "  rejects   rejects-one.csv, rejects-two.csv (to fix and import again); "
        "why: rejects.reasons.csv"
    ) in done.stdout.splitlines()


def test_an_input_column_named_like_a_reason_column_is_marked_in_the_side_file(
    tmp_path: Path,
) -> None:
    config = write_file(
        tmp_path / "job.yaml",
        "job: {kind: user, primary_keys: [phone]}\n"
        "columns:\n  phone: phone\n  age: {from: line, type: integer}\n  note: reason\n",
    )
    data = write_file(tmp_path / "in.csv", "phone,reason,line\n13800138000,moved,notint\n")

    summary = validate(config, [data], report_dir=tmp_path / "rep")

    with open(summary.report_dir / "rejects.reasons.csv", encoding="utf-8-sig") as fh:
        (row,) = list(csv.DictReader(fh))
    assert list(row) == [*REASON_COLUMNS, "phone", "reason (in the file)", "line (in the file)"]
    assert row["line"] == "2" and row["line (in the file)"] == "notint"
    assert row["reason"] == "column line (property age): 'notint' is not an integer"
    assert row["reason (in the file)"] == "moved"
