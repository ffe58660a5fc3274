"""The sandbox's SQLite store: customers with a primary-key index, and de-duplicated events.

The server calls ``apply`` for every accepted non-debug request and ``commit`` once per event-loop
iteration (group commit); ``apply`` only opens the transaction.

Semantics (docs/sandbox.md):

- ``user`` upserts. A record matches every existing customer that has the same value for one of
  the record's non-empty primary-key properties. No match: a new customer. One match: its
  properties are updated, later values win. Several matches: they are merged into the oldest
  (lowest id), the younger ones' values overwriting older ones, then the record's; the others
  are deleted.
- ``userDelete`` deletes every matching customer (none: still a success).
- ``event`` inserts once per (eventName, event_id); a repeat changes nothing.
- ``null`` means "no value": it is never stored and never clears a stored value.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    properties TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS customer_keys (
    property TEXT NOT NULL,
    value TEXT NOT NULL,
    customer_id INTEGER NOT NULL,
    PRIMARY KEY (property, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS customer_keys_by_customer ON customer_keys (customer_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    received REAL NOT NULL,
    UNIQUE (event_name, event_id)
);
"""


# SQL texts by number of primary-key values
_MATCH_SQL: dict[int, str] = {}
_INSERT_KEYS: dict[int, str] = {}


def dumps(obj: Any) -> str:
    """Stored JSON text: compact, non-ASCII kept as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def key_text(value: Any) -> str:
    """How a primary-key or event_id value is indexed: strings as they are, others as JSON."""
    return value if isinstance(value, str) else dumps(value)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=NORMAL."""
    conn = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Store:
    """Writer side, owned by the server's event loop."""

    def __init__(self, path: str | os.PathLike[str], primary_keys: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.primary_keys = primary_keys
        self._db = connect(self.path)
        self._db.executescript(SCHEMA_SQL)
        self._in_txn = False

    @property
    def dirty(self) -> bool:
        """True while a transaction is open (writes not yet committed)."""
        return self._in_txn

    def apply(self, kind: str, body: dict[str, Any]) -> None:
        """Store one accepted request (kind = user | user_delete | event).

        On an exception the caller must ``rollback()`` the whole open transaction: a request's
        statements are not isolated from the rest of its group (a savepoint per request would
        double the statements; a failing statement here means the disk is in trouble anyway).
        """
        if not self._in_txn:
            self._db.execute("BEGIN")
            self._in_txn = True
        props = body["properties"]
        if kind == "user":
            self._upsert(props)
        elif kind == "user_delete":
            self._delete(props)
        elif kind == "event":
            self._event(body["eventName"], props)
        else:
            raise ValueError(f"unknown call {kind!r}")

    def apply_items(self, kind: str, items: list[dict[str, Any]], event: str | None = None) -> None:
        """Store the accepted items of one ``import-api`` request, in order (a batch is its
        items one after another: two items of one customer upsert twice). Same rollback rule
        as ``apply``."""
        if not self._in_txn:
            self._db.execute("BEGIN")
            self._in_txn = True
        if kind == "user":
            for props in items:
                self._upsert(props)
        elif kind == "user_delete":
            for props in items:
                self._delete(props)
        elif kind == "event" and event is not None:
            now = time.time()
            self._db.executemany(
                "INSERT OR IGNORE INTO events (event_name, event_id, properties, received) "
                "VALUES (?, ?, ?, ?)",
                [
                    (
                        event,
                        key_text(p["event_id"]),
                        dumps({k: v for k, v in p.items() if v is not None}),
                        now,
                    )
                    for p in items
                ],
            )
        else:
            raise ValueError(f"unknown call {kind!r}")

    def commit(self) -> None:
        if self._in_txn:
            self._in_txn = False
            self._db.execute("COMMIT")

    def rollback(self) -> None:
        if self._in_txn:
            self._in_txn = False
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        self.commit()
        self._db.close()

    def counts(self) -> tuple[int, int]:
        """(customers, events) as this connection sees them."""
        c = self._db.execute("SELECT count(*) FROM customers").fetchone()[0]
        e = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
        return c, e

    def search(
        self, prop: str | None, value: str, offset: int, limit: int
    ) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
        """Customers whose ``prop`` equals ``value`` (as its key text; ``prop`` None: every
        customer), oldest first: ``(total, [(id, properties)...])`` of the page at ``offset``."""
        if prop is None:
            total = self._db.execute("SELECT count(*) FROM customers").fetchone()[0]
            rows = self._db.execute(
                "SELECT id, properties FROM customers ORDER BY id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            return total, [(cid, json.loads(text)) for cid, text in rows]
        if prop in self.primary_keys:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT customer_id FROM customer_keys WHERE property = ? AND value = ? "
                    "ORDER BY customer_id",
                    (prop, value),
                )
            ]
            found = []
            for cid in ids:
                row = self._db.execute(
                    "SELECT properties FROM customers WHERE id = ?", (cid,)
                ).fetchone()
                if row is not None:
                    found.append((cid, json.loads(row[0])))
        else:
            found = []
            for cid, text in self._db.execute("SELECT id, properties FROM customers ORDER BY id"):
                props = json.loads(text)
                if prop in props and key_text(props[prop]) == value:
                    found.append((cid, props))
        return len(found), found[offset : offset + limit]

    def _keys(self, props: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (k, key_text(props[k]))
            for k in self.primary_keys
            if k in props and not _is_empty(props[k])
        ]

    def _matches(self, keys: list[tuple[str, str]]) -> list[int]:
        if not keys:
            return []
        sql = _MATCH_SQL.get(len(keys))
        if sql is None:
            where = " OR ".join(["(property = ? AND value = ?)"] * len(keys))
            sql = _MATCH_SQL[len(keys)] = f"SELECT customer_id FROM customer_keys WHERE {where}"
        params = [x for pair in keys for x in pair]
        return sorted({row[0] for row in self._db.execute(sql, params)})

    def _index(self, keys: list[tuple[str, str]], cid: int) -> None:
        if keys:
            sql = _INSERT_KEYS.get(len(keys))
            if sql is None:
                rows = ", ".join(["(?, ?, ?)"] * len(keys))
                sql = _INSERT_KEYS[len(keys)] = (
                    f"INSERT OR REPLACE INTO customer_keys (property, value, customer_id) "
                    f"VALUES {rows}"
                )
            self._db.execute(sql, [x for p, v in keys for x in (p, v, cid)])

    def _upsert(self, props: dict[str, Any]) -> None:
        db = self._db
        record = {k: v for k, v in props.items() if v is not None}
        keys = self._keys(record)
        ids = self._matches(keys)
        now = time.time()
        if not ids:
            cid = db.execute(
                "INSERT INTO customers (properties, created, updated) VALUES (?, ?, ?)",
                (dumps(record), now, now),
            ).lastrowid
            self._index(keys, cast(int, cid))
            return
        target = ids[0]
        merged: dict[str, Any] = {}
        for cid in ids:
            (text,) = db.execute("SELECT properties FROM customers WHERE id = ?", (cid,)).fetchone()
            merged.update(json.loads(text))
        merged.update(record)
        if len(ids) > 1:
            others = [(cid,) for cid in ids[1:]]
            db.executemany("DELETE FROM customers WHERE id = ?", others)
            db.executemany("DELETE FROM customer_keys WHERE customer_id = ?", others)
        db.execute(
            "UPDATE customers SET properties = ?, updated = ? WHERE id = ?",
            (dumps(merged), now, target),
        )
        db.execute("DELETE FROM customer_keys WHERE customer_id = ?", (target,))
        self._index(self._keys(merged), target)

    def _delete(self, props: dict[str, Any]) -> None:
        ids = [(cid,) for cid in self._matches(self._keys(props))]
        if ids:
            self._db.executemany("DELETE FROM customers WHERE id = ?", ids)
            self._db.executemany("DELETE FROM customer_keys WHERE customer_id = ?", ids)

    def _event(self, name: str, props: dict[str, Any]) -> None:
        record = {k: v for k, v in props.items() if v is not None}
        self._db.execute(
            "INSERT OR IGNORE INTO events (event_name, event_id, properties, received) "
            "VALUES (?, ?, ?, ?)",
            (name, key_text(props["event_id"]), dumps(record), time.time()),
        )


