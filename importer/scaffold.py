"""Propose a job config for a file (``dmimport init``): header and a sample in, commented YAML out.

The proposal is a starting point the user reads and edits, so every guess is written next to
the line it shaped, with the evidence (``# 手机号: 998/1000 sample values look like phone
numbers``). Guesses are deliberately conservative, because a wrong type costs more than a
missing one:

- a column becomes ``integer`` only when every non-empty sample value is a plain integer
  without a leading zero and shorter than 16 digits (ids with leading zeros and 17-digit order
  numbers stay text, as do 0/1-only columns, which may be flags or counts);
- phone numbers, e-mail addresses and anything named like an id stay text;
- a type is kept only when the mapper itself converts every sample value with it, so the
  proposal never rejects a sample row the file's own values did not already doom.

The result always passes ``parse_job``; ``propose`` checks that before returning.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from . import exitcodes
from . import load as loader
from .config import CREATE_TIME, EVENT_ID, EVENT_NAME_PLACEHOLDER, ColumnSpec
from .errors import DmImportError
from .job import parse_job
from .map import FALSE_WORDS, TRUE_WORDS, convert_values
from .protocol import DEFAULT_BASE_URL, KINDS

__all__ = [
    "EVENT_NAME_PLACEHOLDER",
    "ColumnGuess",
    "Proposal",
    "ScaffoldError",
    "default_out",
    "propose",
    "propose_config",
    "render_proposal",
    "write_config",
]


#: A share of sample values at least this large makes a column "look like" phones or e-mails,
#: and is worth a comment when a type almost fits.
_MOSTLY = 0.8


class ScaffoldError(DmImportError):
    """``dmimport init`` cannot do what was asked (existing output file, unknown kind)."""

    exit_code = exitcodes.USAGE


# --------------------------------------------------------------------------------------------
# Property names

#: Common headers of Chinese shop, CRM and membership exports -> property names.
KNOWN_HEADERS: dict[str, str] = {
    **dict.fromkeys(
        ["手机号", "手机", "手机号码", "电话", "联系电话", "电话号码", "联系方式", "移动电话"],
        "phone",
    ),
    **dict.fromkeys(
        ["邮箱", "电子邮箱", "邮箱地址", "电子邮件", "邮件", "email", "e-mail"], "email"
    ),
    **dict.fromkeys(["姓名", "名字", "客户名称", "客户姓名", "真实姓名"], "name"),
    "昵称": "nickname",
    "年龄": "age",
    "性别": "gender",
    **dict.fromkeys(["生日", "出生日期"], "birthday"),
    "国家": "country",
    **dict.fromkeys(["省份", "省"], "province"),
    **dict.fromkeys(["城市", "市"], "city"),
    **dict.fromkeys(["区县", "区"], "district"),
    **dict.fromkeys(["地址", "详细地址"], "address"),
    "收货地址": "shipping_address",
    **dict.fromkeys(["邮编", "邮政编码"], "zip_code"),
    **dict.fromkeys(["微信", "微信号"], "wechat"),
    "职业": "occupation",
    "公司": "company",
    "会员等级": "member_level",
    **dict.fromkeys(["会员号", "会员ID", "会员编号"], "member_id"),
    "会员卡号": "member_card_no",
    **dict.fromkeys(["会员", "是否会员"], "is_member"),
    **dict.fromkeys(["用户ID", "用户编号"], "user_id"),
    **dict.fromkeys(["客户ID", "客户编号", "客户编码"], "customer_id"),
    "积分": "points",
    "注册时间": "register_time",
    "注册日期": "register_date",
    **dict.fromkeys(["注册渠道", "渠道"], "channel"),
    "来源": "source",
    "最后登录时间": "last_login_time",
    **dict.fromkeys(["订单号", "订单编号", "订单ID"], "order_id"),
    **dict.fromkeys(["下单时间", "订单时间"], "order_time"),
    "创建时间": "create_time",
    **dict.fromkeys(["更新时间", "修改时间"], "update_time"),
    **dict.fromkeys(["支付时间", "付款时间"], "pay_time"),
    "支付方式": "pay_method",
    "订单状态": "order_status",
    "状态": "status",
    **dict.fromkeys(["金额", "订单金额"], "amount"),
    **dict.fromkeys(["实付金额", "支付金额", "实收金额"], "paid_amount"),
    "优惠金额": "discount_amount",
    "退款金额": "refund_amount",
    "运费": "shipping_fee",
    **dict.fromkeys(["数量", "购买数量"], "quantity"),
    "单价": "unit_price",
    "商品名称": "product_name",
    **dict.fromkeys(["商品ID", "商品编号", "商品编码"], "product_id"),
    **dict.fromkeys(["类目", "分类", "商品分类"], "category"),
    "品牌": "brand",
    **dict.fromkeys(["门店", "门店名称"], "store_name"),
    **dict.fromkeys(["店铺", "店铺名称"], "shop_name"),
    **dict.fromkeys(["交易号", "流水号", "交易流水号"], "transaction_id"),
    **dict.fromkeys(["事件ID", "事件编号"], "event_id"),
    **dict.fromkeys(["事件名称", "事件名", "事件"], "event_name"),
    "标签": "tags",
    **dict.fromkeys(["门店编号", "门店ID", "门店编码"], "store_id"),
    **dict.fromkeys(["身份证号", "身份证", "身份证号码"], "id_card_no"),
    "推荐人": "referrer",
    "备注": "remark",
}
_KNOWN_FOLDED = {k.casefold(): v for k, v in KNOWN_HEADERS.items()}
#: Prefixes that name whose value a header holds without changing what it is: 客户手机号 = 手机号.
_OWNER_PREFIXES = ("客户", "会员", "用户", "顾客", "买家")
_BRACKETED = re.compile(r"[(\[【<][^)\]】>]*[)\]】>]")
_ASCII_SYNONYMS = {
    **dict.fromkeys(["mobile", "mobile_phone", "cellphone", "tel", "telephone"], "phone"),
    **dict.fromkeys(["phone_number", "phone_no", "mobile_no"], "phone"),
    **dict.fromkeys(["e_mail", "mail", "email_address"], "email"),
}
_TIME_WORDS = ("时间", "日期", "生日", "time", "date", "_at")
_ID_WORDS = ("号", "编号", "编码", "id", "code", "no")


def _known_name(header: str) -> str | None:
    text = _BRACKETED.sub("", unicodedata.normalize("NFKC", header)).strip()
    text = re.sub(r"\s+", "", text).casefold()
    if text in _KNOWN_FOLDED:
        return _KNOWN_FOLDED[text]
    for prefix in _OWNER_PREFIXES:
        if text.startswith(prefix) and text[len(prefix) :] in _KNOWN_FOLDED:
            return _KNOWN_FOLDED[text[len(prefix) :]]
    return None


def _ascii_name(header: str) -> str:
    """ASCII-fold and snake_case: 'Order ID' -> 'order_id', 'createdAt' -> 'created_at'."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", header))
    text = text.encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not re.search(r"[a-z]", text):
        return ""  # nothing, or only digits: not a name
    text = _ASCII_SYNONYMS.get(text, text)
    return f"col_{text}" if text[0].isdigit() else text


