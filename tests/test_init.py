"""``dmimport init``: a proposed config validates, imports the file it came from, and says why."""

from __future__ import annotations

import csv
import json
import random
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import dmimport, read_results
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.api import validate
from importer.config import EVENT_NAME_PLACEHOLDER, Config, is_placeholder_problem
from importer.errors import ConfigError, LoadError
from importer.init import (
    InitError,
    default_out,
    job_name,
    property_name,
    propose,
    propose_config,
    render_proposal,
    write_config,
)
from importer.job import load_job, parse_job
from importer.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "sample_data"
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def proposed(path: Path, kind: str, **kwargs: Any) -> tuple[str, Config]:
    text = propose_config(path, kind, **kwargs)
    return text, parse_job(yaml.safe_load(text))


def comment_above(text: str, prop: str) -> str:
    """The comment lines right above the ``prop:`` line of ``columns``, joined."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"  {prop}: {{"))
    above: list[str] = []
    for line in reversed(lines[:at]):
        if not line.lstrip().startswith("#"):
            break
        above.insert(0, line.strip().lstrip("# "))
    return " ".join(above)


@pytest.mark.parametrize(
    ("file", "kind", "valid", "rejected"),
    [
        # line 4's phone 013800138002 has 12 digits (phone_cn refuses it, as the comment
        # init writes says), line 6 is ragged, line 12 has no phone or e-mail
        ("customers.csv", "user", 11, 3),
        ("customers_gb18030.csv", "user", 5, 0),
        # line 4 broken JSON, 7 no order id, 8 'yesterday' as the time, 10 no customer key
        ("order_events.jsonl", "event", 6, 4),
        ("orders.parquet", "event", 4, 0),
        ("delete_customers.csv", "user_delete", 3, 0),
    ],
    ids=["utf8-bom-csv", "gb18030-csv", "jsonl-events", "parquet-events", "delete"],
)
def test_proposal_validates_and_imports_its_file(
    file: str, kind: str, valid: int, rejected: int, tmp_path: Path
) -> None:
    named = {"event_name": "order_detail"} if kind == "event" else {}
    text, cfg = proposed(DATA / file, kind, **named)
    assert cfg.job.kind == kind
    assert all(SNAKE.match(name) for name in cfg.columns), list(cfg.columns)
    summary = validate(cfg, [DATA / file], report_dir=tmp_path)
    assert (summary.counts["valid"], summary.counts["rejected"]) == (valid, rejected)
    # the same text, written and read back as a file, is the same config
    out = write_config(text, tmp_path / "job.yaml")
    assert load_job(out).columns == cfg.columns


def test_customers_guesses_keys_and_keeps_phone_as_text() -> None:
    text, cfg = proposed(DATA / "customers.csv", "user")
    assert cfg.job.primary_keys == ["phone", "email"]
    phone, email = cfg.columns["phone"], cfg.columns["email"]
    assert (phone.source, phone.type, phone.transform) == (
        "手机号",
        "string",
        ["strip", "phone_cn"],
    )
    assert (email.source, email.transform) == ("邮箱", ["strip", "lower"])
    assert "look like Chinese mobile numbers" in comment_above(text, "phone")
    assert "kept as text" in comment_above(text, "phone")
    assert "primary key" in comment_above(text, "phone")
    names = {name: spec.source for name, spec in cfg.columns.items()}
    assert names == {
        "phone": "手机号",
        "email": "邮箱",
        "name": "姓名",
        "age": "年龄",
        "gender": "性别",
        "is_member": "会员",
        "city": "城市",
        "register_time": "注册时间",
    }
    # one bad value in the sample keeps a column as text, and the comment says which
    assert cfg.columns["age"].type == "string"
    assert "11/12 sample values are integers, but not '12a'" in comment_above(text, "age")
    assert "'next tuesday'" in comment_above(text, "register_time")
    assert "UTF-8 with BOM" in text


def test_gb18030_detects_datetime_format_and_encoding() -> None:
    _, cfg = proposed(DATA / "customers_gb18030.csv", "user")
    reg = cfg.columns["register_time"]
    assert (reg.type, reg.format) == ("datetime", "%Y-%m-%d %H:%M:%S")
    assert cfg.columns["is_member"].type == "boolean"
    assert cfg.input.encoding == "gb18030"


def test_events_get_event_id_create_time_and_a_placeholder_name() -> None:
    proposal = propose(DATA / "order_events.jsonl", "event")
    data = yaml.safe_load(proposal.text)
    assert data["job"]["event_name"] == EVENT_NAME_PLACEHOLDER
    assert any("CHANGE_ME" in note for note in proposal.notes)
    assert proposal.placeholders == ["job.event_name"]
    with pytest.raises(ConfigError) as info:
        parse_job(data)  # refused until the user names the event
    assert [str(p) for p in info.value.problems] == [
        "job.event_name: still CHANGE_ME: set the platform's event name (e.g. order_detail)"
    ]
    cfg = parse_job(data, overrides={"job.event_name": "order_detail"})
    assert cfg.columns["event_id"].source == "订单号"
    assert cfg.columns["order_id"].source == "订单号"
    create_time = cfg.columns["create_time"]
    assert (create_time.source, create_time.type) == ("下单时间", "datetime")
    assert "unique in the sample" in comment_above(proposal.text, "event_id")

    named = propose(DATA / "orders.parquet", "event", event_name="order_detail")
    cfg = parse_job(yaml.safe_load(named.text))
    assert cfg.job.event_name == "order_detail"
    assert not any("CHANGE_ME" in note for note in named.notes)
    assert cfg.columns["create_time"].format == "%Y-%m-%d %H:%M:%S"
    assert cfg.columns["amount"].type == "number"


def test_render_proposal_says_what_to_check_and_do_next() -> None:
    proposal = propose(DATA / "order_events.jsonl", "event")
    assert render_proposal(proposal, "my orders.yaml").splitlines() == [
        "wrote my orders.yaml: kind event, 7 properties, primary keys phone, email (guessed "
        f"from {DATA / 'order_events.jsonl'}'s header and first 9 rows)",
        "check before the first run:",
        "  - job.event_name is the placeholder CHANGE_ME: set the platform's event name (or "
        "pass --event-name)",
        "next: read the comments in the config and fix what is wrong, then",
        "  dmimport check-config 'my orders.yaml'",
        f"  dmimport preview 'my orders.yaml' {DATA / 'order_events.jsonl'}",
        "the config sends to the platform's documented host (target.base_url); to try it on the",
        "local sandbox first, run `dmimport sandbox` in another terminal, then (--debug: the",
        "sandbox checks every row as the platform would and stores nothing; the job's ledger",
        "records no delivery)",
        "  DMART_SECRET=00000000-0000-4000-8000-000000000000 dmimport run 'my orders.yaml' "
        f"{DATA / 'order_events.jsonl'} --base-url http://127.0.0.1:8080 --debug",
    ]


def test_a_proposal_targets_the_documented_host_and_says_how_to_use_the_sandbox() -> None:
    text, cfg = proposed(DATA / "customers.csv", "user")
    assert cfg.target.base_url == "http://data-api.dmartech.cn"
    assert cfg.target.protocol == "import-api"
    target = text[text.index("target:\n") : text.index("job:\n")]
    # the protocol is shown, commented out at its default; the plain-http risk and the way to
    # the sandbox are said right above base_url
    assert "  # protocol: import-api\n" in target
    assert "use https:// where your platform offers it" in target
    assert "run with --base-url http://127.0.0.1:8080" in " ".join(target.split())
    assert yaml.safe_load(text)["target"]["base_url"] == "http://data-api.dmartech.cn"


def test_the_sandbox_command_init_prints_runs_against_the_sandbox(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # what a new user does in the first minutes: init, then the command init printed, with the
    # sandbox (`dmimport sandbox`) where the command expects it (here on a free port)
    data = tmp_path / "customers.csv"
    data.write_bytes((DATA / "customers.csv").read_bytes())
    init = dmimport("init", data, "--kind", "user", "--out", tmp_path / "job.yaml")
    assert init.returncode == 0, init.stderr
    command = init.stdout.strip().splitlines()[-1].replace("http://127.0.0.1:8080", sandbox.url)
    assignment, program, *args = shlex.split(command)
    name, _, secret = assignment.partition("=")
    assert (name, program) == ("DMART_SECRET", "dmimport")
    assert secret == sandbox.secret  # the sandbox's own demo SECRET
    proc = dmimport(*args, "--report-dir", tmp_path / "rep", secret=secret)
    assert proc.returncode in (0, 1), proc.stderr
    results = read_results(next((tmp_path / "rep").glob("*/results.csv")))
    # every row the local checks let through was answered by the sandbox: the demo account
    # does not define the proposed `name` (the user renames it, step 3 of getting-started),
    # so 20003 for each, found by bisection; none failed to reach it or was unauthenticated
    sent = [r for r in results if r["request_id"]]
    # line 4's 12-digit phone (phone_cn), ragged line 6, line 12 with no key: never sent
    assert len(sent) == 11
    assert {(r["status"], r["errcode"]) for r in sent} == {("failed", "20003")}
    assert "property 'name' is not defined" in sent[0]["errmsg"]
    # --debug records no delivery (a later --changed-only run to the platform skips nothing);
    # the ledger only counts its requests, under the sandbox's account
    runs = dmimport("runs", tmp_path / "job.yaml")
    assert runs.stdout.startswith("no runs recorded yet\n"), runs.stdout


def test_delete_maps_only_the_primary_keys(tmp_path: Path) -> None:
    data = tmp_path / "gone.csv"
    data.write_text("手机号,邮箱,姓名\n13800138000,a@b.cn,张三\n", encoding="utf-8")
    text, cfg = proposed(data, "user_delete")
    assert list(cfg.columns) == ["phone", "email"]
    assert "Not imported (a delete needs only the primary keys): 姓名" in text


WIDE_HEADER = [
    "会员编号", "手机号", "邮箱", "姓名", "性别", "年龄", "生日", "省份", "城市", "地址",
    "会员等级", "积分", "注册时间", "订单号", "下单时间", "订单金额", "实付金额", "优惠金额",
    "数量", "商品名称", "商品编号", "门店编号", "是否会员", "渠道", "备注", "收藏数",
    "最近浏览", "优惠券", "Order Source", "createdAt", "会员卡号", "身份证号", "邮编",
    "微信", "订单状态", "支付方式", "支付时间", "复购率", "标签", "推荐人",
]  # fmt: skip


def wide_csv(path: Path, rows: int = 300) -> Path:
    """A shop export as spreadsheets write them: 40 columns, Chinese headers, a UTF-8 BOM."""
    rnd = random.Random(7)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(WIDE_HEADER)
        for i in range(rows):
            w.writerow([
                f"{i:08d}", f"1{rnd.choice('3589')}{rnd.randrange(10**9):09d}",
                f"u{i}@shop.cn" if i % 7 else "", f"客户{i}", rnd.choice("男女"), str(18 + i % 60),
                f"19{60 + i % 40}-0{1 + i % 9}-1{i % 10}", "广东", "深圳", f"南山区{i}号",
                rnd.choice(["金卡", "银卡"]), str(i * 13),
                f"2024/03/{1 + i % 28:02d} 09:{i % 60:02d}",
                f"2018{i:013d}", f"2024/3/{1 + i % 28} {i % 24}:{i % 60:02d}",
                f"{rnd.randrange(100, 99999) / 100:.2f}", f"{i}.5", "0.00", str(1 + i % 5),
                f"商品{i % 9}", f"SKU{i:05d}", f"{i % 50:03d}", rnd.choice(["是", "否"]),
                rnd.choice(["天猫", "京东"]), "", str(i % 2), "2024-03-01", str(i % 2),
                "app", f"2024-03-01T08:{i % 60:02d}:00", f"62{i:014d}",
                f"44030{i:013d}", "518000", f"wx_{i}", rnd.choice(["已付款", "已发货"]), "微信支付",
                f"2024-03-{1 + i % 28:02d} 10:00:00", f"{i % 100}%", "a,b", "2.01808E+16",
            ])  # fmt: skip
    return path


def test_wide_export_gets_sensible_types(tmp_path: Path) -> None:
    data = wide_csv(tmp_path / "shop.csv")
    proposal = propose(data, "user")
    cfg = parse_job(yaml.safe_load(proposal.text))
    assert len(cfg.columns) == 40
    assert all(SNAKE.match(name) for name in cfg.columns)
    types = {spec.source: (spec.type, spec.format) for spec in cfg.columns.values()}
    text = ("string", None)
    assert types["会员编号"] == text  # leading zeros
    assert types["订单号"] == text  # 17 digits
    assert types["身份证号"] == text  # 18 digits
    assert types["会员卡号"] == text  # 16 digits
    assert types["门店编号"] == text  # '007'
    assert types["收藏数"] == text  # only 0 and 1: flag or count?
    assert types["推荐人"] == text  # 2.01808E+16
    assert types["年龄"] == ("integer", None)
    assert types["积分"] == ("integer", None)
    assert types["订单金额"] == ("number", None)
    assert types["优惠金额"] == ("number", None)
    assert types["是否会员"] == ("boolean", None)
    assert types["注册时间"] == ("datetime", "%Y/%m/%d %H:%M")
    # 2024/3/1 0:00: the built-in recognition reads one-digit fields in bulk, a format would not
    assert types["下单时间"] == ("datetime", None)
    assert "recognised without a format" in comment_above(proposal.text, "order_time")
    assert types["生日"] == ("datetime", "%Y-%m-%d")
    assert types["createdAt"] == ("datetime", "%Y-%m-%dT%H:%M:%S")
    assert cfg.job.primary_keys == ["phone", "email", "member_id"]
    assert "leading zeros ('00000000')" in comment_above(proposal.text, "member_id")
    assert "17-digit values are ids" in comment_above(proposal.text, "order_id")
    assert "WARNING" in comment_above(proposal.text, "referrer")
    assert any("2.01808E+16" in note for note in proposal.notes)
    assert cfg.columns["order_source"].source == "Order Source"
    assert cfg.columns["created_at"].source == "createdAt"
    assert cfg.columns["col_26"].source == "收藏数"
    summary = validate(cfg, [data], report_dir=tmp_path / "reports")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (300, 0)


def test_wide_export_as_events_picks_the_order_columns(tmp_path: Path) -> None:
    data = wide_csv(tmp_path / "orders.csv", rows=50)
    _, cfg = proposed(data, "event", event_name="order_paid")
    assert cfg.columns["event_id"].source == "订单号"
    create_time = cfg.columns["create_time"]
    assert (create_time.source, create_time.type) == ("下单时间", "datetime")
    # 创建时间-like names of other columns never clash with the event's own properties
    assert len(set(cfg.columns)) == len(cfg.columns)
    summary = validate(cfg, [data], report_dir=tmp_path / "reports")
    assert summary.counts["valid"] == 50


def test_only_the_sample_is_read(tmp_path: Path) -> None:
    data = tmp_path / "n.csv"
    rows = "\n".join(f"138001{i:05d},{i}" for i in range(1, 50)) + "\n13800100050,not a number\n"
    data.write_text("手机号,积分\n" + rows, encoding="utf-8")
    text, cfg = proposed(data, "user", sample_rows=10)
    assert cfg.columns["points"].type == "integer"
    assert "the first 10 rows" in text
    _, cfg = proposed(data, "user")
    assert cfg.columns["points"].type == "string"


def test_odd_headers_round_trip_through_yaml(tmp_path: Path) -> None:
    header = ["手机号", "yes", "a: b", "#tag", "100", " spaced ", "x, y", "null", "%d"]
    data = tmp_path / "odd.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerow(["13800138000", "1", "2", "3", "4", "5", "6", "7", "8"])
    _, cfg = proposed(data, "user")
    assert cfg.source_columns() == header
    assert all(SNAKE.match(name) for name in cfg.columns)


def test_full_width_phone_numbers_get_nfkc(tmp_path: Path) -> None:
    data = tmp_path / "fw.csv"
    data.write_text("电话,积分\n１３８００１３８０００,１２\n13800138001,3\n", encoding="utf-8")
    _, cfg = proposed(data, "user")
    assert cfg.columns["phone"].transform == ["nfkc", "strip", "phone_cn"]
    assert cfg.columns["points"].type == "string"  # '１２' is not an integer to the platform
    assert validate(cfg, [data], report_dir=tmp_path / "r").counts["valid"] == 2


def test_semicolon_delimiter_is_detected(tmp_path: Path) -> None:
    data = tmp_path / "semi.csv"
    data.write_text("手机号;邮箱\n13800138000;a@b.cn\n", encoding="utf-8")
    _, cfg = proposed(data, "user")
    assert cfg.input.delimiter == ";"
    assert list(cfg.columns) == ["phone", "email"]
    assert validate(cfg, [data], report_dir=tmp_path / "r").counts["valid"] == 1


def test_no_key_column_gives_a_placeholder_key_and_a_note(tmp_path: Path) -> None:
    data = tmp_path / "k.csv"
    data.write_text("城市,积分\n北京,3\n上海,4\n", encoding="utf-8")
    proposal = propose(data, "user")
    assert yaml.safe_load(proposal.text)["job"]["primary_keys"] == ["CHANGE_ME"]
    assert proposal.placeholders == ["job.primary_keys"]
    assert any("primary keys" in note for note in proposal.notes)
    config = write_config(proposal.text, tmp_path / "k.yaml")
    with pytest.raises(ConfigError) as info:
        load_job(config)
    line = proposal.text.splitlines().index("  primary_keys: [CHANGE_ME]") + 1
    assert [str(p) for p in info.value.problems] == [
        f"job.primary_keys.0 (line {line}): still CHANGE_ME: name the account's primary-key "
        "properties (data center -> meta data -> customer properties), e.g. phone, and map "
        "them under columns"
    ]


@pytest.mark.parametrize(
    ("header", "position", "name"),
    [
        ("手机号", 1, "phone"),
        ("联系电话", 1, "phone"),
        ("客户手机号", 1, "phone"),
        ("电子邮箱", 1, "email"),
        ("E-mail", 1, "email"),
        ("客户名称", 1, "name"),
        ("会员ID", 1, "member_id"),
        ("订单编号", 1, "order_id"),
        ("实付金额", 1, "paid_amount"),
        ("金额（元）", 1, "amount"),
        ("累计消费", 1, "total_spent"),
        ("Order ID", 1, "order_id"),
        ("createdAt", 1, "created_at"),
        ("Ünïcode Näme", 1, "unicode_name"),
        ("收藏数", 26, "col_26"),
        ("2024", 3, "col_3"),
        ("2024 sales", 3, "col_2024_sales"),
    ],
    ids=lambda v: str(v),
)
def test_property_names(header: str, position: int, name: str) -> None:
    assert property_name(header, position)[0] == name


def test_write_config_refuses_to_overwrite_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    assert write_config("a: 1\n", "configs/x.yaml") == Path("configs/x.yaml")
    with pytest.raises(InitError) as info:
        write_config("a: 2\n", "configs/x.yaml")
    assert str(info.value) == "configs/x.yaml exists; use --force to overwrite"
    assert info.value.exit_code == 2
    assert (tmp_path / "configs/x.yaml").read_text() == "a: 1\n"
    write_config("a: 2\n", "configs/x.yaml", force=True)
    assert (tmp_path / "configs/x.yaml").read_text() == "a: 2\n"
    write_config("a: 3\n", "new/dir/y.yaml")
    assert (tmp_path / "new/dir/y.yaml").read_text() == "a: 3\n"


def test_default_out_is_the_file_stem_here() -> None:
    assert default_out("exports/shop_2024.csv") == Path("shop_2024.yaml")
    assert default_out("exports/shop.csv.gz") == Path("shop.yaml")


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("users", {}, "unknown kind 'users': expected one of user, user_delete, event"),
        ("user", {"event_name": "x"}, "an event name only applies to kind event"),
        ("event", {"event_name": " "}, "the event name must not be empty"),
    ],
    ids=["unknown-kind", "event-name-for-user", "blank-event-name"],
)
def test_bad_requests_are_refused(kind: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InitError) as info:
        propose(DATA / "customers.csv", kind, **kwargs)
    assert str(info.value) == message


CELLS = st.one_of(
    st.sampled_from(
        ["", " ", "0", "1", "007", "12", "-3", "+4", "12.50", ".5", "5.", "1e3", "2.01808E+16",
         "是", "否", "TRUE", "no", "maybe", "12a", "1,234.50", "2024-03-01", "2024/3/1 9:15",
         "2024-02-30", "03/04/2024", "2024-03-01 09:15:00", "1709697600", "a@b.cn", "１２",
         "１３８００１３８０００", "138 0013 8000", "+86 138-0013-8000"]
    ),
    st.integers(-(10**20), 10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6),
)  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=12))
def test_a_proposal_never_rejects_a_sample_value_for_its_type(
    rows: list[list[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever the sample holds, the guessed types convert every value of it, but a date that
    does not exist (2024-02-30) among real ones: a bad row of a date column, rejected with its
    reason (the comment counts them)."""
    tmp = tmp_path_factory.mktemp("prop")
    data = tmp / "x.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["手机号", "甲", "乙", "丙"])
        w.writerows([f"1380013{i:04d}", *row] for i, row in enumerate(rows))
    _, cfg = proposed(data, "user")
    summary = validate(cfg, [data], report_dir=tmp / "r")
    other = [r for r in summary.top_reasons if "is no such date" not in r["reason"]]
    assert other == [], summary.top_reasons


