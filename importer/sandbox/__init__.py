"""A local server implementing the ingest API contract, for tests, benchmarks and dry runs.

::

    with Sandbox() as sb:                       # thread mode; process=True for its own core
        client = Client(sb.secret, sb.url)
        client.user({"phone": "13800000000"})
        sb.customers()                          # [{"id": 1, "properties": {...}}]

    Sandbox(batch_errors="store_valid", max_batch_rows=500)   # account settings (Schema keys)

Command line: ``python -m importer.sandbox [serve|dump] ...`` (``main``). docs/sandbox.md has
the details: options, schema file, check order, faults, stats, dump.
"""

from .command import main
from .faults import FaultPlan, Faults
from .harness import Sandbox, SandboxError
from .rules import ImportCheck, check, check_auth, check_import
from .schema import Schema, load_schema
from .server import SandboxServer
from .store import Store

__all__ = [
    "FaultPlan",
    "Faults",
    "ImportCheck",
    "Sandbox",
    "SandboxError",
    "SandboxServer",
    "Schema",
    "Store",
    "check",
    "check_auth",
    "check_import",
    "load_schema",
    "main",
]
