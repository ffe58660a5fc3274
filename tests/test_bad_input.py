"""Bad input through the command line, as a user meets it: a subprocess, its exit code, its
stderr (never a traceback) and the exact report line naming file, line and column.

Two kinds of outcome, and each test checks which one applies:

- a bad *record* is one ``rejected`` line in the report with the reason, and every other
  record of the same file is still ``valid`` (or ``ok`` when sent): nothing valid is lost;
- a bad *file* or config refuses the whole run before anything is sent: exit code 2 and one
  line ``error: <file>: <why>`` (or the config key path) on stderr.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe
import pytest
from helpers import dmimport, read_results, write_file

from importer.sandbox import Sandbox

pytestmark = pytest.mark.slow  # the command in a subprocess

HEADER = "手机号,邮箱,姓名,年龄\n"
GOOD1 = "13800000001,a@b.cn,张三,31\n"
GOOD3 = "13800000003,c@b.cn,王五,33\n"

CONFIG = """
job: {kind: user, primary_keys: [phone, email]}
columns:
  phone: 手机号
  email: 邮箱
  username: 姓名
  age: {from: 年龄, type: integer}
"""

JSONL_CONFIG = """
job: {kind: user, primary_keys: [phone, email]}
columns:
  phone: phone
  email: email
  username: name
  age: {from: age, type: integer}
