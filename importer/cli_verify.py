"""``dmimport verify CONFIG RUN_ID --sample N [--min-match 0.99]``: parses its arguments, calls
``importer.verify``, prints what it found (docs/verify.md). Exit codes: 0, 9 below
``--min-match``, 2 for a usage or config problem (nothing sent), 3 for HTTP 403 (the Open API
refused the access-key or sign)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """The ``verify`` sub-command of ``dmimport``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "verify", help="read a sample of a run's ok rows back through the Open API and compare"
    )
    p.add_argument("config", help="job config (YAML)")
    p.add_argument("run_id", help="a run id from `dmimport runs`")
    p.add_argument("--sample", type=int, help="rows to look up (default: verify.sample, else 100)")
    p.add_argument(
        "--min-match",
        type=float,
        help="the share that must be found as sent, else exit 9 (default: verify.min_match, 0.99)",
    )
    p.add_argument("--report-dir", help="where the run's reports are (default: report.dir)")
    p.add_argument("--openapi-url", help="the Open API's base URL (openapi.base_url)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_verify(args: argparse.Namespace) -> int:
    """Run ``dmimport verify``; its exit code."""
    from .api import load_config, verify

    overrides = {"openapi.base_url": args.openapi_url} if args.openapi_url else None
    cfg = load_config(args.config, overrides=overrides)
    sample = args.sample if args.sample is not None else (cfg.verify.sample or 100)
    min_match = args.min_match if args.min_match is not None else cfg.verify.min_match
    summary = verify(
        args.config,
        args.run_id,
        sample=sample,
        min_match=min_match,
        overrides=overrides,
        report_dir=args.report_dir,
    )
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    else:
        print("\n".join(summary.lines()))
    return summary.exit_code


def verified(v: dict[str, Any]) -> str:
    """The ``verify`` line of a run's summary (``verify.sample``): ``summary.json``'s
    ``verify``."""
    if not v.get("checked"):  # every row unchanged, rejected or failed: none to look up
        return "nothing to look up: no row of this run was reported ok (0 requests)"
    return (
        f"{v['checked']:,} looked up: matched {v['matched']:,}, mismatched "
        f"{v['mismatched']:,}, not found {v['not_found']:,}, masked {v['masked']:,} "
        f"({v['share']:.1%}, min {v['min_match']:.1%}); {v['verify_csv']}"
    )