def property_name(header: str, position: int) -> tuple[str, str]:
    """(snake_case property name, how it was found) for the header of column ``position``."""
    known = _known_name(header)
    if known:
        return known, "known header"
    folded = _ascii_name(header)
    if folded:
        return folded, "from the header"
    return f"col_{position}", "no English name known"


# --------------------------------------------------------------------------------------------
# Types

_PHONE_CHARS = re.compile(r"^\+?[\d\s\-().]+$", re.ASCII)
_PHONE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$|^0\d{9,11}$", re.ASCII)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", re.ASCII)
_INT = re.compile(r"^[+-]?\d+$", re.ASCII)
_LEADING_ZERO = re.compile(r"^[+-]?0\d", re.ASCII)
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+|\d+)$", re.ASCII)
_EXCEL_EXPONENT = re.compile(r"^[+-]?\d(?:\.\d+)?[eE]\+\d+$", re.ASCII)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$", re.ASCII)
_DATE_START = re.compile(r"^\d{1,4}[-/.年]\d{1,2}", re.ASCII)
_BOOL_WORDS = frozenset(TRUE_WORDS + FALSE_WORDS)

#: strptime formats tried, most specific first; the first one every sample value fits wins.
DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
)
#: Digit-only formats: tried only for columns whose header says they hold a time.
_DIGIT_FORMATS = ("%Y%m%d%H%M%S", "%Y%m%d")


@dataclass
class ColumnGuess:
    """What ``init`` concluded about one source column."""

    header: str
    position: int  # 1-based
    name: str  # property name
    type: str = "string"
    format: str | None = None
    transform: list[str] = field(default_factory=list)
    why: str = ""
    looks_like: str | None = None  # phone | email | None
    filled: int = 0  # non-empty sample values
    unique: bool = False  # the non-empty sample values are all different
    warning: str | None = None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.header}
        if self.type != "string":
            out["type"] = self.type
        if self.format:
            out["format"] = self.format
        if self.transform:
            out["transform"] = list(self.transform)
        return out


def _share(k: int, n: int) -> str:
    return f"all {n}" if k == n and n > 1 else f"{k}/{n}"


def _spec(type_: str, fmt: str | None = None) -> ColumnSpec:
    return ColumnSpec.model_validate({"from": "sample", "type": type_, "format": fmt})


