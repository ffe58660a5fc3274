"""dmimport: bulk-import customer and event files into the Dmartech customer-data platform.

The Python API (docs/python-api.md)::

    import importer

    summary = importer.run("configs/customers.yaml", ["exports/customers.csv"])
    print(summary.counts, summary.exit_code)

``run``, ``arun``, ``validate``, ``preview``, ``retry``, ``list_runs``, ``quota_today`` and
``load_config`` are ``importer.api``'s; ``outcomes_of`` and ``OUTCOME_SCHEMA`` (one Arrow batch's
outcomes, for engines) ``importer.plan``'s; ``Client`` and ``SDK`` the single-call SDK
(``importer.client``, over ``requests``); the exceptions ``importer.errors``'s. Each name is
imported on first use, so ``import importer`` loads neither the pipeline nor ``requests``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        arun,
        list_runs,
        load_config,
        preview,
        quota_today,
        retry,
        run,
        source,
        validate,
        verify,
    )
    from .client import SDK, Client
    from .config import Config
    from .errors import (
        ConfigError,
        DiskFullError,
        DmImportError,
        HeldError,
        InputIncomplete,
        Interrupted,
        LedgerError,
        LoadError,
        LockedError,
        NothingToRetry,
        OpenApiError,
        OpenApiForbidden,
        QuotaError,
        TruncatedInput,
        UsageError,
    )
    from .outcomes import Status
    from .plan import OUTCOME_SCHEMA, outcomes_of
    from .readback import VerifySummary
    from .report import RunSummary

__version__ = "0.1.0"

__all__ = [
    "OUTCOME_SCHEMA",
    "SDK",
    "Client",
    "Config",
    "ConfigError",
    "DiskFullError",
    "DmImportError",
    "HeldError",
    "InputIncomplete",
    "Interrupted",
    "LedgerError",
    "LoadError",
    "LockedError",
    "NothingToRetry",
    "OpenApiError",
    "OpenApiForbidden",
    "QuotaError",
    "RunSummary",
    "Status",
    "TruncatedInput",
    "UsageError",
    "VerifySummary",
    "arun",
    "list_runs",
    "load_config",
    "outcomes_of",
    "preview",
    "quota_today",
    "retry",
    "run",
    "source",
    "validate",
    "verify",
]

#: the module that defines each public name that is not an exception (those are ``.errors``'s)
_HOMES = {
    "run": ".api",
    "source": ".api",
    "arun": ".api",
    "validate": ".api",
    "preview": ".api",
    "retry": ".api",
    "list_runs": ".api",
    "quota_today": ".api",
    "load_config": ".api",
    "verify": ".api",
    "VerifySummary": ".readback",
    "Config": ".config",
    "RunSummary": ".report",
    "Status": ".outcomes",
    "outcomes_of": ".plan",
    "OUTCOME_SCHEMA": ".plan",
    "Client": ".client",
    "SDK": ".client",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name, ".errors")
    if name not in __all__:
        raise AttributeError(f"module 'importer' has no attribute '{name}'")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
