"""Encoding detection (``input.encoding: auto``) never garbles data: a file that is mostly
UTF-8 is UTF-8 and its other lines are bad records; GB18030 only on strong evidence; anything
else is refused before anything is sent, naming the byte. The choice is in the summary.

Also: what a directory input skips (named pipes, devices, symbolic link loops) is said."""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import dmimport, read_results

from importer.api import run
from importer.errors import LoadError
from importer.load import InputOptions, expand_inputs, iter_batches, open_source
from importer.sandbox import Sandbox

pytestmark = pytest.mark.slow  # the command in a subprocess, byte fuzzing

CONFIG = """
job: {kind: user, primary_keys: [phone]}
columns:
  phone: phone
  username: name
send:
  concurrency: 8
  retry: {max_attempts: 6, initial_backoff_s: 0.01, max_backoff_s: 0.05}
"""

# Two-character names: their UTF-8 bytes come in runs of 6, which also decode as GB18030
# (to mojibake: 张三 -> 寮犱笁), the trap the detection used to fall into.
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


def names(n: int) -> list[str]:
    return [SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)] for i in range(n)]


def results(summary: Any) -> dict[int, dict[str, str]]:
    return {int(r["line"]): r for r in read_results(summary)}


# -- issue 11 #1: one GBK line in a UTF-8 file ----------------------------------------------