def _fits(values: Sequence[str], spec: ColumnSpec) -> int:
    """How many values the mapper converts under ``spec``."""
    _, invalid = convert_values(spec, pa.array(list(values), pa.string()))
    return len(values) - int(invalid.sum())


def _datetime_format(values: Sequence[str], timeish: bool) -> tuple[str | None, int, str | None]:
    """(format every value fits, or None; most values one format fits; that format)."""
    formats = DATETIME_FORMATS + (_DIGIT_FORMATS if timeish else ())
    best, best_fmt = 0, None
    fitting: list[str] = []
    for fmt in formats:
        try:
            datetime.strptime(values[0], fmt)
        except ValueError:
            continue
        fit = _fits(values, _spec("datetime", fmt))
        if fit == len(values):
            fitting.append(fmt)
        elif fit > best:
            best, best_fmt = fit, fmt
    day_first = [f for f in fitting if f.startswith("%d/")]
    month_first = [f for f in fitting if f.startswith("%m/")]
    if day_first and month_first and len(fitting) == len(day_first) + len(month_first):
        return None, 0, "ambiguous"  # 03/04/2024: March or April? The user must say.
    if fitting:
        return fitting[0], len(values), None
    return None, best, best_fmt


def infer(header: str, name: str, values: Sequence[str | None], sampled: int) -> ColumnGuess:
    """Guess the type and transforms of one column from its sample ``values``."""
    guess = ColumnGuess(header, 0, name)
    present = [v.strip() for v in values if v is not None and v.strip()]
    n = guess.filled = len(present)
    guess.unique = n > 0 and len(set(present)) == n
    if n == 0:
        guess.transform = ["strip"]
        guess.why = f"empty in all {sampled} sample rows -> text"
        return guess
    lowered = name.casefold() + " " + header.casefold()
    timeish = any(w in lowered for w in _TIME_WORDS)
    idish = name.endswith("_id") or name == "id" or any(w in lowered for w in _ID_WORDS)
    empties = f" ({sampled - n} empty)" if sampled > n else ""

    folded = [unicodedata.normalize("NFKC", v) for v in present]
    phones = sum(1 for v in folded if _PHONE_CHARS.match(v) and _PHONE.match(_digits(v)))
    if phones >= _MOSTLY * n:
        guess.looks_like = "phone"
        guess.transform = ["strip", "digits"]
        guess.why = (
            f"{_share(phones, n)} sample values look like phone numbers{empties} -> kept as "
            "text, digits drops spaces and dashes"
        )
        if folded != present:  # full-width digits: digits alone would keep none of them
            guess.transform.insert(0, "nfkc")
            guess.why += ", nfkc makes full-width digits plain"
        return guess
    emails = sum(1 for v in present if _EMAIL.match(v))
    if emails >= _MOSTLY * n:
        guess.looks_like = "email"
        guess.transform = ["strip", "lower"]
        guess.why = f"{_share(emails, n)} sample values look like e-mail addresses{empties} -> text"
        return guess
    guess.transform = ["strip"]

    exponent = [v for v in present if _EXCEL_EXPONENT.match(v)]
    if exponent:
        guess.warning = (
            f"values like {exponent[0]!r} are long numbers a spreadsheet turned into scientific "
            "notation: their digits are lost; re-export the column as text (docs/faq.md)"
        )
        guess.why = "kept as text, see the WARNING"
        return guess

    ints = [v for v in present if _INT.match(v)]
    if len(ints) == n:
        lengths = {len(v.lstrip("+-")) for v in ints}
        if timeish and lengths <= {8, 10, 13, 14}:
            dated = _as_datetime(replace(guess), present, timeish, empties)
            if dated.type == "datetime":
                return dated
        zeros = [v for v in ints if _LEADING_ZERO.match(v)]
        if zeros:
            guess.why = f"leading zeros ({zeros[0]!r}) would be lost as a number -> text"
        elif max(lengths) >= 16:
            guess.why = f"{max(lengths)}-digit values are ids, not quantities -> text"
        elif idish:
            guess.why = "digits, but named like an id -> text"
        elif set(ints) <= {"0", "1"}:
            guess.why = (
                "only 0 and 1: a flag (type: boolean) or a count (type: integer)? -> text "
                "until you say"
            )
        else:
            guess.type = "integer"
            guess.transform = []
            guess.why = f"{_share(n, n)} sample values are plain integers{empties}"
        return guess

    def decimal(v: str) -> bool:
        return bool(_DECIMAL.match(v)) and not _LEADING_ZERO.match(v)

    decimals = [v for v in present if decimal(v)]
    if len(decimals) == n:
        guess.type = "number"
        guess.transform = []
        guess.why = f"{_share(n, n)} sample values are decimal numbers{empties}"
        return guess

    booleans = sum(1 for v in present if v.casefold() in _BOOL_WORDS)
    if booleans == n:
        guess.type = "boolean"
        guess.transform = []
        shown = "/".join(sorted({v.casefold() for v in present}))
        guess.why = f"{_share(n, n)} sample values are yes/no words ({shown}){empties}"
        return guess

    if _DATE_START.match(present[0]) or timeish:
        dated = _as_datetime(replace(guess), present, timeish, empties)
        if dated.type == "datetime" or dated.why:
            return dated

    # Nothing fits every value: say what almost did, so the user can decide.
    for label, type_, k, example_ok in (
        ("integers", "integer", len(ints), _INT.match),
        ("decimal numbers", "number", len(decimals), decimal),
        ("yes/no words", "boolean", booleans, lambda v: v.casefold() in _BOOL_WORDS),
    ):
        if k >= _MOSTLY * n:
            odd = next(v for v in present if not example_ok(v))
            guess.why = (
                f"{k}/{n} sample values are {label}, but not {odd!r} -> text "
                f"(type: {type_} would reject such rows with 10002)"
            )
            return guess
    thousands = sum(1 for v in present if _THOUSANDS.match(v))
    if thousands and thousands + len(decimals) == n:
        guess.why = "numbers with thousands separators (1,234.50) are not numbers to the platform"
        guess.why += " -> text"
        return guess
    guess.why = "text"
    if guess.unique and n > 1 and idish:
        guess.why = "text, unique in the sample"
    return guess


