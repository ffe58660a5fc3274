"""Two messy nightly exports, generated (never shipped), with what a correct import makes of them.

- ``crm_export(path)``: a CRM's customers as Excel saves them: GB18030, CRLF, Chinese headers;
  phones written ``+86 138 0013 8000``, ``138-0013-8000``, ``0086 13800138000``; amounts
  ``"1,299.00"``; birthdays ``1990/3/5``; a customer exported twice (the later row updates the
  city); Excel's trailing ``,,,,`` rows; and bad rows: a phone Excel turned into ``1.38001E+10``,
  one with letters ``138OO138000``, one with 13 digits, a birthday ``2024-02-30``.
- ``shop_export(path)``: a shop's orders as JSON Lines: ISO-8601 ``created_at`` with ``+08:00``,
  an epoch-millisecond ``pay_time`` empty on unpaid orders, amounts as text with thousands
  separators, a nested ``items`` array, an order exported twice (PAID, then SHIPPED).

Each returns an ``Expected``: the line of every bad row with a fragment of its reason, and, per
customer (its 11-digit phone) or order id, the values a correct import stores.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CRM_HEADER = ["客户编号", "姓名", "手机号", "邮箱", "累计消费", "生日", "注册时间", "城市"]
CITIES = ["上海", "北京", "深圳", "杭州", "成都"]
NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊"]
SHANGHAI = timezone(timedelta(hours=8))


@dataclass
class Expected:
    """What a correct import of one export gives."""

    #: file line -> a fragment of the reason its row is rejected with
    rejected: dict[int, str] = field(default_factory=dict)
    #: file line of a rejected row -> the source column its reason names
    rejected_column: dict[int, str] = field(default_factory=dict)
    #: file lines of rows that are good
    good: list[int] = field(default_factory=list)
    #: file line of an earlier row -> the line of the later row of the same identity
    superseded: dict[int, int] = field(default_factory=dict)
    #: identity (a customer's 11-digit phone, an order id) -> source column -> the value stored,
    #: as the column's cell would convert (amounts as float, dates as datetime)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)


def _phone_forms(phone: str) -> list[str]:
    """The ways the same mobile number is written in real exports."""
    spaced = f"{phone[:3]} {phone[3:7]} {phone[7:]}"
    dashed = f"{phone[:3]}-{phone[3:7]}-{phone[7:]}"
    return [phone, f"+86 {spaced}", dashed, f"0086 {phone}", f"+86-{phone}", f" {phone} "]


def _amount(rng: random.Random) -> tuple[str, float]:
    """An amount as a spreadsheet writes it, and its value."""
    cents = rng.randrange(100, 5_000_000)
    value = cents / 100
    if value >= 1000 and rng.random() < 0.8:
        return f"{value:,.2f}", value
    return f"{value:.2f}", value


def crm_export(path: Path, customers: int = 400, seed: int = 14) -> Expected:
    """Write the CRM export to ``path``; return what a correct import makes of it."""
    rng = random.Random(seed)
    exp = Expected()
    lines: list[list[str]] = []
    first_line = 2  # line 1 is the header

    def add(row: list[str]) -> int:
        lines.append(row)
        return first_line + len(lines) - 1

    for i in range(customers):
        phone = f"13{rng.randrange(3, 10)}{i:08d}"
        amount_text, amount = _amount(rng)
        born = datetime(1960 + rng.randrange(40), rng.randrange(1, 13), rng.randrange(1, 29))
        birthday = (
            f"{born.year}/{born.month}/{born.day}"
            if rng.random() < 0.6
            else born.strftime("%Y-%m-%d")
        )
        registered = datetime(2020, 1, 1) + timedelta(minutes=rng.randrange(2_000_000))
        city = rng.choice(CITIES)
        email = f"c{i}@example.com" if rng.random() < 0.5 else ""
        row = [
            f"C{i:06d}",
            rng.choice(NAMES),
            rng.choice(_phone_forms(phone)),
            email,
            amount_text,
            birthday,
            registered.strftime("%Y-%m-%d %H:%M:%S"),
            city,
        ]
        line = add(row)
        exp.good.append(line)
        exp.stored[phone] = {
            "手机号": phone,
            "累计消费": amount,
            "生日": born,
            "城市": city,
            "邮箱": email or None,
        }
        if i % 50 == 7:  # exported again later in the file with a new city: the later row wins
            exp.stored[phone]["_again"] = (line, row)

    for values in list(exp.stored.values()):
        if "_again" in values:
            line, row = values.pop("_again")
            again = list(row)
            again[7] = "广州"
            later = add(again)
            exp.good.append(later)
            exp.superseded[line] = later
            values["城市"] = "广州"

    bad = [
        ("1.38001E+10", "1990/3/5", "手机号", "scientific notation"),
        ("138OO138000", "1990/3/5", "手机号", "letters"),
        ("1380013800012", "1990/3/5", "手机号", "13 digits"),
        ("13912345678", "2024-02-30", "生日", "no such date"),
    ]
    for n, (phone, birthday, column, why) in enumerate(bad):
        row = [f"B{n:05d}", "坏行", phone, f"bad{n}@example.com", "12.00", birthday,
               "2024-01-01 00:00:00", "上海"]  # fmt: skip
        line = add(row)
        exp.rejected[line] = why
        exp.rejected_column[line] = column

    text = ",".join(CRM_HEADER) + "\r\n"
    for row in lines:
        text += ",".join(f'"{v}"' if "," in v else v for v in row) + "\r\n"
    text += ",,,,,,,\r\n" * 3  # Excel's trailing empty rows
    path.write_bytes(text.encode("gb18030"))
    return exp


def shop_export(path: Path, orders: int = 600, seed: int = 14) -> Expected:
    """Write the shop's JSON Lines export to ``path``; return what a correct import stores
    (``job.duplicates: keep_last``: an order exported twice keeps its later status)."""
    rng = random.Random(seed)
    exp = Expected()
    records: list[dict[str, Any]] = []
    for i in range(orders):
        created = datetime(2024, 3, 5, 10, 20, 30, tzinfo=SHANGHAI) + timedelta(minutes=7 * i)
        paid = rng.random() < 0.85
        amount_text, amount = _amount(rng)
        record: dict[str, Any] = {
            "order_id": f"SO{20240000 + i}",
            "buyer_phone": f"13{rng.randrange(3, 10)}{i:08d}",
            "status": "PAID" if paid else "UNPAID",
            "created_at": created.isoformat(),
            "pay_time": int((created + timedelta(minutes=3)).timestamp() * 1000) if paid else None,
            "amount": amount_text,
            "items": [{"sku": f"SKU{rng.randrange(100)}", "qty": rng.randrange(1, 4)}],
        }
        records.append(record)
        exp.stored[record["order_id"]] = {
            "created_at": created,
            "pay_time": created + timedelta(minutes=3) if paid else None,
            "amount": amount,
            "status": record["status"],
            "buyer_phone": record["buyer_phone"],
        }
    for i in range(0, orders, 60):  # shipped later: the same order id, a later status
        again = dict(records[i], status="SHIPPED")
        if again["pay_time"] is None:
            continue
        records.append(again)
        exp.superseded[i + 1] = len(records)
        exp.stored[again["order_id"]]["status"] = "SHIPPED"
    exp.good = list(range(1, len(records) + 1))
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return exp
