"""The ledger's tables: laid out in a new file, validated in an existing one, and upgraded in
place from older schema versions.

Versions: 1 (dmimport 0.1) had no ``job_folds`` or ``job_index``; 2 added them (and, later,
``job_index_pos``) and kept body hashes as 16 hex digits in TEXT columns; 3 keeps them as
INTEGER (the hash's int64 sort key, ``rowhash.as_keys``); 4 adds ``requests`` (the requests
made per account, quota day and job: the daily quota). ``upgrade`` brings a version 1, 2 or 3
ledger to 4 in one transaction: a crash leaves it as it was, and the next open upgrades it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import LedgerError
from .access import APPLICATION, not_a_ledger
from .rowhash import keys64

SCHEMA_VERSION = 4

# ``hash`` columns: the int64 key of a body hash (``rowhash.as_keys``), NULL when none.
_ROWS = """
CREATE TABLE {name} (
    job TEXT NOT NULL,
    identity TEXT NOT NULL,
    last_status TEXT NOT NULL,
    last_hash INTEGER,
    last_ok_hash INTEGER,
    last_run_id TEXT NOT NULL,
    last_pos INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (job, identity)
) WITHOUT ROWID
"""

_RUN_ROWS = """
CREATE TABLE {name} (
    run_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    pos INTEGER NOT NULL,
    status TEXT NOT NULL,
    hash INTEGER
)
"""

# ``job_folds`` counts the folds that changed a job's ``rows``; ``job_index`` and
# ``job_index_pos`` pack the job's rows for changed-only runs (sorted int64 identity keys, the
# int64 keys of their last ok hashes, their last positions) as of fold number ``folds``: valid
# only while that is still the job's count.
_INDEX = """
CREATE TABLE IF NOT EXISTS job_folds (job TEXT PRIMARY KEY, folds INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_index (
    job TEXT PRIMARY KEY,
    folds INTEGER NOT NULL,
    keys BLOB NOT NULL,
    ok_keys BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS job_index_pos (
    job TEXT PRIMARY KEY,
    folds INTEGER NOT NULL,
    positions BLOB NOT NULL
);
"""

# ``requests``: the requests runs made, per account (``requests.account_of``: a hash of the
# base URL and the SECRET, never the SECRET), quota day (``send.quota_timezone``'s date) and
# job; a run adds to its row as it goes, so a killed run's requests are counted too
_REQUESTS = """
CREATE TABLE IF NOT EXISTS requests (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    job TEXT NOT NULL,
    requests INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (account, day, job)
) WITHOUT ROWID
"""

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    config_sha256 TEXT NOT NULL,
    files_json TEXT NOT NULL,
    counts_json TEXT,
    exit_code INTEGER,
    resumed_from TEXT,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL
);
CREATE INDEX runs_job ON runs (job);
{_ROWS.format(name="rows")};
{_RUN_ROWS.format(name="run_rows")};
CREATE INDEX run_rows_run ON run_rows (run_id);
CREATE TABLE run_rows_failed (
    run_id TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    identity TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX run_rows_failed_run ON run_rows_failed (run_id);
{_INDEX}
{_REQUESTS};
"""

# Schema 2 -> 3: the hash columns become INTEGER. SQLite cannot change a column's type, so
# ``rows`` and ``run_rows`` are copied into new tables (journal rows in their order: a fold
# reads them by rowid), the old ones dropped and the new ones renamed. The packed indexes are
# dropped: they are rebuilt from the converted rows by the next changed-only run.
_TO_INTEGER_HASHES = f"""
{_ROWS.format(name="rows_v3")};
INSERT INTO rows_v3 SELECT job, identity, last_status, dm_hash_key(last_hash),
    dm_hash_key(last_ok_hash), last_run_id, last_pos, updated FROM rows;
DROP TABLE rows;
ALTER TABLE rows_v3 RENAME TO rows;
{_RUN_ROWS.format(name="run_rows_v3")};
INSERT INTO run_rows_v3 SELECT run_id, identity, pos, status, dm_hash_key(hash) FROM run_rows
    ORDER BY rowid;
DROP TABLE run_rows;
ALTER TABLE run_rows_v3 RENAME TO run_rows;
CREATE INDEX run_rows_run ON run_rows (run_id);
DELETE FROM job_index;
DELETE FROM job_index_pos;
"""


def now() -> str:
    """The time as the ledger writes it: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock at once) ... ``COMMIT``; rolled back on any error.

    On a connection that already holds a transaction (a run's recorder keeps its last batch
    open until the run ends), a savepoint inside it instead: undone alone on error,
    committed with that transaction."""
    joined = conn.in_transaction
    if joined:
        conn.execute("SAVEPOINT nested")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO nested")
            conn.execute("RELEASE nested")
            raise
        conn.execute("RELEASE nested")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (``executescript``
    would commit it)."""
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def schema_names(conn: sqlite3.Connection, path: Path) -> set[str]:
    """The names of the file's tables and indexes; a file SQLite cannot read is refused."""
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:  # 'file is not a database', 'malformed'
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            raise not_a_ledger(path, exc) from exc
        raise


def create(conn: sqlite3.Connection) -> None:
    """Lay out a new ledger in an empty file (an empty SQLite file holds nothing to lose)."""
    with transaction(conn):
        # Another process may have created it while this one waited for the write lock.
        if not {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}:
            _script(conn, _SCHEMA)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("application", APPLICATION),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created", now()),
                ],
            )


