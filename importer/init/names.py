"""Property names for source headers: known Chinese export headers, then an ASCII fold."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

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
    **dict.fromkeys(["累计消费", "累计消费金额", "消费总额", "总消费"], "total_spent"),
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
    "消费金额": "spent_amount",
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


#: a date (and time) that ends a dated export's name: _20261204, -2026-12-04, _20261204T0200
_DATED = re.compile(
    r"[._\- ]*\d{4}[-_.]?\d{2}[-_.]?\d{2}(?:[T_\- ]?\d{2}[-_:.]?\d{2}(?:[-_:.]?\d{2})?)?$"
)


#: the same date starting the name, before a separator: 20261204_orders, 2026-12-04-crm
_DATED_START = re.compile(
    r"^\d{4}[-_.]?\d{2}[-_.]?\d{2}(?:[T_\- ]?\d{2}[-_:.]?\d{2}(?:[-_:.]?\d{2})?)?[._\- ]+"
)


def job_name(path: str | Path) -> str:
    """The job a file belongs to: its name without extensions and without the date a nightly
    export carries, at its end or its start (``orders_20261204.jsonl``,
    ``crm_export.2026-12-04.csv.gz`` and ``20261204_orders.csv`` -> ``orders``, ``crm_export``,
    ``orders``), usable as a directory name."""
    name = Path(path).name
    name = name.removesuffix(".gz").removesuffix(".GZ")
    stem = os.path.splitext(name)[0] or name
    undated = _DATED.sub("", stem) or stem
    undated = _DATED_START.sub("", undated) or undated
    return re.sub(r"[^\w.-]+", "_", undated).strip("._-") or "job"


def property_name(header: str, position: int) -> tuple[str, str]:
    """(snake_case property name, how it was found) for the header of column ``position``."""
    known = _known_name(header)
    if known:
        return known, "known header"
    folded = _ascii_name(header)
    if folded:
        return folded, "from the header"
    return f"col_{position}", "no English name known"