def test_one_gbk_line_in_a_utf8_file_rejects_that_line_and_stores_the_other_999(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    people = [(f"1380000{i:04d}", name) for i, name in enumerate(names(1000))]
    lines = [b"phone,name\n"] + [f"{p},{n}\n".encode() for p, n in people]
    lines[499] = f"{people[498][0]},{people[498][1]}\n".encode("gbk")  # line 500 alone in GBK
    data = tmp_path / "customers.csv"
    data.write_bytes(b"".join(lines))
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("DMART_SECRET", sb.secret)

    summary = run(
        tmp_path / "job.yaml",
        [data],
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "rep",
        ledger=tmp_path / "state.db",
    )

    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert stored == {p: n for i, (p, n) in enumerate(people) if i != 498}  # value for value
    got = results(summary)
    assert len(got) == 1000
    assert (got[500]["status"], got[500]["errmsg"], got[500]["column"]) == (
        "rejected",
        'undecodable bytes (not valid utf-8) in column "name"',
        "name",
    )
    assert summary.counts["ok"] == 999 and summary.counts["rejected"] == 1
    assert summary.exit_code == 1
    why = (
        "detected: mostly UTF-8 (1 of 1000 lines with non-ASCII bytes in the first MiB are "
        "not UTF-8: they are bad records)"
    )
    [entry] = json.loads((summary.report_dir / "summary.json").read_text())["files"]  # type: ignore[operator]
    assert (entry["encoding"], entry["encoding_reason"]) == ("utf-8", why)


def test_the_printed_summary_states_the_encoding_and_why(tmp_path: Path) -> None:
    text = "phone,name\n" + "".join(f"1380000{i:04d},{n}\n" for i, n in enumerate(names(3)))
    (tmp_path / "gb.csv").write_bytes(text.encode("gb18030"))
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "gb.csv", "--report-dir", "rep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "  encoding  gb18030 (detected: GB18030 (no UTF-8 text; 100% common Chinese "
        "characters)): gb.csv\n"
    ) in proc.stdout


def test_a_gb18030_excel_export_is_still_gb18030(tmp_path: Path) -> None:
    # as Chinese Excel saves "CSV": GBK, CRLF, a Chinese header, fullwidth punctuation and
    # the odd rare character outside GB2312 (堃, 喆, 昇)
    rare = ["堃", "喆", "昇"]
    rows = [
        [f"1390000{i:04d}", n + (rare[i // 100] if i % 100 == 7 else ""), f"北京市第{i}号（东区）"]
        for i, n in enumerate(names(300))
    ]
    text = "手机号,姓名,地址\r\n" + "".join(",".join(r) + "\r\n" for r in rows)
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode("gb18030"))
    source = open_source(path, InputOptions())
    assert source.encoding == "gb18030"
    assert source.encoding_reason == (
        "detected: GB18030 (no UTF-8 text; 99% common Chinese characters)"
    )
    got = [r for b in iter_batches(source, InputOptions(), None) for r in b.table.to_pylist()]
    assert got == [{"手机号": p, "姓名": n, "地址": a} for p, n, a in rows]


# Korean (EUC-KR, and CP949 as Korean Excel saves it) puts Hangul where GB2312 has hanzi:
# read as GB18030 it is 100% common Chinese ('김민준' -> '辫刮霖'). Japanese in EUC-JP gives
# GB2312's kana rows as they are and its kanji as other hanzi ('山田' -> '怀拍').
KOREAN = ["김민준", "이서연", "박지훈", "최수아", "정우진", "강하은", "조현우", "윤지민", "장서준"]
JAPANESE = ["山田太郎", "さとう はなこ", "たなか", "鈴木一郎", "やまもと", "カタカナ", "東京都"]


@pytest.mark.parametrize(
    ("encoding", "people", "reason"),
    [
        (
            "euc-kr",
            KOREAN,
            "and read as GB18030 every Chinese character would fall in the rows where EUC-KR "
            "puts Korean Hangul: this looks like Korean text; set input.encoding to the "
            "encoding it was written in (cp949 or euc-kr for Korean, gb18030 if it really is "
            "Chinese)",
        ),
        (
            "euc-jp",
            JAPANESE,
            "and the file is not GB18030 Chinese either; set input.encoding to the encoding it "
            "was written in (e.g. input.encoding: latin-1 for Western European text, or "
            "gb18030, big5, shift_jis), or input.encoding: utf-8 to reject the lines that are "
            "not UTF-8",
        ),
    ],
)
def test_korean_or_japanese_text_is_refused_not_read_as_gb18030(
    tmp_path: Path, encoding: str, people: list[str], reason: str
) -> None:
    # Found next to issue 11 #1: both were read as GB18030, every name stored as Chinese
    # mojibake ('辫刮霖' for '김민준'), all rows valid, exit 0.
    text = "phone,name\n" + "".join(
        f"1360000{i:04d},{people[i % len(people)]}\n" for i in range(50)
    )
    (tmp_path / "c.csv").write_bytes(text.encode(encoding))
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "c.csv", "--report-dir", "rep", cwd=tmp_path)
    byte = people[0].encode(encoding)[0]
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"error: c.csv: cannot tell the encoding: byte 0x{byte:02x} on line 2 (offset 23) is "
        f"not UTF-8, {reason}\n"
    )
    # declared, the names are read as written
    declared = CONFIG + f"input: {{encoding: {encoding}}}\n"
    source = open_source(tmp_path / "c.csv", InputOptions(encoding=encoding))
    got = [
        r["name"] for b in iter_batches(source, InputOptions(), None) for r in b.table.to_pylist()
    ]
    assert got == [people[i % len(people)] for i in range(50)]
    (tmp_path / "job.yaml").write_text(declared, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "c.csv", "--report-dir", "rep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_chinese_names_of_many_distinct_hanzi_are_still_gb18030(tmp_path: Path) -> None:
    # the Korean check needs 20 distinct hanzi all in rows B0-C8; Chinese names have some above
    text = "手机号,姓名\r\n" + "".join(f"1390000{i:04d},{n}\r\n" for i, n in enumerate(names(40)))
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode("gb18030"))
    assert open_source(path, InputOptions()).encoding == "gb18030"


def ascii_mib(header: str) -> tuple[str, int]:
    """A header and over 1 MiB of ASCII rows (the part detection used to look at), and the
    number of the next line."""
    rows = [f"1{i:010d},Pinyin Name {i}\n" for i in range(40_000)]
    return header + "".join(rows), len(rows) + 2


def test_chinese_after_a_first_mib_of_ascii_is_read_as_gb18030(tmp_path: Path) -> None:
    # Found next to issue 11 #1: the first MiB was ASCII, so "valid UTF-8"; every Chinese row
    # after it was rejected, except those whose GBK bytes are valid UTF-8 by chance, which
    # were stored as mojibake ('郑十' -> '֣ʮ').
    head, first = ascii_mib("phone,name\r\n")
    chinese = [*names(300), "郑十"]
    text = head + "".join(f"1390000{i:04d},{n}\r\n" for i, n in enumerate(chinese))
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode("gb18030"))
    source = open_source(path, InputOptions())
    assert (source.encoding, source.encoding_reason) == (
        "gb18030",
        "detected: GB18030 (no UTF-8 text; 100% common Chinese characters)",
    )
    got = [
        r["name"] for b in iter_batches(source, InputOptions(), None) for r in b.table.to_pylist()
    ]
    assert got[first - 2 :] == chinese
    # the same after gzip, and a file of ASCII alone is still plain UTF-8
    (tmp_path / "export.csv.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert open_source(tmp_path / "export.csv.gz", InputOptions()).encoding == "gb18030"
    (tmp_path / "ascii.csv").write_text(head, encoding="ascii")
    assert open_source(tmp_path / "ascii.csv", InputOptions()).encoding_reason == (
        "detected: valid UTF-8"
    )


def test_latin1_after_a_first_mib_of_ascii_is_refused_naming_its_line(tmp_path: Path) -> None:
    head, first = ascii_mib("phone,name\n")
    path = tmp_path / "c.csv"
    path.write_bytes((head + "19999999999,Õakman\n").encode("latin-1"))
    with pytest.raises(LoadError) as info:
        open_source(path, InputOptions())
    assert str(info.value) == (
        f"{path}: cannot tell the encoding: byte 0xd5 on line {first} (offset {len(head) + 12}) "
        "is not UTF-8, and the file is not GB18030 Chinese either; set input.encoding to the "
        "encoding it was written in (e.g. input.encoding: latin-1 for Western European text, "
        "or gb18030, big5, shift_jis), or input.encoding: utf-8 to reject the lines that are "
        "not UTF-8"
    )


LATIN1 = "id,name\n" + "".join(f"{i},Smith{i}\n" for i in range(1, 50))
LATIN1 += "50,Õakman\n" + "".join(f"{i},Jones{i}\n" for i in range(51, 101))


def test_a_latin1_file_is_refused_naming_the_byte_before_anything_is_sent(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    (tmp_path / "latin.csv").write_bytes(LATIN1.encode("latin-1"))
    (tmp_path / "job.yaml").write_text(CONFIG.replace("phone: phone", "phone: id"), "utf-8")
    offset = len(LATIN1.split("Õ")[0])
    proc = dmimport(
        "run", "job.yaml", "latin.csv", "--base-url", sb.url, "--report-dir", "rep",
        cwd=tmp_path, env={"DMART_SECRET": sb.secret},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: latin.csv: cannot tell the encoding: byte 0xd5 on line 51 (offset {offset}) "
        "is not UTF-8, and the file is not GB18030 Chinese either; set input.encoding to the "
        "encoding it was written in (e.g. input.encoding: latin-1 for Western European text, "
        "or gb18030, big5, shift_jis), or input.encoding: utf-8 to reject the lines that are "
        "not UTF-8\n"
    )
    assert sb.stats()["requests"] == 0 and sb.customers() == []
    # and with the encoding declared, the name is read as written
    with_latin1 = CONFIG.replace("phone: phone", "phone: id") + "input: {encoding: latin-1}\n"
    (tmp_path / "job.yaml").write_text(with_latin1, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "latin.csv", "--report-dir", "rep", "--json",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files"][0]["encoding_reason"] == "declared (input.encoding)"
    assert [r["status"] for r in read_results(summary, cwd=tmp_path)] == ["valid"] * 100


def test_a_jsonl_line_with_one_stray_byte_is_a_bad_record_for_that_line_only(
    tmp_path: Path,
) -> None:
    people = [{"phone": f"1380000{i:04d}", "name": f"{n} Lee"} for i, n in enumerate(names(20))]
    lines = [json.dumps(p, ensure_ascii=False).encode() + b"\n" for p in people]
    lines[9] = lines[9].replace(b" Lee", b" \xd5Lee")  # line 10: one stray byte
    (tmp_path / "c.jsonl").write_bytes(b"".join(lines))
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "c.jsonl", "--report-dir", "rep", "--json",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files"][0]["encoding"] == "utf-8"
    got = {int(r["line"]): r for r in read_results(summary, cwd=tmp_path)}
    assert (got[10]["status"], got[10]["errmsg"], got[10]["column"]) == (
        "rejected",
        'undecodable bytes (not valid utf-8) in column "name"',
        "name",
    )
    assert [n for n, r in got.items() if r["status"] == "valid"] == [
        n for n in range(1, 21) if n != 10
    ]
    rejects = (tmp_path / summary["rejects"][0]).read_bytes()
    assert rejects == lines[9].replace(b"\xd5", "\ufffd".encode())


def test_byte_fuzz_never_stores_mojibake(tmp_path: Path) -> None:
    """Any one byte of a UTF-8 Chinese CSV replaced by a non-ASCII byte: every row is its
    exact value as UTF-8, or rejected; the file is never read as anything but UTF-8."""
    people = [(f"1380000{i:04d}", n) for i, n in enumerate(names(200))]
    lines = [b"phone,name\n"] + [f"{p},{n}\n".encode() for p, n in people]
    reason = 'undecodable bytes (not valid utf-8) in column "name"'
    rng = random.Random(20261205)
    path = tmp_path / "fuzz.csv"
    outcomes = {"rejected": 0, "another character": 0}
    for _ in range(300):
        line = rng.randrange(1, len(lines))
        at = rng.randrange(12, len(lines[line]) - 1)  # a byte of the name
        new = rng.choice([b for b in range(0x80, 0x100) if b != lines[line][at]])
        mutated = list(lines)
        mutated[line] = lines[line][:at] + bytes([new]) + lines[line][at + 1 :]
        path.write_bytes(b"".join(mutated))
        source = open_source(path, InputOptions())
        assert source.encoding == "utf-8"
        got: dict[int, str] = {}
        bad = []
        for b in iter_batches(source, InputOptions(), None):
            got.update(zip(b.lines.tolist(), b.table.column("name").to_pylist(), strict=True))
            bad += [(r.line, r.reason) for r in b.bad]
        try:
            value: str | None = mutated[line].decode()[12:-1]
        except UnicodeDecodeError:
            value = None
        expected = {n + 1: name for n, (_, name) in enumerate(people, 1)}
        if value is None:
            del expected[line + 1]
            assert bad == [(line + 1, reason)]
            outcomes["rejected"] += 1
        else:  # a byte that still makes a character: that character, as in the file
            expected[line + 1] = value
            assert bad == []
            outcomes["another character"] += 1
        assert got == expected
    assert min(outcomes.values()) > 0, outcomes


# -- issue 11 #19: what a directory input skips ----------------------------------------------


def test_a_directory_input_says_what_it_skipped_and_why(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("phone,name\n13800000001,王伟\n", encoding="utf-8")
    os.mkfifo(d / "pipe.csv")  # opening it would wait for a writer for ever
    (d / "loop.csv").symlink_to("loop.csv")
    (d / "zero.csv").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "in", "--report-dir", "rep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "WARNING importer: in/loop.csv: skipped: a symbolic link loop\n"
        "WARNING importer: in/pipe.csv: skipped: a named pipe (FIFO), not a regular file\n"
        "WARNING importer: in/zero.csv: skipped: a symbolic link to /dev/zero, a character "
        "device, not a regular file\n"
    )
    assert (
        "  skipped   in/loop.csv: a symbolic link loop\n"
        "  skipped   in/pipe.csv: a named pipe (FIFO), not a regular file\n"
        "  skipped   in/zero.csv: a symbolic link to /dev/zero, a character device, not a "
        "regular file\n"
    ) in proc.stdout
    [summary_path] = (tmp_path / "rep").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["skipped_inputs"] == [
        {"path": "in/loop.csv", "reason": "a symbolic link loop"},
        {"path": "in/pipe.csv", "reason": "a named pipe (FIFO), not a regular file"},
        {
            "path": "in/zero.csv",
            "reason": "a symbolic link to /dev/zero, a character device, not a regular file",
        },
    ]
    assert [Path(f["path"]).name for f in summary["files"]] == ["a.csv"]
    assert summary["counts"]["valid"] == 1


def test_a_pattern_says_it_skipped_a_folder_named_like_an_input_file(tmp_path: Path) -> None:
    # Found verifying issue 11 #19: `dmimport validate job.yaml 'in/*.csv'` left a folder
    # in/old.csv out without a word (a directory input said it); a folder a pattern names on
    # its way (in/*) is still passed over quietly.
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("phone,name\n13800000001,王伟\n", encoding="utf-8")
    (d / "old.csv").mkdir()
    (d / "archive").mkdir()
    os.mkfifo(d / "pipe.csv")
    for pattern in (f"{d}/*.csv", f"{d}/*"):
        skipped: list[tuple[Path, str]] = []
        assert expand_inputs([pattern], skipped) == [d / "a.csv"]
        assert skipped == [
            (d / "old.csv", "a folder (subfolders are not read)"),
            (d / "pipe.csv", "a named pipe (FIFO), not a regular file"),
        ]


def test_a_directory_of_nothing_but_special_files_is_refused_saying_why(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    os.mkfifo(d / "pipe.csv")
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "in", "--report-dir", "rep", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: in: directory has no input files (.csv, .txt, .tsv, .jsonl, .ndjson, .json, "
        ".parquet, .pq, or .gz); skipped pipe.csv: a named pipe (FIFO), not a regular file\n"
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (os.mkfifo, "a named pipe (FIFO), not a regular file"),
        (lambda p: p.symlink_to(p.name), "a symbolic link loop"),
    ],
    ids=["fifo", "loop"],
)
def test_a_special_file_given_by_name_is_refused_not_opened(
    tmp_path: Path, make: Callable[[Path], None], reason: str
) -> None:
    make(tmp_path / "x.csv")
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    proc = dmimport("validate", "job.yaml", "x.csv", "--report-dir", "rep", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"error: x.csv: {reason}\n"