def _as_datetime(
    guess: ColumnGuess, present: list[str], timeish: bool, empties: str
) -> ColumnGuess:
    n = len(present)
    fmt, best, best_fmt = _datetime_format(present, timeish)
    if best_fmt == "ambiguous":
        guess.why = "dates like 03/04/2024 fit day/month and month/day order -> text; set format"
        return guess
    auto = _fits(present, _spec("datetime"))
    if fmt is not None and auto == n and not _vectorized(present, fmt):
        # The mapper parses a configured format in bulk only for zero-padded values
        # (2024/03/01 09:05); 2024/3/1 9:05 would take it to Python strptime, row by row,
        # several times slower. Its built-in recognition reads them in bulk, with the same result.
        guess.type, guess.transform = "datetime", []
        guess.why = (
            f"{_share(n, n)} sample values are datetimes like {present[0]!r}{empties}; "
            f"recognised without a format (format {fmt!r} would work too, but slower)"
        )
        return guess
    if fmt is not None:
        guess.type, guess.format, guess.transform = "datetime", fmt, []
        guess.why = f"{_share(n, n)} sample values are datetimes in this format{empties}"
        return guess
    if auto == n:
        guess.type, guess.transform = "datetime", []
        guess.why = (
            f"{_share(n, n)} sample values are datetimes, in mixed formats dmimport recognises"
            f"{empties}; offsets and epoch numbers: consider timezone: Asia/Shanghai"
        )
        return guess
    k = max(best, auto)
    if k >= _MOSTLY * n:
        shown = f" (format {best_fmt!r})" if best >= auto and best_fmt else ""
        odd = _first_unfit(present, best_fmt if best >= auto else None)
        guess.why = (
            f"{k}/{n} sample values are datetimes{shown}, but not {odd!r} -> text "
            "(type: datetime would reject such rows with 10002)"
        )
    return guess