def read_customers(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Committed customers, oldest first: ``{"id": 1, "properties": {...}}``."""
    with _reader(path) as db:
        rows = db.execute("SELECT id, properties FROM customers ORDER BY id").fetchall()
    return [{"id": cid, "properties": json.loads(text)} for cid, text in rows]


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Committed events in arrival order: ``{"eventName", "event_id", "properties"}``."""
    with _reader(path) as db:
        rows = db.execute(
            "SELECT event_name, event_id, properties FROM events ORDER BY id"
        ).fetchall()
    return [{"eventName": n, "event_id": e, "properties": json.loads(t)} for n, e, t in rows]


def read_raw_properties(path: str | os.PathLike[str], table: str = "customers") -> list[str]:
    """The stored JSON texts themselves (to check what bytes were kept)."""
    if table not in ("customers", "events"):
        raise ValueError(f"unknown table {table!r}")
    with _reader(path) as db:
        return [r[0] for r in db.execute(f"SELECT properties FROM {table} ORDER BY id")]


class _reader:
    """A short-lived reading connection; refuses to create a database that is not there."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no sandbox database at {os.fspath(path)}")
        self._db = sqlite3.connect(os.fspath(path))
        self._db.execute("PRAGMA busy_timeout=5000")

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, *exc: object) -> None:
        self._db.close()