"""


class Outcome:
    """A finished ``dmimport validate|run --json`` and what it wrote."""

    def __init__(self, proc: subprocess.CompletedProcess[str], cwd: Path) -> None:
        self.proc = proc
        self.code = proc.returncode
        self.stderr = proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        self.summary: dict[str, Any] = json.loads(proc.stdout) if self.code in (0, 1, 3) else {}
        self.results: list[dict[str, str]] = []
        if self.summary:
            self.results = read_results(self.summary, cwd=cwd)
        self.cwd = cwd

    def line(self, n: int) -> dict[str, str]:
        found = [r for r in self.results if r["line"] == str(n)]
        assert len(found) == 1, (n, self.results)
        return found[0]

    def verdict(self, n: int) -> tuple[str, str, str, str]:
        r = self.line(n)
        return r["status"], r["errcode"], r["errmsg"], r["column"]

    def statuses(self) -> dict[int, str]:
        return {int(r["line"]): r["status"] for r in self.results}

    def rejects(self) -> bytes:
        (path,) = self.summary["rejects"]
        return (self.cwd / path).read_bytes()


def validate(tmp_path: Path, data: str | Path, *, config: str = CONFIG, **kw: Any) -> Outcome:
    """``dmimport validate`` of the input ``data``, a file in ``tmp_path``, given by name."""
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    name = Path(data).name
    proc = dmimport("validate", "job.yaml", name, "--report-dir", "rep", "--json", cwd=tmp_path)
    return Outcome(proc, tmp_path)


def jsonl(*objects: Any) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)) + "\n"
                   for o in objects)  # fmt: skip


def user(i: int, **extra: Any) -> dict[str, Any]:
    return {"phone": f"1380000000{i}", "email": f"u{i}@b.cn", "name": f"u{i}", **extra}


# -- bad records: one report line each, the rest of the file unharmed ---------------------------


def test_jsonl_duplicate_keys_reject_that_line_only(tmp_path: Path) -> None:
    name = write_file(tmp_path / "dup.jsonl", jsonl(
        user(1),
        '{"phone": "13800000002", "email": "u2@b.cn", "phone": "13900000002"}',
        user(3, age=33),
    ))  # fmt: skip
    out = validate(tmp_path, name, config=JSONL_CONFIG)
    assert out.code == 1
    assert out.verdict(2) == ("rejected", "", 'duplicate key "phone"', "phone")
    assert out.statuses() == {1: "valid", 2: "rejected", 3: "valid"}
    assert out.line(2)["file"] == "dup.jsonl"
    # the rejects file holds the original line, byte for byte
    assert out.rejects() == (tmp_path / name).read_bytes().splitlines(keepends=True)[1]


def test_jsonl_nan_and_infinity_are_not_json(tmp_path: Path) -> None:
    name = write_file(tmp_path / "nan.jsonl", jsonl(
        user(1),
        '{"phone": "13800000002", "age": NaN}',
        '{"phone": "13800000004", "age": Infinity}',
        '{"phone": "13800000005", "age": -Infinity}',
        '{"phone": "13800000006", "age": 1e999}',
        user(3),
    ))  # fmt: skip
    out = validate(tmp_path, name, config=JSONL_CONFIG)
    assert out.code == 1
    assert out.verdict(2) == ("rejected", "", "invalid JSON: NaN is not a JSON value", "")
    assert out.verdict(3) == ("rejected", "", "invalid JSON: Infinity is not a JSON value", "")
    assert out.verdict(4) == ("rejected", "", "invalid JSON: -Infinity is not a JSON value", "")
    # 1e999 is valid JSON, but not an integer: the mapper refuses it like the platform would
    assert out.verdict(5) == (
        "rejected", "20003", "column age: '1e999' is not an integer", "age",
    )  # fmt: skip
    assert out.statuses()[1] == out.statuses()[6] == "valid"


def test_jsonl_lines_that_are_not_objects(tmp_path: Path) -> None:
    name = write_file(tmp_path / "arr.jsonl", jsonl(user(1), "[1, 2]", '"text"', "42", "null",
                                                    "true", "{broken", user(3)))  # fmt: skip
    out = validate(tmp_path, name, config=JSONL_CONFIG)
    assert out.code == 1
    for line in (2, 3, 4, 5, 6):
        assert out.verdict(line) == ("rejected", "", "line is not a JSON object", "")
    assert out.verdict(7)[:3] == (
        "rejected", "", "invalid JSON: Expecting property name enclosed in double quotes at "
        "column 2",
    )  # fmt: skip
    assert out.statuses()[1] == out.statuses()[8] == "valid"
    assert len(out.results) == 8


def test_deeply_nested_json(tmp_path: Path) -> None:
    deep = '{"phone": "13800000002", "name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    name = write_file(tmp_path / "deep.jsonl", jsonl(
        user(1),
        deep,
        {"phone": "13800000004", "name": {"first": {"given": "x"}}},
        user(5, extra={"a": [1, {"b": 2}]}),  # nested, but in a column the job does not read
        user(3),
    ))  # fmt: skip
    out = validate(tmp_path, name, config=JSONL_CONFIG)
    assert out.code == 1
    assert out.verdict(2) == ("rejected", "", "invalid JSON: nested too deeply", "")
    assert out.verdict(3) == (
        "rejected", "", 'nested value in column "name" is not supported', "name",
    )  # fmt: skip
    assert out.statuses() == {1: "valid", 2: "rejected", 3: "rejected", 4: "valid", 5: "valid"}


def _deep_jsonl(depth: int, key: str) -> str:
    """Many good lines (so Arrow reads the block), one of them nested ``depth`` levels deep in
    ``key``: arrays, then objects."""
    arrays = f'{{"phone": "13800000050", "{key}": ' + "[" * depth + "]" * depth + "}"
    objects = f'{{"phone": "13800000060", "{key}": ' + '{"a":' * depth + "1" + "}" * depth + "}"
    lines: list[Any] = [user(i) for i in range(100)]
    lines[50], lines[60] = arrays, objects
    return jsonl(*lines)


@pytest.mark.parametrize("key", ["extra", "name"])  # a key the config does not read, one it does
def test_jsonl_nesting_deep_enough_to_crash_arrow_is_a_bad_record(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, key: str
) -> None:
    # Arrow's JSON reader overflows the C stack some thousands of levels deep: a segfault
    # (exit 139) with the run left 'running'. Such a line never reaches Arrow.
    sb = fresh_sandbox()
    name = write_file(tmp_path / "deep.jsonl", _deep_jsonl(30_000, key))
    (tmp_path / "job.yaml").write_text(JSONL_CONFIG, encoding="utf-8")
    base = ["job.yaml", name.name, "--report-dir", "rep", "--json"]
    send = ["--base-url", sb.url]
    env = {"DMART_SECRET": sb.secret}
    for command in ["validate"] * 3 + ["run"] * 3:
        proc = dmimport(command, *base, *(send if command == "run" else []), cwd=tmp_path, env=env)
        assert proc.returncode == 1, (command, proc.returncode, proc.stderr[-2000:])
        out = Outcome(proc, tmp_path)
        for line in (51, 61):
            assert out.verdict(line) == ("rejected", "", "invalid JSON: nested too deeply", "")
        good = "ok" if command == "run" else "valid"
        assert out.statuses() == {i: "rejected" if i in (51, 61) else good for i in range(1, 101)}
    assert sb.stats()["items"]["received"] == 3 * 98  # each run sent each good row once
    runs = json.loads(dmimport("runs", "job.yaml", "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in runs] == ["done"] * 3  # none left 'running'


def test_invalid_utf8_with_a_declared_encoding_rejects_the_row(tmp_path: Path) -> None:
    data = (HEADER + GOOD1).encode() + b"13800000002,b@b.cn,\xff\xfe\xc3(,32\n" + GOOD3.encode()
    name = write_file(tmp_path / "latin.csv", data)
    out = validate(tmp_path, name, config=CONFIG + "input: {encoding: utf-8}\n")
    assert out.code == 1
    assert out.verdict(3) == (
        "rejected", "", 'undecodable bytes (not valid utf-8) in column "姓名"', "姓名",
    )  # fmt: skip
    assert out.statuses() == {2: "valid", 3: "rejected", 4: "valid"}
    # the rejected row goes back out with U+FFFD where the bytes could not be read
    assert (
        out.rejects().decode("utf-8").splitlines()[1] == "13800000002,b@b.cn,\ufffd\ufffd\ufffd(,32"
    )


def test_invalid_utf8_near_the_start_of_a_utf8_file_rejects_the_row(tmp_path: Path) -> None:
    # the other lines are UTF-8: the file is UTF-8, the line that is not is a bad record
    data = (HEADER + GOOD1).encode() + b"13800000002,b@b.cn,\xff\xfe,32\n" + GOOD3.encode()
    name = write_file(tmp_path / "mixed.csv", data)
    out = validate(tmp_path, name)
    assert out.code == 1
    assert out.verdict(3) == (
        "rejected", "", 'undecodable bytes (not valid utf-8) in column "姓名"', "姓名",
    )  # fmt: skip
    assert out.statuses() == {2: "valid", 3: "rejected", 4: "valid"}


def test_text_that_is_neither_utf8_nor_chinese_stops_autodetection_naming_the_byte(
    tmp_path: Path,
) -> None:
    data = b"phone,email,name,age\n13800000001,a@b.cn,M\xfcller,31\n"
    name = write_file(tmp_path / "latin.csv", data)
    out = validate(tmp_path, name, config=CONFIG.replace("手机号", "phone").replace(
        "邮箱", "email").replace("姓名", "name").replace("年龄", "age"))  # fmt: skip
    assert out.code == 2
    assert out.stderr == (
        "error: latin.csv: cannot tell the encoding: byte 0xfc on line 2 (offset 41) is not "
        "UTF-8, and the file is not GB18030 Chinese either; set input.encoding to the encoding "
        "it was written in (e.g. input.encoding: latin-1 for Western European text, or gb18030, "
        "big5, shift_jis), or input.encoding: utf-8 to reject the lines that are not UTF-8\n"
    )


def test_invalid_utf8_deep_in_an_autodetected_file_rejects_the_row(tmp_path: Path) -> None:
    # 30,000 good rows (> the 1 MiB the encoding is detected from), then one broken row
    rows = [f"139{i:08d},e{i}@b.cn,名字{i},{20 + i % 50}\n" for i in range(30_000)]
    data = (HEADER + "".join(rows)).encode() + b"13700000000,x@b.cn,\xff\xfe,32\n" + GOOD3.encode()
    assert len(data) > 1 << 20
    name = write_file(tmp_path / "big.csv", data)
    out = validate(tmp_path, name)
    assert out.code == 1
    bad_line = 30_002
    assert out.verdict(bad_line) == (
        "rejected", "", 'undecodable bytes (not valid utf-8) in column "姓名"', "姓名",
    )  # fmt: skip
    assert out.summary["counts"] == {**out.summary["counts"], "valid": 30_001, "rejected": 1}
    assert len(out.results) == 30_002


def test_nul_byte_rejects_the_row(tmp_path: Path) -> None:
    data = (HEADER + GOOD1 + "13800000002,b@b.cn,a\x00b,32\n" + GOOD3).encode()
    name = write_file(tmp_path / "nul.csv", data)
    out = validate(tmp_path, name)
    assert out.code == 1
    assert out.verdict(3) == ("rejected", "", 'NUL byte in column "姓名"', "姓名")
    assert out.statuses() == {2: "valid", 3: "rejected", 4: "valid"}


def test_ragged_rows_are_rejected_and_kept_raw(tmp_path: Path) -> None:
    short = "13800000002,b@b.cn,李四\n"
    long = "13800000004,d@b.cn,赵六,34,extra\n"
    name = write_file(tmp_path / "ragged.csv", HEADER + GOOD1 + short + long + GOOD3)
    out = validate(tmp_path, name)
    assert out.code == 1
    assert out.verdict(3) == ("rejected", "", "expected 4 fields, found 3", "")
    assert out.verdict(4) == ("rejected", "", "expected 4 fields, found 5", "")
    assert out.statuses() == {2: "valid", 3: "rejected", 4: "rejected", 5: "valid"}
    assert out.rejects().decode() == HEADER + short + long


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_10_mb_field_is_rejected_by_the_field_limit(tmp_path: Path, fmt: str) -> None:
    huge = "x" * (10 * 1024 * 1024 + 1)
    if fmt == "csv":
        text = HEADER + GOOD1 + f"13800000002,b@b.cn,{huge},32\n" + GOOD3
        name = write_file(tmp_path / "huge.csv", text)
        out = validate(tmp_path, name)
        column, first, bad = "姓名", 2, 3
    else:
        name = write_file(tmp_path / "huge.jsonl", jsonl(user(1), user(2, name=huge), user(3)))
        out = validate(tmp_path, name, config=JSONL_CONFIG)
        column, first, bad = "name", 1, 2
    assert out.code == 1
    assert out.verdict(bad) == (
        "rejected",
        "",
        f'value in column "{column}" is 10485761 bytes, over the 10485760-byte limit '
        "(input.max_field_bytes)",
        column,
    )
    assert out.statuses() == {first: "valid", bad: "rejected", bad + 1: "valid"}


def test_unterminated_quote_at_end_of_file(tmp_path: Path) -> None:
    name = write_file(
        tmp_path / "open.csv", HEADER + GOOD1 + GOOD3 + '13800000002,b@b.cn,李四,"32\n'
    )
    out = validate(tmp_path, name)
    assert out.code == 1
    assert out.verdict(4) == (
        "rejected", "", "unterminated quoted field: the file ends inside quotes", "年龄",
    )  # fmt: skip
    assert out.statuses() == {2: "valid", 3: "valid", 4: "rejected"}
    # quote opened in an earlier field: it swallows the rest of the record
    name = write_file(
        tmp_path / "open2.csv", HEADER + GOOD1 + GOOD3 + '13800000002,b@b.cn,"李四,32\n'
    )
    out = validate(tmp_path, name)
    assert out.code == 1
    assert out.verdict(4) == (
        "rejected",
        "",
        "unterminated quoted field at the end of the file (expected 4 fields, found 3)",
        "",
    )
    assert out.statuses() == {2: "valid", 3: "valid", 4: "rejected"}


def test_header_only_file_is_an_empty_successful_run(tmp_path: Path) -> None:
    name = write_file(tmp_path / "header.csv", HEADER)
    out = validate(tmp_path, name)
    assert out.code == 0
    assert out.summary["rows"] == 0 and out.results == []
    assert out.summary["rejects"] == []


def test_parquet_binary_column_undecodable_row_is_rejected_and_kept(tmp_path: Path) -> None:
    table = pa.table({
        "phone": ["13800000001", "13800000002", "13800000003"],
        "email": ["a@b.cn", "b@b.cn", "c@b.cn"],
        "name": pa.array([b"\xe5\xbc\xa0\xe4\xb8\x89", b"\xff\xfe", b"ok"], pa.binary()),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "bin.parquet")
    config = CONFIG.replace("手机号", "phone").replace("邮箱", "email").replace("姓名", "name")
    config = config.replace("  age: {from: 年龄, type: integer}\n", "")
    out = validate(tmp_path, "bin.parquet", config=config)
    assert out.code == 1
    assert out.verdict(2) == (
        "rejected", "", 'undecodable bytes (not valid utf-8) in column "name"', "name",
    )  # fmt: skip
    assert out.statuses() == {1: "valid", 2: "rejected", 3: "valid"}
    # Every row that did not get through is in the rejects file, to fix and import again.
    (rejects,) = out.summary["rejects"]
    back = pq.read_table(tmp_path / rejects)
    assert back.num_rows == 1
    assert back.column("phone").to_pylist() == ["13800000002"]


def _wkb_points(n: int) -> list[bytes]:
    """Well-known-binary points, as GIS exports store a geometry: arbitrary bytes (NULs, and
    most of them not UTF-8)."""
    rng = random.Random(22)
    return [struct.pack("<BIdd", 1, 1, rng.uniform(70, 140), rng.uniform(10, 50)) for _ in range(n)]


GEO_CONFIG = """
job: {kind: user, primary_keys: [phone]}
columns:
  phone: phone
  username: name
