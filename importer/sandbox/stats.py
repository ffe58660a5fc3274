"""The counters served at ``GET /_sandbox/stats`` (``Sandbox.stats()``)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Counters of the traffic the sandbox saw (admin calls excluded from ``requests``).

    ``items``: records received (in the bodies that passed auth and the body's shape checks;
    debug requests included) and stored (applied, debug excluded). ``by_type``: per API path,
    requests by body ``type`` (``import-api``; ``<invalid>`` when it is missing or unknown,
    ``<not_json>`` for 10001) or by call (``signed``), counted once auth passed. ``by_day``:
    per account day (``quota_timezone``), the API requests admitted (what the daily quota
    counts), the items received, and the requests refused with 429 by the limits.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_errcode: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.by_http_status: Counter[str] = Counter()
        self.by_type: dict[str, Counter[str]] = {}
        self.items_received = 0
        self.items_stored = 0
        self.connections = 0
        self.commits = 0
        self.closed_too_big = 0
        self.by_day: dict[str, dict[str, int]] = {}
        #: the counters of the current day (``on_day``)
        self.today: dict[str, int] = {"requests": 0, "items": 0, "429": 0}

    def on_day(self, day: str) -> dict[str, int]:
        """Make ``day`` the current day; returns its counters."""
        today = self.by_day.get(day)
        if today is None:
            today = self.by_day[day] = {"requests": 0, "items": 0, "429": 0}
        self.today = today
        return today

    def count_type(self, path: str, body_type: str) -> None:
        counter = self.by_type.get(path)
        if counter is None:
            counter = self.by_type[path] = Counter()
        counter[body_type] += 1

    def snapshot(self, customers: int, events: int, open_connections: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "items": {"received": self.items_received, "stored": self.items_stored},
            "by_path": dict(self.by_path),
            "by_type": {path: dict(c) for path, c in self.by_type.items()},
            "by_errcode": dict(self.by_errcode),
            "by_fault": dict(self.by_fault),
            "by_http_status": dict(self.by_http_status),
            "connections": {"total": self.connections, "open": open_connections},
            "commits": self.commits,
            "closed_too_big": self.closed_too_big,
            "by_day": {day: dict(c) for day, c in self.by_day.items()},
            "customers": customers,
            "events": events,
        }
