"""The mapper: local checks in the server's order, conversions, and byte-exact items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importer.protocol
from importer.config import Config
from importer.errcodes import ErrCode
from importer.job import parse_job
from importer.map import Mapped, Mapper
from importer.protocol import (
    DATETIME_FORMAT,
    DEFAULT_PROFILE,
    SIGNED_PROFILE,
    encode_body,
    is_datetime,
)

Rows = dict[str, list[Any]]


def config(columns: dict[str, Any], kind: str = "user", **job: Any) -> Config:
    job.setdefault("primary_keys", ["phone", "email"] if kind != "event" else ["phone"])
    if kind == "event" and "event_name_from" not in job:
        job.setdefault("event_name", "order_detail")
    return parse_job({"job": {"kind": kind, **job}, "columns": columns})


def table(rows: Rows) -> pa.Table:
    return pa.table({k: pa.array(v, pa.string()) for k, v in rows.items()})


def run(cfg: Config, rows: Rows, **kwargs: Any) -> Mapped:
    t = table(rows)
    return Mapper(cfg).map_table(t, np.arange(2, t.num_rows + 2, dtype=np.int64), **kwargs)


def props(mapped: Mapped, i: int = 0) -> dict[str, Any]:
    assert mapped.items is not None
    item = mapped.items[i]
    assert item is not None, mapped.reason[i]
    return json.loads(item)


def verdicts(mapped: Mapped) -> list[tuple[int, str | None]]:
    return [(int(c), r) for c, r in zip(mapped.errcode, mapped.reason, strict=True)]


USERS = config(
    {
        "phone": {"from": "手机号", "transform": ["strip", "digits"]},
        "email": {"from": "邮箱", "transform": ["strip", "lower"]},
        "username": "姓名",
        "age": {"from": "年龄", "type": "integer"},
    }
)


def users(*rows: tuple[str | None, ...]) -> Rows:
    cols = ["手机号", "邮箱", "姓名", "年龄"]
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


# -- local checks, one errcode each --------------------------------------------------------------


def test_valid_row() -> None:
    m = run(USERS, users((" 138-0013-8000 ", "A@B.cn", "张三", "80")))
    assert m.ok.tolist() == [True]
    assert props(m) == {"phone": "13800138000", "email": "a@b.cn", "username": "张三", "age": 80}
    assert m.identity == ["phone=13800138000;email=a@b.cn"]
    assert list(m.keys) == [("phone:13800138000", "email:a@b.cn")]
    assert m.column == [None] and m.reason == [None]
    assert m.lines.tolist() == [2]
    assert m.properties_hash is not None and len(m.properties_hash[0] or "") == 16


def test_properties_empty_10004() -> None:
    m = run(USERS, users(("", None, "", "  ")))
    assert verdicts(m) == [
        (ErrCode.PROPERTIES_EMPTY, "Properties are empty: every mapped column is empty")
    ]
    assert m.column == [None]
    assert m.items is not None and m.items[0] is None
    assert m.properties_hash is not None and m.properties_hash[0] is None


def test_no_primary_key_20001() -> None:
    m = run(USERS, users(("", "", "张三", "")))
    assert verdicts(m) == [
        (ErrCode.PRIMARY_KEY_MISSING, "no primary-key property has a value (phone, email)")
    ]
    assert m.identity == [""] and list(m.keys) == [()]


def test_all_empty_primary_keys_are_omitted_so_20001() -> None:
    # strip+digits turn "  -  " into "": omitted, exactly as the server would see the body
    m = run(USERS, users(("  -  ", "   ", "张三", "")))
    assert int(m.errcode[0]) == ErrCode.PRIMARY_KEY_MISSING


def test_blank_primary_keys_20002() -> None:
    cfg = config({"phone": "手机号", "email": "邮箱", "username": "姓名"})
    m = run(cfg, {"手机号": ["   "], "邮箱": ["\u3000"], "姓名": ["张三"]})
    assert verdicts(m) == [
        (ErrCode.PRIMARY_KEY_EMPTY, "primary-key values are all blank (phone, email)")
    ]
    assert m.identity == ["phone=   ;email=\u3000"]
    assert list(m.keys) == [()]


def test_one_usable_primary_key_is_enough() -> None:
    cfg = config({"phone": "手机号", "email": "邮箱"})
    m = run(cfg, {"手机号": ["  "], "邮箱": ["a@b.cn"]})
    assert m.ok.tolist() == [True]
    assert props(m) == {"phone": "  ", "email": "a@b.cn"}  # sent as in the file
    assert list(m.keys) == [("email:a@b.cn",)]


def test_wrong_type_20003_names_column_and_property() -> None:
    m = run(USERS, users(("13800138000", "", "", "12a")))
    assert verdicts(m) == [
        (ErrCode.DATA_CHECK_FAILED, "column 年龄 (property age): '12a' is not an integer")
    ]
    assert m.column == ["年龄"]


def test_every_failing_property_is_named_in_config_order() -> None:
    cfg = config(
        {
            "phone": "P",
            "email": "E",
            "b": {"from": "B", "type": "boolean"},
            "n": {"from": "N", "type": "number"},
        }
    )
    m = run(cfg, {"P": ["1"], "E": [""], "B": ["maybe"], "N": ["x"]})
    assert verdicts(m) == [
        (
            ErrCode.DATA_CHECK_FAILED,
            "column B (property b): 'maybe' "
            + "is not a boolean (true/false, 1/0, yes/no, y/n, 是/否); "
            + "column N (property n): 'x' is not a number",
        )
    ]
    assert m.column == ["B;N"]


def test_check_order_primary_key_before_type() -> None:
    m = run(USERS, users(("", "", "", "12a")))
    assert int(m.errcode[0]) == ErrCode.PRIMARY_KEY_MISSING


def test_too_long_20003() -> None:
    cfg = config({"phone": "P", "email": "E", "note": "N"}, max_value_length=5)
    m = run(cfg, {"P": ["1", "1"], "E": ["", ""], "N": ["一二三四五", "一二三四五六"]})
    assert verdicts(m) == [
        (0, None),
        (
            ErrCode.DATA_CHECK_FAILED,
            "column N (property note): value is 6 characters, longer than max_value_length 5",
        ),
    ]


def test_pattern_20003() -> None:
    cfg = config({"phone": {"from": "P", "pattern": r"1\d{10}"}, "email": "E"})
    m = run(cfg, {"P": ["13800138000", "1380013800", "x13800138000"], "E": ["", "", ""]})
    assert m.errcode.tolist() == [0, ErrCode.DATA_CHECK_FAILED, ErrCode.DATA_CHECK_FAILED]
    assert (
        m.reason[1] == r"column P (property phone): '1380013800' does not match pattern '1\d{10}'"
    )


def test_required_20003() -> None:
    cfg = config({"phone": "P", "email": "E", "name": {"from": "姓名", "required": True}})
    m = run(cfg, {"P": ["1"], "E": [""], "姓名": [""]})
    assert verdicts(m) == [
        (ErrCode.DATA_CHECK_FAILED, "required column 姓名 (property name) is empty")
    ]
    assert m.column == ["姓名"]


def test_type_failure_comes_before_data_checks() -> None:
    cfg = config(
        {
            "phone": "P",
            "email": "E",
            "name": {"from": "N", "required": True},
            "n": {"from": "I", "type": "integer"},
        }
    )
    m = run(cfg, {"P": ["1"], "E": [""], "N": [""], "I": ["x"]})
    # both are named, in config order; the errcode is the type check's (see test_values.py)
    assert verdicts(m) == [
        (
            ErrCode.DATA_CHECK_FAILED,
            "required column N (property name) is empty; "
            "column I (property n): 'x' is not an integer",
        )
    ]
    assert m.column == ["N;I"]


def test_wrong_type_is_the_profiles_errcode() -> None:
    """import-api (the default) answers a wrong property value type with 20003; signed with
    10002: the local check gives the same errcode as the platform would."""
    assert DEFAULT_PROFILE.wrong_type == ErrCode.DATA_CHECK_FAILED
    signed = USERS.model_copy(
        update={"target": USERS.target.model_copy(update={"protocol": "signed"})}
    )
    assert signed.profile() == SIGNED_PROFILE
    rows = users(("13800138000", "", "", "12a"))
    reason = "column 年龄 (property age): '12a' is not an integer"
    assert verdicts(run(signed, rows)) == [(ErrCode.INVALID_TYPE, reason)]
    assert verdicts(run(USERS, rows)) == [(ErrCode.DATA_CHECK_FAILED, reason)]
    ok = run(signed, users(("138", "", "", "")))
    assert Mapper(signed).body(ok, 0) == b'{"properties":{"phone":"138"}}'
    assert Mapper(USERS).body(ok, 0) == b'{"type":"user","properties":{"phone":"138"}}'


# -- events --------------------------------------------------------------------------------------

EVENTS = config(
    {
        "phone": "手机号",
        "orderId": "订单号",
        "amount": {"from": "金额", "type": "number"},
        "event_id": "订单号",
        "create_time": {"from": "下单时间", "timezone": "Asia/Shanghai"},
    },
    kind="event",
)


def events(*rows: tuple[str | None, ...]) -> Rows:
    cols = ["手机号", "订单号", "金额", "下单时间"]
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


def test_event_body_and_identity() -> None:
    m = run(EVENTS, events(("13800138000", "20180808080800001", "998", "2018-08-08 08:08:08")))
    assert m.items is not None
    body = m.items[0]
    expected = {
        "phone": "13800138000",
        "orderId": "20180808080800001",
        "amount": 998,
        "event_id": "20180808080800001",
        "create_time": "2018-08-08 08:08:08",
    }
    assert body == encode_body(expected)
    assert m.identity == ["phone=13800138000;event_id=20180808080800001"]
    assert m.event_names is None and m.events is None
    mapper = Mapper(EVENTS)
    assert mapper.event == b'"order_detail"'
    assert mapper.body(m, 0) == DEFAULT_PROFILE.record_body("event", expected, "order_detail")
    assert mapper.body(m, 0) == (
        b'{"type":"event","event":"order_detail","properties":' + encode_body(expected) + b"}"
    )


@pytest.mark.parametrize(
    ("row", "code", "reason"),
    [
        (
            ("1", "", "1", "2018-08-08 08:08:08"),
            20001,
            "event_id is missing (column 订单号 (property event_id) is empty)",
        ),
        (("1", "  ", "1", "2018-08-08 08:08:08"), 20002, "event_id is blank"),
        (
            ("1", "E1", "1", ""),
            20003,
            "create_time is missing (column 下单时间 (property create_time) is empty)",
        ),
        (
            ("1", "E1", "1", "2018-02-30 08:08:08"),
            20003,
            "column 下单时间 (property create_time): '2018-02-30 08:08:08' is no such date"
            " (February 2018 has 28 days)",
        ),
        (
            ("1", "E1", "x", "bad"),
            20003,
            "column 金额 (property amount): 'x' is not a number; column 下单时间 (property"
            " create_time): 'bad' is not a datetime (e.g. 2024-01-31 08:00:00)",
        ),
        (
            ("", "E1", "1", "2018-08-08 08:08:08"),
            20001,
            "no primary-key property has a value (phone)",
        ),
    ],
    ids=[
        "event_id-missing",
        "event_id-blank",
        "create_time-missing",
        "create_time-bad",
        "type-and-time",
        "pk",
    ],
)
def test_event_checks(row: tuple[str, ...], code: int, reason: str) -> None:
    m = run(EVENTS, events(row))
    assert verdicts(m) == [(code, reason)]


def test_event_name_from_column() -> None:
    cfg = config(
        {"phone": "P", "event_id": "ID", "create_time": "T"}, kind="event", event_name_from="事件"
    )
    rows = {
        "P": ["1", "1", "1"],
        "ID": ["a", "b", "c"],
        "T": ["2024-01-01 00:00:00"] * 3,
        "事件": [' pay "now" ', "", "   "],
    }
    m = run(cfg, rows)
    assert m.errcode.tolist() == [0, ErrCode.DATA_CHECK_FAILED, ErrCode.DATA_CHECK_FAILED]
    assert m.reason[1] == "event name column 事件 is empty"
    assert m.column[1] == "事件"
    assert m.event_names == ['pay "now"', None, None]
    assert m.items is not None
    expected = {"phone": "1", "event_id": "a", "create_time": "2024-01-01 00:00:00"}
    assert m.items[0] == encode_body(expected)
    assert m.events is not None and list(m.events) == [b'"pay \\"now\\""', None, None]
    assert Mapper(cfg).event is None
    assert Mapper(cfg).body(m, 0) == DEFAULT_PROFILE.record_body("event", expected, 'pay "now"')


def test_event_name_too_long() -> None:
    cfg = config(
        {"phone": "P", "event_id": "ID", "create_time": "T"},
        kind="event",
        event_name_from="E",
        max_value_length=3,
    )
    m = run(cfg, {"P": ["1"], "ID": ["a"], "T": ["2024-01-01 00:00:00"], "E": ["abcd"]})
    assert verdicts(m) == [
        (ErrCode.DATA_CHECK_FAILED, "event name is longer than max_value_length 3")
    ]


# -- values ----------------------------------------------------------------------------------------


def test_strings_kept_exactly_leading_zeros_and_long_ids() -> None:
    cfg = config({"phone": "P", "email": "E", "id": "ID", "zip": "Z"})
    m = run(cfg, {"P": ["00138"], "E": [""], "ID": ["20180808080800001"], "Z": ["007"]})
    assert props(m) == {"phone": "00138", "id": "20180808080800001", "zip": "007"}


def test_empty_cells_are_omitted_never_empty_or_nan() -> None:
    cfg = config(
        {
            "phone": "P",
            "email": "E",
            "n": {"from": "N", "type": "number"},
            "i": {"from": "I", "type": "integer"},
            "b": {"from": "B", "type": "boolean"},
            "t": {"from": "T", "type": "datetime"},
        }
    )
    m = run(
        cfg,
        {
            "P": ["1", "1"],
            "E": ["", None],
            "N": ["", None],
            "I": [" ", None],
            "B": ["", None],
            "T": ["", None],
        },
    )
    assert m.items is not None
    for body in m.items:
        assert body == b'{"phone":"1"}'
        assert b"NaN" not in (body or b"") and b'""' not in (body or b"")


def test_defaults_fill_empty_cells() -> None:
    cfg = config(
        {
            "phone": "P",
            "email": "E",
            "level": {"from": "L", "type": "integer", "default": 0},
            "city": {"from": "C", "default": "未知"},
            "source": {"value": "crm"},
        }
    )
    m = run(cfg, {"P": ["1", "1"], "E": ["", ""], "L": ["", "3"], "C": [None, "上海"]})
    assert props(m, 0) == {"phone": "1", "level": 0, "city": "未知", "source": "crm"}
    assert props(m, 1) == {"phone": "1", "level": 3, "city": "上海", "source": "crm"}


@pytest.mark.parametrize(
    ("steps", "cell", "sent"),
    [
        (["strip"], "  a b  ", "a b"),
        (["lower"], "ÄB@X.CN", "äb@x.cn"),
        (["upper"], "abc", "ABC"),
        (["digits"], "+86 138-0013-8000", "+8613800138000"),
        (["digits"], "(0755) 1234", "07551234"),
        (["strip", "digits"], " +  ", None),  # nothing left: omitted
        (["collapse_spaces"], "  a \t\n b  ", "a b"),
        (["nfkc"], "１３８ＡＢ", "138AB"),
    ],
    ids=["strip", "lower", "upper", "digits-plus", "digits", "digits-empty", "collapse", "nfkc"],
)
def test_transforms(steps: list[str], cell: str, sent: str | None) -> None:
    cfg = config({"phone": "P", "email": "E", "x": {"from": "X", "transform": steps}})
    m = run(cfg, {"P": ["1"], "E": [""], "X": [cell]})
    assert props(m).get("x") == sent


@pytest.mark.parametrize(
    ("cell", "sent"),
    [
        ("12", 12),
        ("+12", 12),
        ("-0012", -12),
        ("12.0", 12),
        (" 7 ", 7),
        ("9223372036854775807", 9223372036854775807),
        ("000000000000000000000000012", 12),
        ("1e3", None),
        ("+-1", None),  # one sign only (the range has its own reason: test_values_edges.py)
        ("-", None),
    ],
)
def test_integers(cell: str, sent: int | None) -> None:
    cfg = config({"phone": "P", "email": "E", "n": {"from": "N", "type": "integer"}})
    m = run(cfg, {"P": ["1"], "E": [""], "N": [cell]})
    if sent is None:
        assert verdicts(m) == [
            (ErrCode.DATA_CHECK_FAILED, f"column N (property n): {cell!r} is not an integer")
        ]
    else:
        assert props(m)["n"] == sent and type(props(m)["n"]) is int


@pytest.mark.parametrize(
    ("cell", "text"),
    [
        ("998", "998"),
        ("0.5", "0.5"),
        ("-12.50", "-12.5"),
        (".5", "0.5"),
        ("+1.25", "1.25"),
        ("-0", "0"),
        ("1e-7", "1e-07"),
        ("1e20", "1e+20"),
        ("0.1", "0.1"),
        ("12345678901234567", "1.2345678901234568e+16"),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("1,00,000", None),  # 1,000 says how to read it: test_values.py
        ("1/2", None),
    ],
)
def test_numbers(cell: str, text: str | None) -> None:
    cfg = config({"phone": "P", "email": "E", "n": {"from": "N", "type": "number"}})
    m = run(cfg, {"P": ["1"], "E": [""], "N": [cell]})
    if text is None:
        assert verdicts(m) == [
            (ErrCode.DATA_CHECK_FAILED, f"column N (property n): '{cell}' is not a number")
        ]
    else:
        assert m.items is not None
        assert m.items[0] == b'{"phone":"1","n":' + text.encode() + b"}"


def test_booleans() -> None:
    cfg = config({"phone": "P", "email": "E", "b": {"from": "B", "type": "boolean"}})
    cells = ["true", "FALSE", "Yes", "n", "1", "0", " y ", "是", "否", "ok"]
    m = run(cfg, {"P": ["1"] * 10, "E": [""] * 10, "B": cells})
    expected = [True, False, True, False, True, False, True, True, False]
    assert [props(m, i)["b"] for i in range(9)] == expected
    assert int(m.errcode[9]) == ErrCode.DATA_CHECK_FAILED


@pytest.mark.parametrize(
    ("spec", "cell", "sent"),
    [
        ({}, "2024-01-05 08:00:00", "2024-01-05 08:00:00"),
        ({}, "2024-01-05T08:00:00", "2024-01-05 08:00:00"),
        ({}, "2024-01-05T08:00:00.999", "2024-01-05 08:00:00"),  # fractions are dropped
        ({}, "2024/01/05 08:00:00", "2024-01-05 08:00:00"),
        ({}, "2024/1/5 8:00", "2024-01-05 08:00:00"),
        ({}, "2024-01-05", "2024-01-05 00:00:00"),
        ({}, "1700000000", "2023-11-14 22:13:20"),  # epoch: UTC without a timezone
        ({}, "1700000000999", "2023-11-14 22:13:20"),
        ({}, "2024-01-05T08:00:00+08:00", "2024-01-05 08:00:00"),  # no timezone: as written
        ({"timezone": "Asia/Shanghai"}, "2024-01-05 08:00:00", "2024-01-05 08:00:00"),
        ({"timezone": "Asia/Shanghai"}, "2024-01-05T08:00:00Z", "2024-01-05 16:00:00"),
        ({"timezone": "Asia/Shanghai"}, "2024-01-05T08:00:00-05:00", "2024-01-05 21:00:00"),
        ({"timezone": "Asia/Shanghai"}, "2024-01-05T08:00:00+0530", "2024-01-05 10:30:00"),
        ({"timezone": "Asia/Shanghai"}, "1700000000", "2023-11-15 06:13:20"),
        ({"timezone": "America/New_York"}, "2024-07-01T12:00:00Z", "2024-07-01 08:00:00"),
        ({"format": "%Y/%m/%d %H:%M"}, "2024/01/05 08:00", "2024-01-05 08:00:00"),
        ({"format": "%Y/%m/%d %H:%M"}, "2024/1/5 8:00", "2024-01-05 08:00:00"),
        ({"format": "%d.%m.%Y %H:%M:%S.%f"}, "05.01.2024 08:00:00.5", "2024-01-05 08:00:00"),
        (
            {"format": "%Y-%m-%dT%H:%M:%S%z", "timezone": "Asia/Shanghai"},
            "2024-01-05T08:00:00+0000",
            "2024-01-05 16:00:00",
        ),
    ],
)
def test_datetimes(spec: dict[str, str], cell: str, sent: str) -> None:
    cfg = config({"phone": "P", "email": "E", "t": {"from": "T", "type": "datetime", **spec}})
    m = run(cfg, {"P": ["1"], "E": [""], "T": [cell]})
    assert props(m)["t"] == sent


@pytest.mark.parametrize(
    ("spec", "cell"),
    [
        ({}, "2024-01-05T08:00:00+8"),  # hour 25: "no such time" (test_values_edges.py)
        ({}, "2024-01-05T08:00:00+99:00"),
        ({}, "170000000"),
        ({}, "yesterday"),
        ({"format": "%Y/%m/%d %H:%M"}, "2024-01-05 08:00"),
    ],
)
def test_bad_datetimes(spec: dict[str, str], cell: str) -> None:
    cfg = config({"phone": "P", "email": "E", "t": {"from": "T", "type": "datetime", **spec}})
    m = run(cfg, {"P": ["1"], "E": [""], "T": [cell]})
    assert int(m.errcode[0]) == ErrCode.DATA_CHECK_FAILED
    assert m.reason[0] is not None and m.reason[0].startswith(
        f"column T (property t): '{cell}' is not a datetime"
    )


def test_datetime_fast_and_general_paths_agree() -> None:
    cfg = config({"phone": "P", "email": "E", "t": {"from": "T", "type": "datetime"}})
    cells = ["2024-01-05 08:00:00", "2024-02-29 23:59:59", "2023-02-29 00:00:00", ""]
    fast = run(cfg, {"P": ["1"] * 4, "E": [""] * 4, "T": cells})
    general = run(cfg, {"P": ["1"] * 5, "E": [""] * 5, "T": [*cells, "2024-01-05"]})
    assert verdicts(fast) == verdicts(general)[:4]
    assert list(fast.items or []) == list(general.items or [])[:4]


def test_every_sent_datetime_is_the_wire_format() -> None:
    """What the mapper sends for a datetime is what the platform (protocol.is_datetime, the
    sandbox's rule) takes, whichever path converted it."""
    cfg = config({"phone": "P", "email": "E", "t": {"from": "T", "type": "datetime"}})
    cells = ["2024-01-05 08:00:00", "2024/1/5 8:00", "1700000000", "2024-01-05T08:00:00Z"]
    m = run(cfg, {"P": ["1"] * 4, "E": [""] * 4, "T": cells})
    assert all(is_datetime(props(m, i)["t"]) for i in range(4))


def test_the_wire_datetime_format_is_written_once() -> None:
    """The map stage and the sandbox take the wire datetime format from importer.protocol."""
    root = Path(importer.protocol.__file__).parent
    for folder in ("map", "sandbox"):
        for path in sorted((root / folder).rglob("*.py")):
            assert DATETIME_FORMAT not in path.read_text(encoding="utf-8"), path


# -- bodies --------------------------------------------------------------------------------------

TRICKY = [
    "张三",
    'say "hi"',
    "back\\slash",
    "tab\tnew\nline\rcr",
    "bell\x07nul\x00esc\x1b\x1f",
    "\b\f",
    "emoji 🎉👍🏽",
    "del\x7f and \u2028 separator",
    "</script>",
    "'single'",
    "\\u0041 not an escape",
]


def test_body_bytes_identical_to_protocol() -> None:
    cfg = config({"phone": "P", "email": "E", "s": "S", "t": "T2"})
    rows = {"P": ["1"] * len(TRICKY), "E": [""] * len(TRICKY), "S": TRICKY, "T2": TRICKY[::-1]}
    m = run(cfg, rows)
    assert m.items is not None
    for i, body in enumerate(m.items):
        expected = {"phone": "1", "s": TRICKY[i], "t": TRICKY[::-1][i]}
        assert body == encode_body(expected)


def test_body_property_order_follows_config() -> None:
    cfg = config({"z": "Z", "phone": "P", "email": "E", "a": "A"})
    m = run(cfg, {"Z": ["z"], "P": ["1"], "E": ["e"], "A": ["a"]})
    assert m.items is not None
    assert m.items[0] == b'{"z":"z","phone":"1","email":"e","a":"a"}'


def test_rows_with_nothing_in_the_middle_stay_aligned() -> None:
    # pyarrow drops all-null rows from a "skip" join; the mapper must not lose alignment
    m = run(
        USERS,
        users(("1", "", "", ""), ("", "", "", ""), ("3", "", "", ""), (None, None, None, None)),
    )
    assert m.errcode.tolist() == [0, ErrCode.PROPERTIES_EMPTY, 0, ErrCode.PROPERTIES_EMPTY]
    assert m.items is not None
    assert list(m.items) == [
        b'{"phone":"1"}',
        None,
        b'{"phone":"3"}',
        None,
    ]
    assert m.identity == ["phone=1", "", "phone=3", ""]


def test_constant_with_empty_rows_stays_aligned() -> None:
    cfg = config({"source": {"value": "crm"}, "phone": "P", "email": "E"})
    m = run(cfg, {"P": ["1", None, "3"], "E": ["", None, ""]})
    assert m.errcode.tolist() == [0, ErrCode.PRIMARY_KEY_MISSING, 0]
    assert list(m.items or []) == [
        b'{"source":"crm","phone":"1"}',
        None,
        b'{"source":"crm","phone":"3"}',
    ]


def test_body_list_reads_like_a_list() -> None:
    m = run(USERS, users(("1", "", "", ""), ("", "", "", ""), ("3", "", "", "")))
    bodies = m.items
    assert bodies is not None
    assert len(bodies) == 3
    assert bodies[-1] == bodies[2] == b'{"phone":"3"}'
    assert bodies[0:2] == [b'{"phone":"1"}', None]
    assert bodies == [b'{"phone":"1"}', None, b'{"phone":"3"}']
    with pytest.raises(IndexError):
        bodies[3]
    hashes = m.properties_hash
    assert hashes is not None
    assert hashes[1] is None and hashes[0] != hashes[2]
    assert list(hashes) == [hashes[0], None, hashes[2]]


def test_hash_is_stable_across_batches() -> None:
    first = run(USERS, users(("1", "a@b.cn", "x", "3")))
    second = run(USERS, users(("9", "", "", ""), ("1", "a@b.cn", "x", "3")))
    assert first.properties_hash is not None and second.properties_hash is not None
    assert first.properties_hash[0] == second.properties_hash[1]


def test_without_bodies() -> None:
    m = run(USERS, users(("1", "", "", "x")), build_bodies=False)
    assert m.items is None and m.properties_hash is None
    assert int(m.errcode[0]) == ErrCode.DATA_CHECK_FAILED


# -- shapes of input -----------------------------------------------------------------------------


def test_map_takes_a_batch() -> None:
    @dataclass
    class FakeBatch:
        table: pa.Table
        lines: np.ndarray

    batch = FakeBatch(table(users(("1", "", "", ""))), np.array([7], dtype=np.int64))
    m = Mapper(USERS).map(batch)
    assert m.lines.tolist() == [7] and m.ok.tolist() == [True]


def test_empty_table() -> None:
    m = Mapper(USERS).map_table(pa.table({}), np.zeros(0, dtype=np.int64))
    assert m.n == 0 and m.errcode.tolist() == [] and m.identity == [] and list(m.keys) == []
    assert m.items is not None and list(m.items) == []


def test_missing_column_reads_as_empty() -> None:
    m = run(USERS, {"手机号": ["1"]})
    assert props(m) == {"phone": "1"}


def test_chunked_and_sliced_columns() -> None:
    rows = users(("1", "a@b.cn", "x", "3"), ("2", "", "", ""), ("3", "", "y", "5"))
    whole = table(rows)
    chunked = pa.concat_tables([whole.slice(0, 1), whole.slice(1, 2)])
    m1 = Mapper(USERS).map_table(whole, np.arange(3))
    m2 = Mapper(USERS).map_table(chunked, np.arange(3))
    m3 = Mapper(USERS).map_table(whole.slice(1, 2), np.arange(2))
    assert list(m1.items or []) == list(m2.items or [])
    assert list(m3.items or []) == list(m1.items or [])[1:]


def test_keys_are_built_on_demand_and_skip_blank_values() -> None:
    cfg = config({"phone": "P", "email": "E"})
    m = run(cfg, {"P": ["1", " ", None], "E": ["a", "b", None]})
    assert list(m.keys) == [("phone:1", "email:a"), ("email:b",), ()]


# -- properties ----------------------------------------------------------------------------------

ALL_TYPES = config(
    {
        "phone": {"from": "P", "transform": ["strip", "digits"]},
        "email": {"from": "E", "transform": ["strip", "lower"]},
        "name": "N",
        "age": {"from": "A", "type": "integer"},
        "amount": {"from": "M", "type": "number"},
        "vip": {"from": "V", "type": "boolean"},
        "at": {"from": "T", "type": "datetime", "timezone": "Asia/Shanghai"},
        "on": {"from": "D", "type": "datetime", "format": "%Y/%m/%d"},
        "code": {"from": "C", "pattern": "[A-Z]+", "required": True},
    },
    max_value_length=20,
)
BASE_ROWS: Rows = {
    "P": ["138", " +86 139 ", "", "137", "136"],
    "E": ["A@b.cn", "", "x@y.z", "", "q@q.q"],
    "N": ["张三", 'a"b\\c', "", "\n", "tab\t"],
    "A": ["1", "-2", "", "3.0", "4"],
    "M": ["0.5", "1e-9", "2", "", "-3.25"],
    "V": ["yes", "0", "", "TRUE", "n"],
    "T": ["2024-01-01 00:00:00", "2024-01-01T00:00:00Z", "", "1700000000", "2024/2/3 4:05"],
    "D": ["2024/01/02", "2024/1/2", "", "2024/12/31", "1999/01/01"],
    "C": ["AB", "CD", "EF", "GH", "IJ"],
}
COLUMNS = list(BASE_ROWS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    row=st.integers(min_value=0, max_value=4),
    column=st.sampled_from(COLUMNS),
    text=st.one_of(st.none(), st.text(max_size=30)),
)
def test_one_odd_cell_never_changes_other_rows(row: int, column: str, text: str | None) -> None:
    before = run(ALL_TYPES, BASE_ROWS)
    rows = {k: list(v) for k, v in BASE_ROWS.items()}
    rows[column][row] = text
    after = run(ALL_TYPES, rows)
    others = [i for i in range(5) if i != row]
    assert [verdicts(before)[i] for i in others] == [verdicts(after)[i] for i in others]
    assert before.items is not None and after.items is not None
    assert [before.items[i] for i in others] == [after.items[i] for i in others]
    assert [before.identity[i] for i in others] == [after.identity[i] for i in others]
    body = after.items[row]
    if body is not None:  # whatever the cell, an accepted body is valid, NaN-free JSON
        assert encode_body(json.loads(body)) == body


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1), st.text())
def test_any_text_is_escaped_exactly_like_json_dumps(name: str, value: str) -> None:
    cfg = config({"phone": "P", "email": "E", "v": "V"}, kind="user")
    m = run(cfg, {"P": [name], "E": [""], "V": [value]})
    assert m.items is not None
    expected = {"phone": name} | ({"v": value} if value else {})
    if int(m.errcode[0]) == 0:
        assert m.items[0] == encode_body(expected)
    else:  # only a whitespace-only phone can fail here
        assert not name.strip()


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_event_names_are_escaped_exactly(name: str) -> None:
    cfg = config(
        {"phone": "P", "event_id": "I", "create_time": "T"}, kind="event", event_name_from="N"
    )
    m = run(cfg, {"P": ["1"], "I": ["e"], "T": ["2024-01-01 00:00:00"], "N": [name]})
    if name.strip():
        assert m.items is not None
        expected = {"phone": "1", "event_id": "e", "create_time": "2024-01-01 00:00:00"}
        assert m.items[0] == encode_body(expected)
        assert m.events is not None and m.events[0] == encode_body(name.strip())
    else:
        assert int(m.errcode[0]) == ErrCode.DATA_CHECK_FAILED