"""


def test_a_binary_parquet_column_the_job_does_not_read_decides_nothing(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # It used to reject 164 of 196 rows: every column was decoded and checked as text.
    n = 196
    geometry = _wkb_points(n)
    phones = [f"138{i:08d}" for i in range(n)]
    phones[7] = ""  # rejected for its own reason: its row is kept whole in rejects.parquet
    table = pa.table({
        "phone": phones,
        "name": [f"n{i}" for i in range(n)],
        "geometry": pa.array(geometry, pa.binary()),
    })  # fmt: skip
    write_file(tmp_path / "geo.parquet", _parquet_bytes(table))
    out = validate(tmp_path, "geo.parquet", config=GEO_CONFIG)
    assert out.code == 1
    assert out.statuses() == {i: "rejected" if i == 8 else "valid" for i in range(1, n + 1)}
    assert out.verdict(8) == (
        "rejected", "20001", "no primary-key property has a value (phone)", "",
    )  # fmt: skip

    sb = fresh_sandbox()
    proc = dmimport(
        "run", "job.yaml", "geo.parquet", "--base-url", sb.url, "--report-dir", "rep", "--json",
        cwd=tmp_path, env={"DMART_SECRET": sb.secret},
    )  # fmt: skip
    out = Outcome(proc, tmp_path)
    assert out.code == 1
    assert out.summary["counts"]["ok"] == n - 1
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert stored == {p: f"n{i}" for i, p in enumerate(phones) if p}
    rejects = pq.read_table(tmp_path / out.summary["rejects"][0])
    assert rejects.column_names == ["phone", "name", "geometry"]
    assert rejects.column("geometry").to_pylist() == [geometry[7]]  # intact, byte for byte

    # Mapped, the same column is checked: a value that is not UTF-8 text cannot be sent.
    mapped = GEO_CONFIG + "  shape: geometry\n"
    out = validate(tmp_path, "geo.parquet", config=mapped)
    assert out.code == 1
    for i, value in enumerate(geometry, start=1):
        try:
            text = value.decode()
        except UnicodeDecodeError:
            reason = 'undecodable bytes (not valid utf-8) in column "geometry"'
            assert out.verdict(i) == ("rejected", "", reason, "geometry")
        else:
            assert "\x00" in text  # a WKB point holds zero bytes
            assert out.verdict(i) == ("rejected", "", 'NUL byte in column "geometry"', "geometry")


# -- bad files: refused whole, before anything is sent ------------------------------------------


def _gzip_truncated() -> bytes:
    whole = gzip.compress((HEADER + GOOD1 * 5000).encode())
    return whole[: len(whole) // 2]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


class _InMemoryKms(pqe.KmsClient):
    """A KMS that "wraps" a key by encoding it: enough to write an encrypted file."""

    def __init__(self, _config: pqe.KmsConnectionConfig) -> None:
        super().__init__()

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> bytes:
        return base64.b64encode(key_bytes)

    def unwrap_key(self, wrapped_key: bytes, master_key_identifier: str) -> bytes:
        return base64.b64decode(wrapped_key)


def _encrypted_parquet(*, plaintext_footer: bool) -> bytes:
    """A Parquet file with modular encryption, as pyarrow writes it: the footer encrypted too
    (the file starts and ends with PARE), or left readable (PAR1, the phone column encrypted)."""
    table = pa.table({"手机号": ["13800000001"], "邮箱": ["a@b.cn"], "姓名": ["x"], "年龄": ["1"]})
    config = pqe.EncryptionConfiguration(
        footer_key="footer", column_keys={"column": ["手机号"]},
        plaintext_footer=plaintext_footer, double_wrapping=False,
    )  # fmt: skip
    factory = pqe.CryptoFactory(_InMemoryKms)
    properties = factory.file_encryption_properties(pqe.KmsConnectionConfig(), config)
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, encryption_properties=properties) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    assert data[:4] == data[-4:] == (b"PAR1" if plaintext_footer else b"PARE")
    return data


ENCRYPTED = (
    "this is an encrypted Parquet file (Parquet modular encryption), which is not supported: "
    "export it unencrypted"
)

BAD_FILES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "encrypted-parquet": (
        "enc.parquet",
        lambda: _encrypted_parquet(plaintext_footer=False),
        f"enc.parquet: {ENCRYPTED}",
    ),
    "encrypted-parquet-plaintext-footer": (
        "enc.parquet",
        lambda: _encrypted_parquet(plaintext_footer=True),
        f"enc.parquet: {ENCRYPTED}",
    ),
    "encrypted-parquet-named-csv": (
        "enc.csv",
        lambda: _encrypted_parquet(plaintext_footer=False),
        "enc.csv: this is an encrypted Parquet file, not a CSV text file",
    ),
    "empty": ("empty.csv", lambda: b"", "empty.csv: file is empty"),
    "duplicate-header": (
        "dup.csv",
        lambda: "手机号,邮箱,姓名,邮箱\n1,2,3,4\n".encode(),
        'dup.csv: duplicate column names in the header: "邮箱" (columns 2, 4)',
    ),
    "xlsx-named-csv": (
        "book.csv",
        lambda: b"PK\x03\x04" + b"\x00" * 200,
        "book.csv: this is a ZIP archive (an Excel .xlsx workbook?), not a CSV text file",
    ),
    "xlsx-as-is": (
        "book.xlsx",
        lambda: b"PK\x03\x04" + b"\x00" * 200,
        "book.xlsx: a spreadsheet workbook is not read; save it as CSV (in Excel: Save As, "
        "'CSV UTF-8 (Comma delimited)') and import the .csv",
    ),
    "parquet-named-csv": (
        "data.csv",
        lambda: _parquet_bytes(pa.table({"a": ["1"]})),
        "data.csv: this is a Parquet file, not CSV; name it .parquet or set input.format: parquet",
    ),
    "csv-named-parquet": (
        "data.parquet",
        lambda: (HEADER + GOOD1).encode(),
        "data.parquet: not a Parquet file (it does not start with PAR1)",
    ),
    "gzip-named-csv": (
        "data.csv",
        lambda: gzip.compress((HEADER + GOOD1).encode()),
        "data.csv: the file is gzip-compressed but its name does not end in .gz; rename it to "
        "data.csv.gz",
    ),
    "plain-named-gz": (
        "data.csv.gz",
        lambda: (HEADER + GOOD1).encode(),
        "data.csv.gz: the name ends in .gz but the file is not gzip-compressed",
    ),
    "nested-parquet": (
        "nested.parquet",
        lambda: _parquet_bytes(
            pa.table(
                {"手机号": [["1"]], "邮箱": ["a"], "姓名": ["x"], "年龄": ["1"], "tags": [["v"]]}
            )
        ),
        "nested.parquet: nested Parquet columns are not supported: 手机号 (list<element: string>);"
        " the config reads it: export flat columns of text, numbers, booleans or dates",
    ),
    "struct-parquet": (
        "struct.parquet",
        lambda: _parquet_bytes(
            pa.table({"手机号": ["1"], "邮箱": ["a"], "姓名": [{"family": "x"}], "年龄": ["1"]})
        ),
        "struct.parquet: nested Parquet columns are not supported: 姓名 (struct<family: string>)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_unreadable_file_is_refused_whole_with_its_reason(tmp_path: Path, case: str) -> None:
    name, make, message = BAD_FILES[case]
    write_file(tmp_path / name, make())
    out = validate(tmp_path, name)
    assert out.code == 2
    assert out.stderr.startswith(f"error: {message}"), out.stderr
    assert out.stderr.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_a_bad_file_among_good_ones_stops_the_run_before_sending(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    write_file(tmp_path / "good.csv", HEADER + GOOD1 + GOOD3)
    write_file(tmp_path / "cut.csv.gz", _gzip_truncated())
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport(
        "run",
        "job.yaml",
        "good.csv",
        "cut.csv.gz",
        "--base-url",
        sb.url,
        "--report-dir",
        "rep",
        cwd=tmp_path,
        env={"DMART_SECRET": sb.secret},
    )
    # a .gz cut off is an incomplete export (run again once it is whole): exit 7, not 2
    assert proc.returncode == 7
    assert proc.stderr.splitlines()[0] == (
        "error: cut.csv.gz: it ends before the end of its gzip stream: the export looks cut off "
        "(still being written, or a copy that broke off); nothing was sent"
    )
    assert "Traceback" not in proc.stderr
    assert sb.stats()["requests"] == 0


def test_every_kind_of_bad_jsonl_line_sent_for_real_loses_no_valid_row(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    lines = [
        user(1),
        '{"phone": "13900000000", "phone": "x"}',
        '{"phone": "13900000001", "age": NaN}',
        "[1]",
        "{" * 50_000,
        user(2, age="7"),
        '{"phone": "13900000002", "name": "a\\u0000b"}',
        {"phone": "13900000003", "name": {"nested": 1}},
        user(3, age="x"),
        "",  # a blank line is not a record
        user(4),
    ]
    write_file(tmp_path / "mix.jsonl", jsonl(*lines))
    (tmp_path / "job.yaml").write_text(JSONL_CONFIG + "send: {concurrency: 4}\n", encoding="utf-8")
    proc = dmimport(
        "run",
        "job.yaml",
        "mix.jsonl",
        "--base-url",
        sb.url,
        "--report-dir",
        "rep",
        "--json",
        cwd=tmp_path,
        env={"DMART_SECRET": sb.secret},
    )
    out = Outcome(proc, tmp_path)
    assert out.code == 1
    assert out.statuses() == {
        1: "ok", 2: "rejected", 3: "rejected", 4: "rejected", 5: "rejected", 6: "ok",
        7: "rejected", 8: "rejected", 9: "rejected", 11: "ok",
    }  # fmt: skip
    assert out.verdict(7) == ("rejected", "", 'NUL byte in column "name"', "name")
    assert out.verdict(9)[:2] == ("rejected", "20003")
    stored = sorted(c["properties"]["phone"] for c in sb.customers())
    assert stored == ["13800000001", "13800000002", "13800000004"]
    assert sb.stats()["items"]["received"] == 3


# -- bad configs: exit 2, the key path on stderr ------------------------------------------------

BASE = "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: 手机号\n"

BAD_CONFIGS = {
    "unknown-key": (
        BASE + "send: {concurrency: 4, retries: 3}\n",
        "  send.retries (line 4): unknown key 'retries' -- did you mean 'retry'?",
    ),
    "wrong-type": (
        BASE + "send: {concurrency: lots}\n",
        "  send.concurrency (line 4): expected an integer, got 'lots'",
    ),
    "unknown-property-type": (
        BASE + "  age: {from: 年龄, type: int}\n",
        "  columns.age.type (line 4): expected one of string, integer, number, boolean, "
        "datetime, got 'int' -- did you mean 'integer'?",
    ),
    "bad-regex": (
        BASE.replace("phone: 手机号", 'phone: {from: 手机号, pattern: "(\\\\d+"}'),
        "  columns.phone.pattern (line 3): invalid regular expression: missing ), unterminated "
        "subpattern at position 0",
    ),
    "python-only-regex": (
        BASE.replace("phone: 手机号", 'phone: {from: 手机号, pattern: "(?=1)\\\\d+"}'),
        "  columns.phone.pattern (line 3): regular expression not supported: invalid perl "
        "operator: (?= -- patterns use RE2 syntax: no look-around or back-references",
    ),
    "bad-strptime": (
        BASE + '  t: {from: 年龄, type: datetime, format: "%Y-%q"}\n',
        "  columns.t.format (line 4): invalid datetime format: 'q' is a bad directive in format "
        "'%Y-%q' -- see Python's strptime directives",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    proc = dmimport("check-config", "bad.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[:2] == ["error: invalid config bad.yaml:", expected]
    # then the offending YAML line with a pointer: "    4 | send: ..." and "      |   ^ ..."
    assert all(" | " in line for line in lines[2:]), lines
    assert proc.stdout == ""


def test_missing_column_exits_2_naming_the_key_and_the_file(tmp_path: Path) -> None:
    write_file(tmp_path / "c.csv", "手机号,Email,姓名,年龄\n" + GOOD1)
    config = CONFIG.replace("email: 邮箱", "email: email")
    out = validate(tmp_path, "c.csv", config=config)
    assert out.code == 2
    lines = out.stderr.splitlines()
    assert lines[:2] == [
        "error: invalid config job.yaml:",
        "  columns.email.from: column 'email' is not in c.csv -- did you mean 'Email'?",
    ]
    assert all(" | " in line for line in lines[2:]), lines


def test_missing_secret_env_var_exits_2_before_sending(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    write_file(tmp_path / "c.csv", HEADER + GOOD1)
    (tmp_path / "job.yaml").write_text(
        CONFIG + "target: {secret_env: ACME_DM_SECRET}\n", encoding="utf-8"
    )
    proc = dmimport(
        "run",
        "job.yaml",
        "c.csv",
        "--base-url",
        sb.url,
        "--report-dir",
        "rep",
        cwd=tmp_path,
        env={"DMART_SECRET": sb.secret},
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: invalid config job.yaml:",
        "  target.secret_env: environment variable ACME_DM_SECRET is not set (it must hold the "
        "SECRET) -- export ACME_DM_SECRET=<your SECRET> before running",
    ]
    assert "Traceback" not in proc.stderr
    assert sb.stats()["requests"] == 0


def test_report_dir_that_cannot_be_created_is_a_usage_error_not_a_bug(tmp_path: Path) -> None:
    # Exit code 5 and "internal error" tell the user to report a bug; a --report-dir under a
    # regular file is their mistake, to be named like any other unusable path (exit 2).
    write_file(tmp_path / "c.csv", HEADER + GOOD1)
    write_file(tmp_path / "taken", "a file, not a directory")
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "c.csv", "--report-dir", "taken/rep", cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "taken/rep" in proc.stderr


def test_a_nested_parquet_column_the_job_does_not_read_is_kept_not_refused(
    tmp_path: Path,
) -> None:
    table = pa.table(
        {
            "手机号": ["13800000001", "13800000002"],
            "邮箱": ["a@b.cn", "c@d.cn"],
            "姓名": ["x", "y"],
            "年龄": ["1", "old"],
            "tags": [["vip"], []],
        }
    )
    write_file(tmp_path / "nested.parquet", _parquet_bytes(table))
    out = validate(tmp_path, "nested.parquet")
    assert out.code == 1  # one bad age, reported as a row; the file itself is fine
    summary = out.summary
    assert summary["counts"]["valid"] == 1 and summary["counts"]["rejected"] == 1
    rejects = pq.read_table(tmp_path / summary["rejects"][0])
    assert rejects.column_names == ["手机号", "邮箱", "姓名", "年龄", "tags"]
    assert rejects.column("tags").to_pylist() == [[]]  # the rejected row, nested value intact
