"""Regenerates the sample files used by `make demo` and the tests: `python sample_data/generate.py`.

The files are small, hand-made exports with Chinese text and a few bad rows on purpose, each
marked below with what the importer should say about it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent

CUSTOMER_HEADER = ["手机号", "邮箱", "姓名", "年龄", "性别", "会员", "城市", "注册时间"]

CUSTOMERS = [
    ["13800138000", "zhangsan@example.cn", "张三", "34", "男", "是", "北京", "2024-03-01 09:15:00"],
    ["13800138001", "LiSi@Example.CN ", "李四", "28", "女", "否", "上海", "2024-03-02 10:00:00"],
    [
        "013800138002",
        "wangwu@example.cn",
        "王五",
        "45",
        "男",
        "true",
        "广州",
        "2024/03/03 11:30:00",
    ],
    ["138-0013-8003", "", "赵六", "", "女", "false", "深圳", "2024-03-04T12:00:00+08:00"],
    ["", "sunqi@example.cn", "孙七", "51", "男", "", "杭州", "1709697600"],
    ["13800138005", "zhouba@example.cn", '周"八"', "39", "女", "yes", "成都, 四川", ""],
    ["13800138006", "wujiu@example.cn", "吴九\n(备注: 两行)", "22", "男", "no", "南京", ""],
    ["13800138007", "zhengshi@example.cn", "郑十", "12a", "女", "是", "武汉", ""],  # 10002 age
    ["", "", "无名", "30", "男", "否", "西安", ""],  # 20001: no primary key
    ["13800138009", "feng@example.cn", "冯十一", "40", "男", "maybe", "重庆", ""],  # 10002 vip
    ["13800138010", "chen@example.cn", "陈十二", "33", "女", "否", "天津", "next tuesday"],  # 10002
    ["13800138011", "chu@example.cn", "褚十三", "27", "男", "是", "苏州", "2024-03-11 08:00:00"],
    ["13800138012", "wei@example.cn", "卫十四", "31", "女", "否", "长沙", "2024-03-12 08:00:00"],
]
RAGGED = "13800138099,ragged@example.cn,多一列,30,男,是,北京,2024-03-01 09:15:00,extra"

GB_CUSTOMERS = [
    ["13900139000", "jiang@example.cn", "蒋一", "26", "男", "是", "郑州", "2024-04-01 09:00:00"],
    ["13900139001", "shen@example.cn", "沈二", "37", "女", "否", "济南", "2024-04-02 09:00:00"],
    ["13900139002", "han@example.cn", "韩三", "44", "男", "是", "青岛", "2024-04-03 09:00:00"],
    ["13900139003", "yang@example.cn", "杨四·𠀀", "52", "女", "否", "厦门", "2024-04-04 09:00:00"],
    ["13900139004", "zhu@example.cn", "朱五", "-3x", "男", "是", "福州", ""],  # 10002 age
]

ORDER_FIELDS = ["手机号", "邮箱", "订单号", "下单时间", "金额"]
ORDERS = [
    ["13800138000", "zhangsan@example.cn", "20180808080800001", "2018-08-08 08:08:08", 998],
    ["13800138001", "lisi@example.cn", "20180808080800002", "2018-08-08 09:00:00", 12.5],
    ["13800138002", "", "20180808080800003", "2018-08-09 10:00:00", "199.00"],
    ["", "sunqi@example.cn", "20180808080800004", "2018-08-10T11:00:00+08:00", 45],
    ["13800138005", "zhouba@example.cn", "20180808080800005", "2018/08/11 12:00:00", 0],
    ["13800138006", "wujiu@example.cn", "", "2018-08-12 13:00:00", 10],  # 20001
    ["13800138007", "zhengshi@example.cn", "20180808080800007", "yesterday", 10],  # 10002
    ["13800138011", "chu@example.cn", "20180808080800008", "2018-08-13 14:00:00", "abc"],  # 10002
    ["", "", "20180808080800009", "2018-08-14 15:00:00", 5],  # 20001 no customer key
]
PARQUET_ORDERS = [
    ["13800138000", "zhangsan@example.cn", "20180909090900001", "2018-09-09 09:09:09", 128.0],
    ["13800138001", "lisi@example.cn", "20180909090900002", "2018-09-10 10:00:00", 64.5],
    ["13900139000", "jiang@example.cn", "20180909090900003", "2018-09-11 11:00:00", 300.0],
    ["13900139001", None, "20180909090900004", "2018-09-12 12:00:00", 12.0],
]

DELETES = [
    ["13800138012", ""],  # delete 卫十四 by phone
    ["", "chu@example.cn"],  # delete 褚十三 by email
    ["13700000000", ""],  # nobody: deleting a missing customer is fine (errcode 0)
    ["", ""],  # a delimiter-only line holds no data: skipped, like a blank line
]


def _csv_line(values: list[str]) -> str:
    out = []
    for v in values:
        if any(c in v for c in ',"\n'):
            v = '"' + v.replace('"', '""') + '"'
        out.append(v)
    return ",".join(out)


def main() -> None:
    lines = [_csv_line(CUSTOMER_HEADER)] + [_csv_line(r) for r in CUSTOMERS]
    lines.insert(5, RAGGED)  # a row with one field too many, on physical line 6
    (HERE / "customers.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")

    gb = [_csv_line(CUSTOMER_HEADER)] + [_csv_line(r) for r in GB_CUSTOMERS]
    (HERE / "customers_gb18030.csv").write_bytes(("\r\n".join(gb) + "\r\n").encode("gb18030"))

    with open(HERE / "order_events.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(ORDERS):
            obj = {k: v for k, v in zip(ORDER_FIELDS, row, strict=True) if v != ""}
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            if i == 2:
                fh.write('{"手机号": "13800138003", "订单号": "broken\n')  # invalid JSON line
    cols = list(zip(*PARQUET_ORDERS, strict=True))
    table = pa.table(
        {
            "手机号": pa.array(cols[0], pa.string()),
            "邮箱": pa.array(cols[1], pa.string()),
            "订单号": pa.array(cols[2], pa.string()),
            "下单时间": pa.array(cols[3], pa.string()),
            "金额": pa.array(cols[4], pa.float64()),
        }
    )
    pq.write_table(table, HERE / "orders.parquet")

    dl = [_csv_line(["手机号", "邮箱"])] + [_csv_line(r) for r in DELETES]
    (HERE / "delete_customers.csv").write_text("\n".join(dl) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
