"""``make demo``: start the bundled sandbox, import ``sample_data/`` with the bundled configs,
print each run's summary and a few report lines, then stop the sandbox.

The runs speak the platform's documented import API (the default, ``import-api``) to the
sandbox, whose address overrides the configs' ``target.base_url`` explicitly: nothing leaves
the machine, whatever the configs say.

A script of the checkout, not part of the installed package: it reads ``configs/`` and
``sample_data/`` next to it. Its reports go to ``build/demo/`` (``make clean`` removes them);
its ledger lives and dies with the sandbox's temporary database, since it records deliveries
to that sandbox only. The sandbox accepts a fake, public demo SECRET; real SECRETs only ever
come from the environment.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

from importer.api import run
from importer.cli import render_summary
from importer.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent

JOBS = [
    ("configs/customers.yaml", ["sample_data/customers.csv", "sample_data/customers_gb18030.csv"]),
    ("configs/order_events.yaml", ["sample_data/order_events.jsonl", "sample_data/orders.parquet"]),
    ("configs/delete_customers.yaml", ["sample_data/delete_customers.csv"]),
]


def main(report_dir: Path = ROOT / "build" / "demo") -> int:
    """Run the demo; the reports go to ``report_dir``. 0 unless a job failed worse than the
    sample files' bad rows (exit code 1) make it."""
    with tempfile.TemporaryDirectory() as tmp, Sandbox(db=Path(tmp) / "sandbox.db") as sandbox:
        os.environ["DMART_SECRET"] = sandbox.secret
        print(f"sandbox running at {sandbox.url}\n")
        worst = 0
        for config, files in JOBS:
            summary = run(
                ROOT / config,
                [ROOT / f for f in files],
                overrides={
                    "target.base_url": sandbox.url,
                    "state.path": str(Path(tmp) / "state.db"),
                },
                report_dir=report_dir,
            )
            print(render_summary(summary))
            if summary.results_path is not None:
                _show_report(summary.results_path)
            print()
            worst = max(worst, summary.exit_code)
        stats = sandbox.stats()
        records = stats.get("items", {}).get("received", 0)
        print(
            f"sandbox now holds {len(sandbox.customers())} customers and "
            f"{len(sandbox.events())} events ({stats.get('requests', 0)} requests served, "
            f"carrying {records} records: customers and events go in batches, deletes one "
            "per request)"
        )
    print(
        "\nThe sample files contain a few bad rows on purpose, so exit code 1 is expected:"
        f" see the rejected lines above and the reports under {report_dir}"
    )
    return 0 if worst <= 1 else worst


def _show_report(path: Path, limit: int = 8) -> None:
    """Print the report's non-ok lines (the interesting ones), up to ``limit``."""
    with open(path, newline="", encoding="utf-8-sig") as fh:  # results.csv starts with a BOM
        rows = [r for r in csv.DictReader(fh) if r["status"] != "ok"]
    if not rows:
        return
    print(f"  not ok ({len(rows)}), from {path.name}:")
    for r in rows[:limit]:
        where = f"{Path(r['file']).name}:{r['line']}"
        code = r["errcode"] or "-"
        print(f"    {where:<28} {r['status']:<9} {code:<6} {r['errmsg']}")


if __name__ == "__main__":
    sys.exit(main())
