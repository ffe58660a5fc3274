"""Which time zone ``dmimport init`` proposes for datetime columns whose cells carry offsets
or are epoch numbers (the mapper converts those into ``timezone``; without it an offset is
dropped and an epoch number is read as UTC)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: the zone of Chinese exports
CHINA = "Asia/Shanghai"
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/GMT", "GMT", "Universal", "Zulu"})
_CJK = re.compile(r"[\u3400-\u9fff]")


def machine_timezone() -> str | None:
    """The IANA name of this machine's zone, as the standard library can tell it: ``$TZ``,
    else the target of the ``/etc/localtime`` link, else ``/etc/timezone``; None if unknown."""
    candidates: list[str] = []
    tz = os.environ.get("TZ", "").strip().removeprefix(":")
    if tz:
        candidates.append(tz.partition("zoneinfo/")[2] or tz)
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime").partition("zoneinfo/")[2])
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            candidates.append(fh.read().strip())
    except OSError:
        pass
    for name in candidates:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return None


def proposed_timezone(headers: Sequence[str], offsets: Sequence[str]) -> tuple[str, str]:
    """(zone, why) for a file with these ``headers`` whose sampled datetime cells carry
    ``offsets`` (``+08:00``, ``Z``; none for epoch numbers): Asia/Shanghai for Chinese headers,
    else the machine's zone; a machine on UTC (or of unknown zone) reading cells that are all
    +08:00 gets Asia/Shanghai too."""
    if any(_CJK.search(h) for h in headers):
        return CHINA, "the headers are Chinese"
    machine = machine_timezone()
    if (machine is None or machine in _UTC_NAMES) and offsets and set(offsets) == {"+08:00"}:
        return CHINA, "every offset sampled in this file is +08:00"
    if machine is None:
        return "UTC", "this machine's zone is unknown"
    return machine, "this machine's zone"