def test_a_binary_parquet_column_that_is_not_text_is_left_out_of_the_proposal(
    tmp_path: Path,
) -> None:
    # A WKB geometry made every sampled row bad: the proposal mapped it, found no phone in 0
    # sample rows, and the run it proposed rejected the rows.
    n = 50
    points = [struct.pack("<BIdd", 1, 1, 100 + i / 7, 30 + i / 11) for i in range(n)]
    table = pa.table({
        "phone": [f"138{i:08d}" for i in range(n)],
        "name": [f"n{i}" for i in range(n)],
        "geometry": pa.array(points, pa.binary()),
        "label": pa.array([f"l{i}".encode() for i in range(n)], pa.binary()),  # binary text
    })  # fmt: skip
    path = tmp_path / "geo.parquet"
    pq.write_table(table, path)
    proposal = propose(path, "user")
    cfg = parse_job(yaml.safe_load(proposal.text))
    assert proposal.sample_rows == n
    assert cfg.job.primary_keys == ["phone"]
    assert {s.source for s in cfg.columns.values()} == {"phone", "name", "label"}
    assert (
        "# Left out: geometry (binary, and most sampled values are not text: they cannot be sent "
        "as\n# properties)."
    ) in proposal.text
    config = tmp_path / "geo.yaml"
    config.write_text(proposal.text, encoding="utf-8")
    summary = validate(config, [path], report_dir=tmp_path / "rep")
    assert summary.exit_code == 0 and summary.counts["valid"] == n


