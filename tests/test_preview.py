"""``dmimport preview``: the exact bodies a run would send, local verdicts and the plan, offline."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from importer.api import validate
from importer.errors import ConfigError
from importer.init import propose_config
from importer.job import load_job, parse_job
from importer.ledger import quota_day
from importer.load import InputOptions, iter_batches, open_source
from importer.map import Mapper
from importer.previewer import Plan, PreviewRow, preview, render_preview

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "customers.yaml"
DATA = ROOT / "sample_data" / "customers.csv"

FIRST_BODY = (
    '{"type":"user","properties":{"phone":"13800138000","email":"zhangsan@example.cn","username":"张三",'
    '"age":34,"gender":"男","vip":true,"city":"北京","registerTime":"2024-03-01 09:15:00",'
    '"source":"crm"}}'
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test (and DMART_* is unset by conftest)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("preview must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def mapper_bodies(config: Path, data: Path) -> dict[int, str]:
    """line -> body, built by the loader and mapper directly (what a run sends)."""
    cfg = load_job(config)
    options = InputOptions()
    source = open_source(data, options)
    mapper = Mapper(cfg)
    out: dict[int, str] = {}
    for batch in iter_batches(source, options, cfg.source_columns()):
        mapped = mapper.map(batch)
        for i, line in enumerate(mapped.lines.tolist()):
            body = mapper.body(mapped, i)
            if body is not None:
                out[int(line)] = body.decode("utf-8")
    return out


def test_first_row_is_the_exact_body_a_run_sends() -> None:
    p = preview(CONFIG, DATA)
    first = p.rows[0]
    assert (first.line, first.verdict, first.errcode, first.reason) == (2, "ok", None, None)
    assert first.body == FIRST_BODY
    expected = mapper_bodies(CONFIG, DATA)
    for row in p.rows:
        if row.verdict == "ok":
            assert row.body == expected[row.line]


def test_known_bad_lines_get_their_verdicts() -> None:
    rows = {r.line: r for r in preview(CONFIG, DATA).rows}
    assert rows[6] == PreviewRow(6, "rejected", None, "expected 8 fields, found 9", None)
    assert rows[11] == PreviewRow(
        11, "rejected", 20003, "column 年龄 (property age): '12a' is not an integer", None
    )
    assert rows[12] == PreviewRow(
        12, "rejected", 20001, "no primary-key property has a value (phone, email)", None
    )
    assert [r.line for r in rows.values()] == [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16]


def test_plan_counts_the_whole_file_like_validate(tmp_path: Path) -> None:
    p = preview(CONFIG, DATA, n=3)
    assert len(p.rows) == 3
    assert p.plan == Plan(
        rows=14, valid=9, rejected_by_errcode={"20001": 1, "20003": 3}, malformed=1
    )
    summary = validate(CONFIG, [DATA], report_dir=tmp_path)
    assert summary.counts["valid"] == p.plan.valid
    assert summary.counts["rejected"] == p.plan.rejected + p.plan.malformed


def test_scan_all_false_plans_only_the_previewed_rows() -> None:
    p = preview(CONFIG, DATA, n=5, scan_all=False)
    assert [r.line for r in p.rows] == [2, 3, 4, 5, 6]
    assert p.plan == Plan(5, 4, {}, 1, scanned_all=False)
    assert "plan for the first 5 records only" in render_preview(p)


def test_rows_across_batch_boundaries_are_the_same(tmp_path: Path) -> None:
    small = load_job(CONFIG, overrides={"input.batch_rows": 2})
    assert preview(small, DATA) == preview(CONFIG, DATA)


def test_render_shows_each_row_and_an_aligned_plan() -> None:
    text = render_preview(preview(CONFIG, DATA))
    lines = text.splitlines()
    assert lines[0] == (f"dmimport preview: job customers (user), {DATA} -- nothing is sent")
    assert f"line 2   ok        {FIRST_BODY}" in lines
    assert "line 6   rejected  expected 8 fields, found 9" in lines
    assert "line 11  rejected  20003 column 年龄 (property age): '12a' is not an integer" in lines
    assert "line 12  rejected  20001 no primary-key property has a value (phone, email)" in lines
    plan = lines[lines.index(next(x for x in lines if x.startswith("plan for"))) :]
    assert plan == [
        "plan for the whole file (local checks; the platform may still refuse rows):",
        "  rows                                           14",
        "  valid (would be sent)                           9",
        "  rejected locally                                4",
        "    20001 Lack of property which is primary key   1",
        "    20003 Data checking failed                    3",
        "  malformed records                               1",
        "",
        "quota plan: 9 rows to send -> 1 request(s) (up to 500 rows each) + 9 margin for "
        "retries and bisection = 10 requests",
        f"quota today: 10,000 of 10,000 left on {quota_day('Asia/Shanghai')} (Asia/Shanghai; "
        "0 used; account unknown (no SECRET)); fits",
    ]


def test_events_and_malformed_json_lines() -> None:
    p = preview(ROOT / "configs/order_events.yaml", ROOT / "sample_data/order_events.jsonl", n=4)
    assert [r.verdict for r in p.rows] == ["ok", "ok", "ok", "rejected"]
    assert p.rows[0].body is not None
    assert p.rows[0].body.startswith(
        '{"type":"event","event":"order_detail","properties":{"phone":'
    )
    assert p.rows[3].line == 4 and p.rows[3].errcode is None
    assert p.rows[3].reason is not None and p.rows[3].reason.startswith("invalid JSON")


def test_a_proposed_config_previews_its_own_file() -> None:
    cfg = parse_job(yaml.safe_load(propose_config(DATA, "user")))
    p = preview(cfg, DATA, n=1)
    assert p.rows[0].body == (
        '{"type":"user","properties":{"phone":"13800138000","email":"zhangsan@example.cn",'
        '"name":"张三","age":"34","gender":"男","is_member":"是","city":"北京",'
        '"register_time":"2024-03-01 09:15:00"}}'
    )
    # line 4's 12-digit phone is refused by the proposed phone_cn (line 6 is ragged)
    assert (p.plan.valid, p.plan.malformed) == (11, 1)


def test_a_missing_column_is_a_config_error(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("手机号,Email\n13800138000,a@b.cn\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        preview(CONFIG, data)
    assert "columns.email.from: column '邮箱' is not in" in str(info.value)