# -- the properties hash the ledger compares -------------------------------------------------


def hashes(cfg: Config, rows: Rows) -> list[str | None]:
    m = run(cfg, rows)
    assert m.properties_hash is not None
    return list(m.properties_hash)


def test_same_body_same_hash_and_different_body_different_hash() -> None:
    rows = users(
        ("138", "a@b.cn", "张三", "30"),
        (" 138 ", "A@B.CN", "张三", "30.0"),  # transforms and types make the same body
        ("138", "a@b.cn", "张三", "31"),
        ("138", "a@b.cn", "张三", None),  # age absent
        ("138", "a@b.cn", "张三", ""),  # empty is absent too: the same body
        ("138", "a@b.cn", "", "30"),  # username absent
        ("138", "a@b.cn", '张"三', "30"),
        ("", "", "", "x"),  # rejected: no hash
    )
    m = run(USERS, rows)
    got = hashes(USERS, rows)
    assert m.items is not None
    for i in range(len(got)):
        for j in range(len(got)):
            same_body = m.items[i] == m.items[j]
            assert (got[i] == got[j]) == same_body, (i, j, m.items[i], m.items[j])
    assert got[7] is None and got[0] == got[1] and got[3] == got[4]


def test_the_config_layout_is_part_of_the_hash() -> None:
    row = users(("138", "a@b.cn", "张三", "30"))
    base = hashes(USERS, row)[0]
    columns: dict[str, Any] = {
        "phone": {"from": "手机号", "transform": ["strip", "digits"]},
        "email": {"from": "邮箱", "transform": ["strip", "lower"]},
        "username": "姓名",
        "age": {"from": "年龄", "type": "integer"},
    }
    assert hashes(config(columns), row)[0] == base
    as_string = config({**columns, "age": {"from": "年龄"}})
    with_constant = config({**columns, "source": {"value": "crm"}})
    other_constant = config({**columns, "source": {"value": "shop"}})
    found = {hashes(c, row)[0] for c in (as_string, with_constant, other_constant)}
    assert len(found | {base}) == 4  # "age":"30" is not "age":30, constants count


def test_event_name_from_a_column_is_part_of_the_hash() -> None:
    cfg = config(
        {"phone": "手机号", "event_id": "订单号", "create_time": "下单时间"},
        kind="event",
        event_name_from="事件",
    )
    rows = {
        "手机号": ["138", "138"],
        "订单号": ["E1", "E1"],
        "下单时间": ["2024-01-31 08:00:00"] * 2,
        "事件": ["order", "refund"],
    }
    got = hashes(cfg, rows)
    assert None not in got and got[0] != got[1]


def test_items_read_as_bytes_and_weigh_their_length() -> None:
    m = run(USERS, users(("138", "", "", "")))
    assert m.items is not None and m.properties_hash is not None
    assert m.properties_hash[0] is not None  # hashing needs no body
    assert m.items[0] == b'{"phone":"138"}'
    assert m.items.sizes().tolist() == [len(b'{"phone":"138"}')]