@pytest.mark.slow
def test_init_takes_the_encoding_the_refusal_asks_for(tmp_path: Path) -> None:
    # Found verifying issue 11 #1: init on a Latin-1 export said "set input.encoding", but a
    # new user has no config yet and init had no way to take it: a dead end.
    from helpers import dmimport

    names = ["Õakman", "Müller", "Groß", "José"]
    text = "phone,name\n" + "".join(f"1390000{i:04d},{n}\n" for i, n in enumerate(names * 5))
    (tmp_path / "latin.csv").write_bytes(text.encode("latin-1"))
    proc = dmimport("init", "latin.csv", "--kind", "user", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.endswith(
        "or input.encoding: utf-8 to reject the lines that are not UTF-8 "
        "(to dmimport init: --encoding NAME)\n"
    )
    assert not (tmp_path / "latin.yaml").exists()
    proc = dmimport("init", "latin.csv", "--kind", "user", "--encoding", "nope", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "error: --encoding: unknown encoding 'nope'\n")
    proc = dmimport("init", "latin.csv", "--kind", "user", "--encoding", "latin-1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = load_job(tmp_path / "latin.yaml")
    assert config.input.encoding == "latin-1"
    summary = validate(tmp_path / "latin.yaml", [tmp_path / "latin.csv"], report_dir=tmp_path)
    assert summary.counts["valid"] == 20


def test_the_run_path_does_not_import_the_init_wizard() -> None:
    code = "import sys, importer.api; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert [m for m in out.stdout.split() if m.startswith("importer.init")] == []


# --- issue 14: a messy nightly export, first try ------------------------------------------


def crm_csv(path: Path, rows: int = 60) -> Path:
    """A GB18030 CRM export from Excel: Chinese headers, phones written +86 138 0013 0000,
    138-0013-0001, 0086 1380013..., and three in scientific notation (1.38001E+10), amounts with
    thousands separators ("1,000.00"), birthdays 1990/3/5 and one 2024-02-30, trailing empty
    ,,,,, rows."""
    phones = ["+86 138 0013 {:04d}", "138-0013-{:04d}", "1380013{:04d}", "0086 1380013{:04d}"]
    lines = ["客户编号,手机号,姓名,消费金额,生日,注册时间"]
    for i in range(rows):
        phone = "1.38001E+10" if i % 20 == 7 else phones[i % 4].format(i)
        amount = f'"{1000 + i * 7:,}.{i % 100:02d}"' if i % 3 == 0 else f"{i}.50"
        birthday = "2024-02-30" if i == 11 else f"1990/{1 + i % 12}/{1 + i % 28}"
        lines.append(
            f"C{i:05d},{phone},客户{i},{amount},{birthday},2024-03-{1 + i % 28:02d} 10:20:30"
        )
    lines += [",,,,,"] * 3
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("gb18030"))
    return path


def orders_jsonl(path: Path, rows: int = 40) -> Path:
    """A shop's JSON Lines orders: ISO-8601 times with +08:00, epoch-ms pay_time (null on every
    fifth, unpaid, order), amounts as numbers and as "1,299.00", a nested items list."""
    out = []
    for i in range(rows):
        row: dict[str, Any] = {
            "order_id": f"O{i:05d}",
            "buyer_phone": f"1380013{i:04d}",
            "pay_time": None if i % 5 == 0 else 1709605230000 + i * 1000,
            "created_at": f"2024-03-05T10:{i % 60:02d}:30+08:00",
            "amount": "1,299.00" if i % 3 == 0 else i + 0.5,
            "status": "PAID",
            "items": [{"sku": f"S{i}", "qty": 2}],
        }
        out.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def placeholder_problems_of(config: Path) -> list[str]:
    """The problems ``load_job`` finds in ``config``: each must be a CHANGE_ME left to fill."""
    try:
        load_job(config)
    except ConfigError as exc:
        assert all(is_placeholder_problem(p.message) for p in exc.problems), exc
        return [str(p) for p in exc.problems]
    return []


def test_a_crm_export_gets_phone_cn_and_a_warning_for_phones_excel_damaged(
    tmp_path: Path,
) -> None:
    data = crm_csv(tmp_path / "crm_export.2026-12-04.csv")
    proposal = propose(data, "user")
    config = write_config(proposal.text, tmp_path / default_out(data))
    assert config.name == "crm_export.yaml"
    assert placeholder_problems_of(config) == []
    cfg = load_job(config)
    assert cfg.input.encoding == "gb18030"
    assert cfg.job.name == "crm_export"
    assert cfg.job.primary_keys == ["phone"]
    phone = cfg.columns["phone"]
    assert (phone.source, phone.type, phone.transform) == (
        "手机号",
        "string",
        ["strip", "phone_cn"],
    )
    about = comment_above(proposal.text, "phone")
    assert "the header and 57/60 sample values look like Chinese mobile numbers" in about
    assert "phone_cn drops +86/0086, spaces and dashes" in about
    assert "(3 sample value(s) would be rejected, e.g. '1.38001E+10')" in about
    assert "WARNING: values like '1.38001E+10' are phone numbers a spreadsheet turned into" in about
    assert "digits drops" not in about
    birthday = cfg.columns["birthday"]
    assert (birthday.type, birthday.timezone) == ("datetime", None)  # no offsets, no epochs
    assert comment_above(proposal.text, "birthday") == (
        "生日: 59/60 sample values are datetimes in formats dmimport recognises; 1 would be "
        "rejected as no such date, e.g. '2024-02-30'"
    )
    spent = cfg.columns["spent_amount"]  # 消费金额: "1,000.00", 12.50
    assert (spent.type, spent.number_format is not None) == ("number", True)
    assert "cells like '1,000.00' with thousands separators" in comment_above(
        proposal.text, "spent_amount"
    )
    assert proposal.placeholders == [] and proposal.nested == {}
    # the config as proposed: every good row valid; the three Excel-damaged phones and the
    # impossible birthday rejected
    summary = validate(config, [data], report_dir=tmp_path / "r")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (56, 4)


@pytest.mark.parametrize(
    ("cells", "transform"),
    [
        # the header says phone: mobiles in every shape phone_cn reads
        (["+86 138 0013 8000", "138-0013-8001", "0086 13800138002", "13800138003"], "phone_cn"),
        # landlines: phone_cn would refuse them all; digits drops the dashes
        (["010-12345678", "0755-87654321", "021 66668888", "13800138000"], "digits"),
    ],
    ids=["mobiles", "landlines"],
)
def test_phone_columns_by_header(cells: list[str], transform: str, tmp_path: Path) -> None:
    data = tmp_path / "p.csv"
    data.write_text("联系方式,名字\n" + "".join(f"{c},n{i}\n" for i, c in enumerate(cells)))
    _, cfg = proposed(data, "user")
    assert cfg.columns["phone"].transform == ["strip", transform]
    assert cfg.job.primary_keys == ["phone"]


def test_phone_cn_rejects_the_junk_digits_made_keys_of(tmp_path: Path) -> None:
    data = tmp_path / "p.csv"
    good = [f"1380013{i:04d}" for i in range(9)]
    data.write_text("mobile\n" + "\n".join([*good, "138OO138000"]) + "\n", encoding="utf-8")
    proposal = propose(data, "user")
    assert "e.g. '138OO138000'" in comment_above(proposal.text, "phone")
    config = write_config(proposal.text, tmp_path / "p.yaml")
    summary = validate(config, [data], report_dir=tmp_path / "r")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (9, 1)


@pytest.mark.parametrize(
    ("cells", "type_", "marks", "example"),
    [
        (["1,299.00", "8,838.79", "12.50", ""], "number", (",", "."), "1,299.00"),
        (["1.234,56", "12,5", "7"], "number", (".", ","), "1.234,56"),
        (["1,299", "12", "1,000,000"], "integer", (",", "."), "1,299"),
    ],
    ids=["comma-thousands", "decimal-comma", "integer"],
)
def test_amounts_with_thousands_separators_get_number_format(
    cells: list[str], type_: str, marks: tuple[str, str], example: str, tmp_path: Path
) -> None:
    data = tmp_path / "a.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["手机号", "订单金额"])
        w.writerows([f"1380013{i:04d}", c] for i, c in enumerate(cells))
    text, cfg = proposed(data, "user")
    amount = cfg.columns["amount"]
    assert amount.type == type_
    assert amount.number_format is not None
    assert (amount.number_format.thousands, amount.number_format.decimal) == marks
    assert f"cells like {example!r}" in comment_above(text, "amount")
    summary = validate(cfg, [data], report_dir=tmp_path / "r")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (len(cells), 0)


def test_amounts_with_thousands_separators_and_one_odd_cell_say_which_number_format(
    tmp_path: Path,
) -> None:
    data = tmp_path / "a.csv"
    cells = [f"{i},{i:03d}.50" for i in range(1, 10)] + ["abc"]
    with open(data, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["手机号", "订单金额"])
        w.writerows([f"1380013{i:04d}", c] for i, c in enumerate(cells))
    text, cfg = proposed(data, "user")
    assert (cfg.columns["amount"].type, cfg.columns["amount"].number_format) == ("string", None)
    assert comment_above(text, "amount") == (
        "订单金额: 9/10 sample values are numbers, cells like '1,001.50' with thousands "
        "separators, but not 'abc' -> text (type: number with number_format: "
        '{thousands: ","} would reject such rows with 20003)'
    )


def test_the_phone_comment_counts_only_the_values_phone_cn_itself_rejects(tmp_path: Path) -> None:
    # a spreadsheet's 13912345680.0 is read by phone_cn as 13912345680: not counted as
    # rejected; the 12-digit number is
    data = tmp_path / "p.csv"
    cells = [f"1391234{i:04d}" for i in range(8)] + ["13912345680.0", "139123456801"]
    data.write_text("手机号\n" + "\n".join(cells) + "\n", encoding="utf-8")
    text, cfg = proposed(data, "user")
    assert cfg.columns["phone"].transform == ["strip", "phone_cn"]
    said = comment_above(text, "phone")
    assert "the header and 9/10 sample values look like Chinese mobile numbers" in said
    assert "(1 sample value(s) would be rejected, e.g. '139123456801')" in said
    summary = validate(cfg, [data], report_dir=tmp_path / "r")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (9, 1)


def test_epoch_times_with_0_for_no_time_stay_integers_and_say_why(tmp_path: Path) -> None:
    data = tmp_path / "o.jsonl"
    rows = [
        {"phone": f"1390000{i:04d}", "pay_time": 1733360000000 + i if i % 4 else 0}
        for i in range(1, 9)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text, cfg = proposed(data, "user")
    assert cfg.columns["pay_time"].type == "integer"
    assert comment_above(text, "pay_time") == (
        "pay_time: named like a time and 6/8 sample values are epoch milliseconds like "
        "'1733360000001', but 2 are 0 -> integer, sent as written (type: datetime would send 0 "
        "as 1970-01-01: leave those cells empty in the export, then set type: datetime and a "
        "timezone)"
    )


def test_a_column_only_its_values_call_phones_gets_phone_cn_only_if_it_refuses_none(
    tmp_path: Path,
) -> None:
    data = tmp_path / "c.csv"
    mobiles = [f"+86 138-0013-{i:04d}" for i in range(9)]
    rows = "".join(f"{m},{m}\n" for m in mobiles) + "13800139999,n/a\n"
    data.write_text("contact,backup\n" + rows, encoding="utf-8")
    text, cfg = proposed(data, "user")
    assert cfg.columns["phone"].source == "contact"
    assert cfg.columns["phone"].transform == ["strip", "phone_cn"]
    backup = cfg.columns["backup"]
    assert (backup.type, backup.transform) == ("string", ["strip"])
    assert comment_above(text, "backup") == (
        "backup: 9/10 sample values look like Chinese mobile numbers, but not 'n/a' -> text "
        "(phone_cn would reject such rows; add it if they should be rejected)"
    )


def test_jsonl_orders_get_timezone_create_time_always_filled_and_nested_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "UTC")  # a server on UTC; the cells say +08:00
    data = orders_jsonl(tmp_path / "orders_20261204.jsonl")
    proposal = propose(data, "event", event_name="order_detail")
    text = proposal.text
    config = write_config(text, tmp_path / default_out(data))
    assert config.name == "orders.yaml"
    assert placeholder_problems_of(config) == []
    cfg = load_job(config)
    assert cfg.job.name == "orders"
    assert cfg.job.primary_keys == ["phone"]
    assert cfg.columns["phone"].transform == ["strip", "phone_cn"]
    assert cfg.columns["event_id"].source == "order_id"
    # create_time: the time filled in every row, not pay_time (null on unpaid orders)
    create_time = cfg.columns["create_time"]
    assert (create_time.source, create_time.type) == ("created_at", "datetime")
    assert create_time.timezone == "Asia/Shanghai"
    assert (
        "created_at: the event's time: filled in all 40 sampled rows; pay_time is empty in 8"
        in comment_above(text, "create_time")
    )
    created = cfg.columns["created_at"]
    assert (created.type, created.timezone) == ("datetime", "Asia/Shanghai")
    assert (
        "cells carry offsets like +08:00: converted into Asia/Shanghai (every offset sampled in "
        "this file is +08:00); without timezone the offset would be dropped"
    ) in comment_above(text, "created_at")
    pay = cfg.columns["pay_time"]
    assert (pay.type, pay.timezone) == ("datetime", "Asia/Shanghai")
    assert (
        "cells are epoch milliseconds like 1709605231000: converted into Asia/Shanghai"
        in comment_above(text, "pay_time")
    )
    assert "without timezone they would be read as UTC" in comment_above(text, "pay_time")
    # the nested list is named, not mapped; the rows are read (no 'could not be read')
    assert "  # skipped (nested, not a flat value): items (list of objects)\n" in text
    assert proposal.nested == {"items": "list of objects"}
    assert "could not be read" not in text
    assert proposal.sample_rows == 40
    assert "items" not in cfg.source_columns()
    assert "status" in cfg.columns and "order_id" in cfg.columns
    amount = cfg.columns["amount"]  # "1,299.00" and 1.5
    assert (amount.type, amount.number_format is not None) == ("number", True)
    summary = validate(config, [data], report_dir=tmp_path / "r")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (40, 0)


def test_the_timezone_is_the_machines_unless_the_headers_are_chinese(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    data = orders_jsonl(tmp_path / "orders.jsonl", rows=5)
    _, cfg = proposed(data, "event", event_name="order_detail")
    assert cfg.columns["created_at"].timezone == "Europe/Berlin"
    chinese = tmp_path / "cn.csv"
    chinese.write_text("手机号,下单时间\n13800138000,2024-03-05T10:20:30Z\n", encoding="utf-8")
    text, cfg = proposed(chinese, "user")
    assert cfg.columns["order_time"].timezone == "Asia/Shanghai"
    assert "like Z: converted into Asia/Shanghai (the headers are Chinese)" in comment_above(
        text, "order_time"
    )


def test_create_time_falls_back_to_the_most_filled_time_and_says_it_is_required(
    tmp_path: Path,
) -> None:
    data = tmp_path / "e.csv"
    rows = [f"E{i},1380013{i:04d},{'' if i % 4 == 0 else '2024-03-05 10:00:00'},"
            f"{'' if i % 2 else '2024-03-06 11:00:00'}" for i in range(20)]  # fmt: skip
    data.write_text("order_id,phone,pay_time,ship_time\n" + "\n".join(rows) + "\n")
    text, cfg = proposed(data, "event", event_name="order_detail")
    assert cfg.columns["create_time"].source == "pay_time"
    about = comment_above(text, "create_time")
    assert "filled in 15 of 20 sampled rows, the most of any datetime column" in about
    assert "ship_time is empty in 10" in about
    assert "create_time is required: rows where it is empty are rejected" in about


def test_parquet_nested_columns_are_skipped_and_the_flat_ones_mapped(tmp_path: Path) -> None:
    n = 10
    table = pa.table({
        "order_id": [f"O{i}" for i in range(n)],
        "mobile": [f"1380013{i:04d}" for i in range(n)],
        "order_time": [f"2024-03-05 10:00:{i:02d}" for i in range(n)],
        "items": [[{"sku": "A", "qty": i}] for i in range(n)],
        "address": [{"city": "SH", "zip": "200000"} for _ in range(n)],
    })  # fmt: skip
    path = tmp_path / "orders.parquet"
    pq.write_table(table, path)
    proposal = propose(path, "event", event_name="order_detail")
    cfg = parse_job(yaml.safe_load(proposal.text))
    assert proposal.nested == {"items": "list of objects", "address": "object"}
    assert "# skipped (nested, not a flat value): items (list of objects), address (object)" in (
        proposal.text
    )
    assert set(cfg.source_columns()) == {"order_id", "mobile", "order_time"}
    assert (cfg.columns["event_id"].source, cfg.columns["create_time"].source) == (
        "order_id",
        "order_time",
    )
    summary = validate(cfg, [path], report_dir=tmp_path / "r")
    assert summary.counts["valid"] == n


def test_undecided_event_fields_are_change_me_refused_with_their_lines(tmp_path: Path) -> None:
    data = tmp_path / "visits.csv"
    data.write_text("城市,手机号\n北京,13800138000\n北京,13800138001\n", encoding="utf-8")
    proposal = propose(data, "event")
    assert proposal.placeholders == [
        "job.event_name",
        "columns.event_id.from",
        "columns.create_time.from",
    ]
    assert proposal.warnings() == [
        "3 placeholders to fill (CHANGE_ME): job.event_name, columns.event_id.from, "
        "columns.create_time.from; check-config and run refuse the config until each is replaced"
    ]
    lines = proposal.text.splitlines()
    assert "  event_id: {from: CHANGE_ME, transform: [strip]}" in lines
    assert "  create_time: {from: CHANGE_ME, type: datetime}" in lines
    assert "replace it with the file column that holds each event's unique id" in comment_above(
        proposal.text, "event_id"
    )
    config = write_config(proposal.text, tmp_path / "visits.yaml")
    at = {key: lines.index(next(x for x in lines if x.startswith(key))) + 1
          for key in ("  event_name:", "  event_id:", "  create_time:")}  # fmt: skip
    assert placeholder_problems_of(config) == [
        f"job.event_name (line {at['  event_name:']}): still CHANGE_ME: set the platform's "
        "event name (e.g. order_detail)",
        f"columns.event_id.from (line {at['  event_id:']}): still CHANGE_ME: name the file "
        "column that holds each event's unique id (e.g. the order id)",
        f"columns.create_time.from (line {at['  create_time:']}): still CHANGE_ME: name the "
        "file column that holds each event's time",
    ]


def test_check_config_and_run_refuse_change_me_before_reading_or_sending(
    fresh_sandbox: Any, tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    data = orders_jsonl(tmp_path / "orders_20261204.jsonl", rows=5)
    init = dmimport("init", data, "--kind", "event", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert init.stderr == (
        "warning: skipped (nested, not a flat value): items (list of objects)\n"
        "warning: 1 placeholder to fill (CHANGE_ME): job.event_name; check-config and run "
        "refuse the config until each is replaced\n"
    )
    config = tmp_path / "orders.yaml"
    line = config.read_text(encoding="utf-8").splitlines().index("  event_name: CHANGE_ME") + 1
    expected = (
        f"job.event_name (line {line}): still CHANGE_ME: set the platform's event name "
        "(e.g. order_detail)"
    )
    check = dmimport("check-config", config, cwd=tmp_path)
    assert check.returncode == 2
    assert expected in check.stderr, check.stderr
    url = ["--base-url", sb.url]
    for command in (["run", "--debug", *url], ["run", *url], ["validate"], ["preview"]):
        proc = dmimport(command[0], config, data, *command[1:], secret=sb.secret, cwd=tmp_path)
        assert proc.returncode == 2, (command, proc.stderr)
        assert expected in proc.stderr, proc.stderr
    assert sb.stats()["requests"] == 0
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("file", "job"),
    [
        ("orders_20261204.jsonl", "orders"),
        ("customers-2026-12-04.csv", "customers"),
        ("export_20261204T0200.csv", "export"),
        ("crm_export.2026-12-04.csv.gz", "crm_export"),
        ("exports/shop.csv.gz", "shop"),
        ("shop_2024.csv", "shop_2024"),  # a year alone is not a date
        ("20261204.csv", "20261204"),  # nothing but a date: kept
        ("20261204_orders.csv", "orders"),  # the date first
        ("2026-12-04-crm_export.csv", "crm_export"),
        ("20261204T0200 shop.csv", "shop"),
        ("2024_sales.csv", "2024_sales"),  # a year alone is not a date
    ],
)
def test_the_job_is_named_after_the_file_without_its_date(file: str, job: str) -> None:
    assert job_name(file) == job
    assert default_out(file) == Path(f"{job}.yaml")


def test_a_file_of_only_nested_fields_is_refused_with_what_they_hold(tmp_path: Path) -> None:
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text('{"a": [1], "b": {"c": 1}}\n{"a": [2], "b": {"c": 2}}\n', encoding="utf-8")
    proc = dmimport("init", jsonl, "--kind", "user", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"error: {jsonl}: every field of the sampled objects is nested, not a flat value "
        "(a (list of numbers), b (object)); dmimport sends flat values: flatten the export\n"
    )
    parquet = tmp_path / "n.parquet"
    pq.write_table(pa.table({"items": [[{"a": 1}]], "b": [{"c": 1}]}), parquet)
    with pytest.raises(LoadError) as info:
        propose(parquet, "user")
    assert str(info.value) == (
        f"{parquet}: every column is nested, not a flat value (items (list of objects), "
        "b (object)); dmimport sends flat values: flatten the export"
    )
    assert not list(tmp_path.glob("*.yaml"))


def test_a_date_column_with_an_impossible_date_stays_a_date_column(tmp_path: Path) -> None:
    # A CRM's birthdays: 1990/3/5 and 1977-12-09 mixed, one 2024-02-30. As text they would
    # reach the platform as written; as datetime the bad row is rejected, saying why.
    data = tmp_path / "c.csv"
    days = [f"19{60 + i}/{i % 12 + 1}/{i % 28 + 1}" for i in range(6)] + ["1977-12-09"]
    rows = [["手机号", "生日"]] + [[f"1380013800{i}", d] for i, d in enumerate(days)]
    rows.append(["13800138099", "2024-02-30"])
    with open(data, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    text, cfg = proposed(data, "user")
    assert cfg.columns["birthday"].type == "datetime"
    assert comment_above(text, "birthday") == (
        "生日: 7/8 sample values are datetimes in formats dmimport recognises; 1 would be "
        "rejected as no such date, e.g. '2024-02-30'"
    )
    summary = validate(cfg, [data], report_dir=tmp_path / "r")
    assert (summary.counts["valid"], summary.counts["rejected"]) == (7, 1)
    assert [r["reason"] for r in summary.top_reasons] == [
        "column 生日 (property birthday): '…' is no such date (February 2024 has 29 days)"
    ]