def validate(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse (``LedgerError``, with reads only) a file that is not a ledger this dmimport can
    use: not ours, no version, a newer version, or tables missing."""
    names = schema_names(conn, path)
    meta: dict[str, str] = {}
    if "meta" in names:
        with contextlib.suppress(sqlite3.DatabaseError):
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise LedgerError(
            f"ledger {path} is an SQLite database that dmimport did not create (no "
            f"'{APPLICATION}' meta); it was left untouched. Set state.path to another file"
        )
    version = meta.get("schema_version", "")
    if not version.isdigit():
        raise LedgerError(
            f"ledger {path} has no valid schema_version ({version!r}); it was left untouched. "
            f"Move it aside (mv {path} {path}.bad) to start a new ledger"
        )
    if int(version) > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {path} has schema_version {version}, newer than this dmimport supports "
            f"({SCHEMA_VERSION}); upgrade dmimport, or set state.path to another file"
        )
    missing = {"runs", "rows", "run_rows", "run_rows_failed"} - names
    if missing:
        raise LedgerError(
            f"ledger {path} lacks table(s) {', '.join(sorted(missing))}; it was left "
            f"untouched. Move it aside (mv {path} {path}.bad) to start a new ledger"
        )


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring an older ledger (already validated) to this schema in one transaction; its data
    is kept, its hex hashes become INTEGER keys (``hash_key``)."""
    if _schema_version(conn) >= SCHEMA_VERSION:
        return
    conn.create_function("dm_hash_key", 1, hash_key, deterministic=True)
    with transaction(conn):
        version = _schema_version(conn)  # another process may have upgraded it meanwhile
        if version < 3:
            _script(conn, _INDEX)  # schema 1 -> 2
            _script(conn, _TO_INTEGER_HASHES)  # schema 2 -> 3
        if version < SCHEMA_VERSION:
            _script(conn, _REQUESTS)  # schema 3 -> 4
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )


def hash_key(text: str | None) -> int | None:
    """A hash as schema 2 stored it (TEXT), as schema 3 stores it: 16 hex digits (what the
    mapper made) become ``int(text, 16) - 2**63``; other text, which schema 2 compared by its
    ``rowhash.keys64``, becomes that; an empty or absent hash (a row without a body) NULL."""
    if not text:
        return None
    if len(text) == 16 and _HEX_DIGITS.issuperset(text):
        return int(text, 16) - (1 << 63)
    return int(keys64([text])[0])


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0])