def _vectorized(values: list[str], fmt: str) -> bool:
    """True when every value survives a bulk strptime/strftime round trip under ``fmt``."""
    if "%z" in fmt or "%Z" in fmt:
        return False
    arr = pa.array(values, pa.string())
    try:
        ts = pc.strptime(arr, format=fmt, unit="s", error_is_null=True)
        same = pc.equal(pc.strftime(ts, format=fmt), arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return bool(pc.all(pc.fill_null(same, False)).as_py())


def _first_unfit(values: list[str], fmt: str | None) -> str:
    spec = _spec("datetime", fmt)
    _, invalid = convert_values(spec, pa.array(values, pa.string()))
    return next(v for v, bad in zip(values, invalid.tolist(), strict=True) if bad)


def _digits(value: str) -> str:
    kept = re.sub(r"\D", "", value)
    return "+" + kept if value.startswith("+") else kept


# --------------------------------------------------------------------------------------------
# Reading the sample


@dataclass
class _Sample:
    source: loader.Source
    options: loader.InputOptions
    columns: list[str]
    values: dict[str, list[str | None]]
    rows: int
    malformed: int
    delimiter_guessed: bool
    #: Parquet binary columns that hold no text (a WKB geometry, say): not proposed
    not_text: list[str] = field(default_factory=list)


def _read_sample(path: Path, options: loader.InputOptions, rows: int) -> _Sample:
    options = options.replace(batch_rows=rows)
    source = loader.open_source(path, options)
    guessed = False
    if source.format == "csv" and options.delimiter is None and len(source.columns) == 1:
        # One column named 'a;b;c': a file with another delimiter than the default.
        counts = {d: source.columns[0].count(d) for d in ";|\t,"}
        best = max(counts, key=lambda d: counts[d])
        if counts[best]:
            options = options.replace(delimiter=best)
            source = loader.open_source(path, options)
            guessed = True
    columns = [c for c in source.columns if c not in source.unsupported]  # nested: left out
    batch = _first_batch(source, options, columns)
    if source.format == "jsonl" and batch is not None and batch.raw is not None:
        # JSON Lines objects may have keys the first one lacks: take them from the sample.
        more = _json_keys(batch.raw, columns)
        if more:
            columns += more
            batch = _first_batch(source, options, columns)
    not_text: list[str] = []
    if source.format == "parquet" and batch is not None and batch.bad:
        # A binary column of bytes that are not text makes most rows bad: proposed, it would
        # reject them, and they would be missing from the sample. Leave it out.
        sampled = batch.table.num_rows + len(batch.bad)
        bad = Counter(b.column for b in batch.bad if b.column is not None)
        schema = pq.read_schema(path)
        not_text = [
            c for c in columns
            if 2 * bad[c] > sampled and _is_binary(schema.field(c).type)
        ]  # fmt: skip
        if not_text:
            columns = [c for c in columns if c not in not_text]
            batch = _first_batch(source, options, columns)
    if batch is None:
        return _Sample(source, options, columns, {c: [] for c in columns}, 0, 0, guessed, not_text)
    table = batch.table
    values = {c: (table.column(c).to_pylist() if c in table.column_names else []) for c in columns}
    rows, malformed = table.num_rows, len(batch.bad)
    return _Sample(source, options, columns, values, rows, malformed, guessed, not_text)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _first_batch(
    source: loader.Source, options: loader.InputOptions, columns: list[str]
) -> loader.Batch | None:
    batches = loader.iter_batches(source, options, columns)
    try:
        return next(iter(batches), None)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _json_keys(lines: Sequence[str], known: list[str]) -> list[str]:
    seen = set(known)
    more: list[str] = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for key in obj:
                if key not in seen:
                    seen.add(key)
                    more.append(key)
    return more


# --------------------------------------------------------------------------------------------
# The proposal


@dataclass
class Proposal:
    """A proposed config: the YAML ``text`` and what the CLI should tell the user."""

    text: str
    kind: str
    source: loader.Source
    sample_rows: int
    columns: list[ColumnGuess]
    #: property names, in config order
    properties: list[str]
    primary_keys: list[str]
    #: things to check before the first run, one sentence each
    notes: list[str]


def propose_config(
    path: str | Path,
    kind: str,
    *,
    sample_rows: int = 1000,
    event_name: str | None = None,
    input_options: loader.InputOptions | None = None,
) -> str:
    """The YAML text (with comments) of a config that imports ``path`` as ``kind``."""
    return propose(
        path, kind, sample_rows=sample_rows, event_name=event_name, input_options=input_options
    ).text


def propose(
    path: str | Path,
    kind: str,
    *,
    sample_rows: int = 1000,
    event_name: str | None = None,
    input_options: loader.InputOptions | None = None,
) -> Proposal:
    """Read the header and the first ``sample_rows`` rows of ``path`` and propose a config.

    Raises ``ScaffoldError`` for an unknown kind or an event name given for another kind,
    ``LoadError`` for a file the loader cannot read.
    """
    if kind not in KINDS:
        raise ScaffoldError(f"unknown kind '{kind}': expected one of {', '.join(KINDS)}")
    if event_name is not None and kind != "event":
        raise ScaffoldError("an event name only applies to kind event")
    if event_name is not None and not event_name.strip():
        raise ScaffoldError("the event name must not be empty")
    if sample_rows < 1:
        raise ScaffoldError("sample_rows must be at least 1")
    path = Path(path)
    options = input_options or loader.InputOptions()
    sample = _read_sample(path, options, sample_rows)
    guesses = _guess_columns(sample)
    plan = _plan(kind, guesses, event_name)
    text = _render(path, kind, sample, plan)
    parse_job(yaml.safe_load(text), source=str(path))  # a proposal that fails is a bug
    return Proposal(
        text,
        kind,
        sample.source,
        sample.rows,
        guesses,
        [name for name, _, _ in plan.properties],
        plan.primary_keys,
        plan.notes,
    )


def _guess_columns(sample: _Sample) -> list[ColumnGuess]:
    guesses: list[ColumnGuess] = []
    for position, header in enumerate(sample.columns, 1):
        name, how = property_name(header, position)
        guess = infer(header, name, sample.values[header], sample.rows)
        guess.position = position
        if how == "no English name known":
            guess.why = f"no English name known -> {name}; {guess.why}"
        guesses.append(guess)
    return guesses


@dataclass
class _Plan:
    properties: list[tuple[str, ColumnGuess, str]]  # (property, column, comment)
    primary_keys: list[str]
    pk_comment: str
    event_name: str | None
    event_name_from: str | None
    event_comment: str
    skipped: list[str]
    notes: list[str]


def _plan(kind: str, guesses: list[ColumnGuess], event_name: str | None) -> _Plan:
    notes: list[str] = []
    usable = [g for g in guesses if g.header]
    skipped = [f"column {g.position} has no header" for g in guesses if not g.header]

    # Customer keys: the first phone-like, e-mail-like and member-id column, in that order.
    phone = _first(usable, lambda g: g.looks_like == "phone", prefer=lambda g: g.name == "phone")
    email = _first(usable, lambda g: g.looks_like == "email", prefer=lambda g: g.name == "email")
    member = _first(usable, lambda g: g.name == "member_id")
    keys = [g for g in (phone, email, member) if g is not None]
    # Platform key properties are usually called phone and email: a column chosen for its
    # values takes that name when no other column has it.
    for g, wanted in ((phone, "phone"), (email, "email")):
        if g is not None and g.name != wanted and all(o.name != wanted for o in usable):
            g.why += f"; named {wanted} as a primary key"
            g.name = wanted
    if keys:
        shown = ", ".join(f"{g.name} ({g.header})" for g in keys)
        pk_comment = (
            f"guessed from the values: {shown}. They must be the account's primary keys "
            "(data center -> meta data -> customer properties)"
        )
    else:
        fallback = _first(usable, lambda g: g.unique and g.filled > 0) or usable[0]
        keys = [fallback]
        pk_comment = (
            f"CHANGE ME: no phone, e-mail or member id column found; {fallback.name} "
            f"({fallback.header}) is only a placeholder. Use the account's primary keys "
            "(data center -> meta data -> customer properties)"
        )
        notes.append(
            f"no phone, e-mail or member id column found: job.primary_keys is a placeholder "
            f"({fallback.name}); set the account's primary keys"
        )

    event_from: ColumnGuess | None = None
    event_id: ColumnGuess | None = None
    create_time: ColumnGuess | None = None
    event_comment = ""
    if kind == "event":
        if event_name is None:
            event_from = _first(usable, lambda g: g.name == "event_name")
            if event_from is not None:
                event_comment = f"each row's event name is in column {event_from.header}"
            else:
                event_name = EVENT_NAME_PLACEHOLDER
                event_comment = (
                    f"{EVENT_NAME_PLACEHOLDER}: the event's name in the platform (e.g. "
                    "order_detail); every row is sent with it"
                )
                notes.append(
                    f"job.event_name is the placeholder {EVENT_NAME_PLACEHOLDER}: set the "
                    "platform's event name (or pass --event-name)"
                )
        else:
            event_comment = "every row is sent with this event name"
        event_id, id_why = _event_id_column(usable, keys)
        create_time, time_why = _event_time_column(usable)
        if event_id is None:
            event_id = next((g for g in usable if g not in keys), usable[0])
            id_why = "CHANGE ME: no column looks like an event id; this one is a placeholder"
            notes.append("no column looks like an event id: columns.event_id is a placeholder")
        if create_time is None:
            create_time = usable[-1]
            time_why = "CHANGE ME: no column looks like a time; this one is a placeholder"
            notes.append("no column looks like a time: columns.create_time is a placeholder")
        elif create_time.type != "datetime":
            # The rows create_time rejects are lost anyway: send the column itself as a
            # datetime too, rather than as unnormalised text.
            create_time.type, create_time.format, create_time.transform = "datetime", None, []
            create_time.why = "datetime like create_time, which reads the same column"
        event_id.why = event_id.why or "text"
    else:
        id_why = time_why = ""

    chosen = [g for g in usable if g is not event_from]
    if kind == "user_delete":
        # A delete needs the customer's keys only; the other columns would be ignored.
        skipped += [f"{g.header}" for g in chosen if g not in keys]
        chosen = keys

    reserved = {EVENT_ID, CREATE_TIME} if kind == "event" else set()
    used: set[str] = set(reserved)
    properties: list[tuple[str, ColumnGuess, str]] = []
    for g in chosen:
        name = g.name
        if kind == "event" and (
            (name == EVENT_ID and g is event_id) or (name == CREATE_TIME and g is create_time)
        ):
            continue  # added below under its reserved name
        base, i = name, 2
        while name in used:
            name = f"{base}_{i}"
            i += 1
        if name != g.name:
            g.why += f"; {g.name} is taken -> {name}"
            g.name = name
        used.add(name)
        properties.append((name, g, _comment(g, keys)))
    if kind == "event":
        assert event_id is not None and create_time is not None
        id_guess = replace(event_id, type="string", format=None, transform=["strip"])
        properties.append((EVENT_ID, id_guess, f"{event_id.header}: {id_why}"))
        time_guess = replace(create_time, transform=[])
        if time_guess.type != "datetime":
            time_guess.type, time_guess.format = "datetime", None
        properties.append((CREATE_TIME, time_guess, f"{create_time.header}: {time_why}"))

    for g in usable:
        if g.warning:
            notes.append(f"column {g.header}: {g.warning}")
    unnamed = [g.name for g in usable if g.name.startswith("col_") and g in chosen]
    if unnamed:
        notes.append(
            f"{len(unnamed)} column(s) have no English name ({', '.join(unnamed[:5])}"
            f"{', ...' if len(unnamed) > 5 else ''}): rename them to the platform's property names"
        )
    return _Plan(
        properties,
        [g.name for g in keys],
        pk_comment,
        event_name,
        event_from.header if event_from else None,
        event_comment,
        skipped,
        notes,
    )


def _first(
    guesses: list[ColumnGuess],
    match: Callable[[ColumnGuess], bool],
    prefer: Callable[[ColumnGuess], bool] | None = None,
) -> ColumnGuess | None:
    found = [g for g in guesses if match(g)]
    if prefer is not None:
        found.sort(key=lambda g: not prefer(g))
    return found[0] if found else None


_EVENT_ID_NAMES = ("event_id", "order_id", "transaction_id")
_EVENT_TIME_NAMES = ("create_time", "order_time", "pay_time", "event_time")


def _event_id_column(
    guesses: list[ColumnGuess], keys: list[ColumnGuess]
) -> tuple[ColumnGuess | None, str]:
    candidates = [g for g in guesses if g not in keys and g.looks_like is None and g.filled]
    for wanted in _EVENT_ID_NAMES:
        for g in candidates:
            if g.name == wanted and g.unique:
                return g, "named like an event id and unique in the sample -> event_id"
    for g in candidates:
        if g.unique and g.type == "string" and (g.name.endswith("_id") or "号" in g.header):
            return g, "named like an id and unique in the sample -> event_id"
    for g in candidates:
        if g.name in _EVENT_ID_NAMES:
            return g, "named like an event id, but NOT unique in the sample -> check it"
    return None, ""


def _event_time_column(guesses: list[ColumnGuess]) -> tuple[ColumnGuess | None, str]:
    times = [g for g in guesses if g.type == "datetime"]
    for wanted in _EVENT_TIME_NAMES:
        for g in times:
            if g.name == wanted:
                return g, "the event's time -> create_time"
    if times:
        return times[0], "the first datetime column -> create_time"
    for g in guesses:
        if g.name in _EVENT_TIME_NAMES:
            return g, (
                "named like the event's time, but not every sample value is a datetime: "
                "rows with other values are rejected (20003)"
            )
    return None, ""


def _comment(g: ColumnGuess, keys: list[ColumnGuess]) -> str:
    text = f"{g.header}: {g.why}"
    if g in keys:
        text += "; primary key"
    return text


# --------------------------------------------------------------------------------------------
# YAML text


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar inside a flow mapping: plain when that reads back the same."""
    if text and not text.startswith(("%", "@", "`", "!", "&", "*", "|", ">", "'", '"', "#")):
        try:
            if yaml.safe_load("{k: " + text + "}") == {"k": text}:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


def _flow(spec: dict[str, Any]) -> str:
    parts = []
    for key, value in spec.items():
        if isinstance(value, list):
            shown = "[" + ", ".join(_scalar(v) for v in value) + "]"
        else:
            shown = _scalar(str(value))
        parts.append(f"{key}: {shown}")
    return "{" + ", ".join(parts) + "}"


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def _wrap(text: str, indent: str, width: int = 98) -> list[str]:
    words = _one_line(text).split(" ")
    lines: list[str] = []
    line = indent + "#"
    for word in words:
        if len(line) + 1 + len(word) > width and line != indent + "#":
            lines.append(line)
            line = indent + "#"
        line += " " + word
    lines.append(line)
    return lines


def _describe(source: loader.Source) -> str:
    encoding = {"utf-8-sig": "UTF-8 with BOM", "utf-8": "UTF-8", "binary": ""}.get(
        source.encoding, source.encoding
    )
    fmt = "TSV" if source.delimiter == "\t" else source.format.upper()
    return f"{fmt}, {encoding}" if encoding else fmt


def _render(path: Path, kind: str, sample: _Sample, plan: _Plan) -> str:
    source = sample.source
    out: list[str] = []
    out += _wrap(
        f"Proposed by `dmimport init` from {path} ({_describe(source)}): the header and the "
        f"first {sample.rows} rows. Every line below is a guess with its reason: read them, "
        "fix what is wrong, then run `dmimport check-config` and `dmimport preview` on it. "
        "docs/config.md explains every key.",
        "",
    )
    if sample.malformed:
        out += _wrap(
            f"{sample.malformed} of the sampled records could not be read at all; "
            "`dmimport preview` shows which and why.",
            "",
        )
    if sample.not_text:
        out += _wrap(
            f"Left out: {', '.join(sample.not_text)} (binary, and most sampled values are not "
            "text: they cannot be sent as properties).",
            "",
        )
    out += [
        "target:",
        f"  base_url: {DEFAULT_BASE_URL}   # the platform's API; this one is `dmimport sandbox`",
        "  secret_env: DMART_SECRET          # NAME of the environment variable holding the SECRET",
        "  debug: false",
        "job:",
        f"  kind: {kind}",
    ]
    if plan.event_name is not None:
        out += _wrap(plan.event_comment, "  ")
        out.append(f"  event_name: {_scalar(plan.event_name)}")
    if plan.event_name_from is not None:
        out += _wrap(plan.event_comment, "  ")
        out.append(f"  event_name_from: {_scalar(plan.event_name_from)}")
    out += _wrap(plan.pk_comment, "  ")
    out.append("  primary_keys: [" + ", ".join(_scalar(k) for k in plan.primary_keys) + "]")
    out.append("columns:")
    for name, guess, comment in plan.properties:
        out += _wrap(comment, "  ")
        if guess.warning:
            out += _wrap(f"WARNING: {guess.warning}", "  ")
        out.append(f"  {_scalar(name)}: {_flow(guess.spec())}")
    if plan.skipped:
        shown = ", ".join(plan.skipped[:20]) + (", ..." if len(plan.skipped) > 20 else "")
        why = "a delete needs only the primary keys" if kind == "user_delete" else "see above"
        out += _wrap(f"Not imported ({why}): {shown}", "  ")
    out.append("input:")
    out.append(f"  format: {sample.options.format}")
    if source.encoding == "gb18030":
        out.append("  encoding: gb18030   # detected: this export is not UTF-8")
    elif sample.options.encoding != "auto":
        out.append(f"  encoding: {_scalar(sample.options.encoding)}")
    elif source.format == "parquet":
        out.append("  encoding: auto")
    else:
        detected = _describe(source).split(", ")[-1]
        out.append(f"  encoding: auto   # detected: {detected}")
    if source.format == "csv" and (sample.delimiter_guessed or sample.options.delimiter):
        note = "   # detected from the header" if sample.delimiter_guessed else ""
        out.append(f"  delimiter: {json.dumps(source.delimiter)}{note}")
    out += [
        "send:",
        "  concurrency: 32   # requests in flight; lower it if the platform answers 429",
        "report:",
        "  dir: reports",
        "",
    ]
    return "\n".join(out)


def render_proposal(proposal: Proposal, out: str | Path) -> str:
    """What ``dmimport init`` prints after writing the config to ``out``."""
    source = proposal.source
    lines = [
        f"wrote {out}: kind {proposal.kind}, {len(proposal.properties)} properties, "
        f"primary keys {', '.join(proposal.primary_keys)} "
        f"(guessed from {source.path}'s header and first {proposal.sample_rows} rows)",
    ]
    if proposal.notes:
        lines.append("check before the first run:")
        lines += [f"  - {note}" for note in proposal.notes]
    lines += [
        "next: read the comments in the config and fix what is wrong, then",
        f"  dmimport check-config {shlex.quote(str(out))}",
        f"  dmimport preview {shlex.quote(str(out))} {shlex.quote(str(source.path))}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writing


def default_out(path: str | Path) -> Path:
    """``<file stem>.yaml`` in the current directory: ``exports/shop.csv.gz`` -> ``shop.yaml``."""
    name = Path(path).name
    for suffix in (".gz",):
        name = name.removesuffix(suffix)
    stem = os.path.splitext(name)[0] or "job"
    return Path(f"{stem}.yaml")


def write_config(text: str, out: str | Path, *, force: bool = False) -> Path:
    """Write ``text`` to ``out``; an existing file is replaced only with ``force``."""
    out = Path(out)
    if out.exists() and not force:
        raise ScaffoldError(f"{out} exists; use --force to overwrite")
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "w" if force else "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except FileExistsError:  # created between the check and the open
        raise ScaffoldError(f"{out} exists; use --force to overwrite") from None
    except OSError as exc:
        raise ScaffoldError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
