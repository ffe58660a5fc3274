"""The sandbox's command line: ``serve`` (the default) and ``dump``.

``python -m importer.sandbox [serve] [options]`` and ``dmimport sandbox ...`` both end in
``main(argv)``. ``serve`` prints on stdout, once it listens, first this line (what scripts
read)::

    sandbox listening on http://127.0.0.1:PORT (db: PATH)

then the SECRETs it accepts and how to send to it (``accepted_lines``): the schema's own
SECRETs are demo values, printed; those of ``DMART_SANDBOX_SECRETS`` are the operator's, only
counted. It runs until SIGTERM or SIGINT, then commits and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..protocol import SANDBOX_PORT
from .faults import Faults, parse_fault_specs
from .schema import (
    BATCH_ERRORS,
    SECRETS_ENV,
    TOO_BIG,
    UNKNOWN_PROPERTIES,
    Schema,
    env_secrets,
    load_schema,
)
from .server import SandboxServer, stderr_log
from .store import Store, read_customers, read_events

PROG = "python -m importer.sandbox"

#: the ``serve`` options that override the schema's keys of the same names
ACCOUNT_OPTIONS = (
    "batch_errors",
    "max_batch_rows",
    "max_body_bytes",
    "unknown_properties",
    "error_http_status",
    "too_big",
    "rate_limit_per_s",
    "daily_quota",
    "quota_timezone",
)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Local server implementing the Dmartech ingest API contract."
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the server (the default command)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        default=SANDBOX_PORT,
        help=f"port; 0 picks a free one (default {SANDBOX_PORT})",
    )
    serve.add_argument("--db", help="SQLite file (default: a temporary file deleted at exit)")
    serve.add_argument(
        "--schema",
        help="account schema YAML (default: configs/sandbox-schema.yaml, else the packaged copy)",
    )
    serve.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the fault draw (default 0)"
    )
    serve.add_argument(
        "--latency-ms", default="0", help="delay added to every request: 20 or a range 10-30"
    )
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=FRACTION",
        help="inject a fault into a fraction of requests; repeatable. NAME: 503, 500, 429, "
        "10000, 20004, reset, truncated, non_json, stall, blacklisted, late_apply (or http_503, "
        "errcode_10000, ...)",
    )
    serve.add_argument("--retry-after", default="1", help="Retry-After value sent with 429")
    serve.add_argument(
        "--stall-s", type=float, default=60.0, help="how long a stalled request waits (default 60)"
    )
    serve.add_argument(
        "--late-apply-s",
        type=float,
        default=30.0,
        help="how long a late_apply request is held before it is applied (default 30)",
    )
    serve.add_argument(
        "--down-after",
        type=int,
        default=0,
        metavar="N",
        help="an outage: after N API requests, answer every request HTTP 503 (default 0: never)",
    )
    serve.add_argument(
        "--drop-after-ok",
        type=int,
        default=0,
        metavar="N",
        help="rows vanish: after N rows stored, answer ok but store nothing (default 0: never)",
    )
    account = serve.add_argument_group(
        "account settings", "override the schema file's keys of the same names"
    )
    account.add_argument(
        "--batch-errors",
        choices=BATCH_ERRORS,
        help="what a batch with a bad item stores: nothing (reject_all) or its valid items",
    )
    account.add_argument(
        "--max-batch-rows", type=int, metavar="N", help="most items a batch may carry (0: no limit)"
    )
    account.add_argument(
        "--max-body-bytes", type=int, metavar="N", help="largest request body; past it HTTP 413"
    )
    account.add_argument(
        "--unknown-properties",
        choices=UNKNOWN_PROPERTIES,
        help="import-api: an undeclared property is refused (20003) or accepted",
    )
    account.add_argument(
        "--error-http-status",
        type=int,
        metavar="STATUS",
        help="import-api: HTTP status of an errcode answer (default 404; or 200)",
    )
    account.add_argument(
        "--too-big",
        choices=TOO_BIG,
        help="past a size limit: answer HTTP 413, or close the connection while the body comes",
    )
    account.add_argument(
        "--rate-limit-per-s",
        type=float,
        metavar="N",
        help="API requests a second; past it HTTP 429 with Retry-After (0: no limit)",
    )
    account.add_argument(
        "--daily-quota",
        type=int,
        metavar="N",
        help="API requests a day; past it HTTP 429 until midnight (0: no quota)",
    )
    account.add_argument(
        "--quota-timezone", metavar="ZONE", help="time zone of the account's day (Asia/Shanghai)"
    )
    serve.add_argument("--quiet", action="store_true", help="no shutdown summary on stderr")
    serve.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")

    dump = sub.add_parser("dump", help="print stored customers, then events, as JSON lines")
    dump.add_argument("--db", required=True, help="SQLite file written by serve")
    dump.add_argument(
        "--table", choices=("all", "customers", "events"), default="all", help="what to print"
    )
    return parser


def main(argv: list[str] | None = None, *, prog: str = PROG) -> int:
    """Run the sandbox command line; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in ("serve", "dump", "-h", "--help"):
        args_list.insert(0, "serve")
    parser = build_parser(prog)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse already printed why
        return int(exc.code or 0)
    if args.command == "dump":
        return _dump(Path(args.db), args.table)
    try:
        schema = load_schema(args.schema)
        changes = {k: getattr(args, k) for k in ACCOUNT_OPTIONS if getattr(args, k) is not None}
        if changes:
            schema = schema.replace(**changes)
        faults = Faults(
            seed=args.fault_seed,
            latency_ms=args.latency_ms,
            retry_after=args.retry_after,
            stall_s=args.stall_s,
            late_apply_s=args.late_apply_s,
            down_after=args.down_after,
            drop_after_ok=args.drop_after_ok,
            **parse_fault_specs(args.fault),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve(
        schema,
        db=args.db,
        faults=faults,
        host=args.host,
        port=args.port,
        quiet=args.quiet,
        log=stderr_log if args.verbose else None,
    )


def serve(
    schema: Schema,
    *,
    db: str | os.PathLike[str] | None = None,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    port: int = SANDBOX_PORT,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT."""
    tmpdir = None
    if db is None:
        tmpdir = tempfile.mkdtemp(prefix="dmsandbox-")
        db = Path(tmpdir) / "sandbox.db"
    try:
        try:
            store = Store(db, schema.primary_keys)
        except Exception as exc:
            print(f"error: cannot open the database {os.fspath(db)}: {exc}", file=sys.stderr)
            return 2
        try:
            server = SandboxServer(schema, store, faults, log=log)
            return asyncio.run(_serve(server, host, port, os.fspath(db), quiet))
        finally:
            store.close()
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


async def _serve(server: SandboxServer, host: str, port: int, db: str, quiet: bool) -> int:
    try:
        bound = await server.start(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # handlers first: whoever reads the line below may send SIGTERM at once
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}"
    print(f"sandbox listening on {url} (db: {db})", flush=True)
    print("\n".join(accepted_lines(server.schema, url, env_secrets(os.environ))), flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.shutdown()
    if not quiet:
        s = server.stats
        customers, events = server.store.counts()
        print(
            f"sandbox stopped: {s.requests} requests, {customers} customers, {events} events",
            file=sys.stderr,
            flush=True,
        )
    return 0


def accepted_lines(schema: Schema, url: str, operator: list[str]) -> list[str]:
    """What ``serve`` prints after its first line: the schema's SECRETs (demo values: shown),
    how many ``operator`` SECRETs (``DMART_SANDBOX_SECRETS``: never shown) it accepts too,
    the commands that send to it, and the Open API's (demo) keys to read back with."""
    demo = [s for s in schema.secrets if s not in operator]
    lines = []
    if demo:
        label = (
            "SECRET (the schema's demo value)"
            if len(demo) == 1
            else ("SECRETs (the schema's demo values)")
        )
        lines.append(f"accepted {label}: {', '.join(demo)}")
    if operator:
        n = len(dict.fromkeys(operator))
        lines.append(f"accepted {n} SECRET{'s' if n > 1 else ''} from {SECRETS_ENV} (not shown)")
    lines.append("send to it with:")
    secret = shlex.quote(demo[0]) if demo else f"<a SECRET of {SECRETS_ENV}>"
    lines.append(f"  export DMART_SECRET={secret}")
    lines.append(f"  dmimport run CONFIG FILE --base-url {url}")
    if schema.openapi_keys:  # demo values, like the schema's SECRETs
        key, secret = next(iter(schema.openapi_keys.items()))
        lines.append("read back with (openapi.base_url: the same URL):")
        lines.append(
            f"  export DMIMPORT_OPENAPI_KEY={shlex.quote(key)} "
            f"DMIMPORT_OPENAPI_SECRET={shlex.quote(secret)}"
        )
        lines.append(f"  dmimport verify CONFIG RUN_ID --sample 100 --openapi-url {url}")
    return lines


def _dump(db: Path, table: str) -> int:
    try:
        rows: list[dict[str, Any]] = []
        if table in ("all", "customers"):
            rows += read_customers(db)
        if table in ("all", "events"):
            rows += read_events(db)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # sqlite3.DatabaseError and friends: not a sandbox database
        print(f"error: {db} is not a sandbox database ({exc})", file=sys.stderr)
        return 2
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    out = getattr(sys.stdout, "buffer", None)
    if out is not None:  # UTF-8 whatever the locale says
        sys.stdout.flush()
        out.write(text.encode("utf-8"))
        out.flush()
    else:
        sys.stdout.write(text)
    return 0
