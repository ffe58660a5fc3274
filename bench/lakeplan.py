"""``python -m bench.lakeplan ENGINE CONFIG DATA WORK``: one lake-side plan, measured in a
process of its own (figure ``plan``, bench/lake.py).

ENGINE is ``spark`` (``importer.spark`` on a ``local[2]`` session), ``dask`` (``importer.dask``
on a ``LocalCluster`` of 2 worker processes) or ``table`` (``importer.lake.plan_table`` and
``commit_table``, one process). In order: start the engine (timed on its own), plan DATA with
no state, commit as if the platform had accepted every row of the change set (a synthetic
results.csv naming each change-set row ``ok``), measure the state table's bytes on disk, plan
again against that state (the steady night: nothing changed, nothing to send), stop the engine.
Prints one JSON object."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Started = tuple[dict[str, Any], Callable[[], None]]


def _spark() -> Started:
    from pyspark.sql import SparkSession

    # the executors' Python must have dmimport: this interpreter (the default is the first
    # python3 on PATH)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("dmimport-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", "2g")
        # 2 cores: Spark's default of 200 shuffle partitions is 200 tasks per shuffle
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    session.range(1).count()  # the JVM and the first executor really started
    return {"spark": session}, session.stop


def _dask() -> Started:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster)

    def stop() -> None:
        client.close()
        cluster.close()

    return {"client": client}, stop


def _table() -> Started:
    return {}, lambda: None


def _functions(engine: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    if engine == "spark":
        import importer.spark as spark

        return spark.plan, spark.commit
    if engine == "dask":
        import importer.dask as dask

        return dask.plan, dask.commit
    from importer import load_config
    from importer.lake import commit_table, plan_table

    def plan(config: Path, data: Path, **kw: Any) -> Any:
        columns = load_config(config).source_columns()
        batches = pq.ParquetFile(data).iter_batches(batch_size=100_000, columns=columns)
        return plan_table(config, batches, source=str(data), **kw)

    return plan, commit_table


def write_results(changes: Path, path: Path) -> int:
    """A results.csv as ``dmimport run CONFIG changes/`` writes it when every row is ``ok``:
    one line per change-set row, named by its part file and 1-based row."""
    from importer.report import RESULT_COLUMNS

    files = sorted(p for p in changes.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    parts = []
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        parts.append(pa.table({"file": pa.array([str(f)] * n), "line": pa.array(range(1, n + 1))}))
    table = pa.concat_tables(parts) if parts else pa.table({"file": [], "line": []})
    n = table.num_rows
    cols = {c: pa.nulls(n, pa.string()) for c in RESULT_COLUMNS}
    cols |= {"file": table.column("file").cast(pa.string()), "line": table.column("line")}
    cols["status"] = pa.array(["ok"] * n, pa.string())
    pacsv.write_csv(pa.table(cols), path)
    return n


def tree_cpu_s() -> float:
    """CPU seconds of this process and every live process under it (Spark's JVM and its Python
    workers, Dask's nanny and worker processes), each with the children it reaped."""
    own = os.times()
    total = own.user + own.system + own.children_user + own.children_system
    ticks = os.sysconf("SC_CLK_TCK")
    stack, seen = [os.getpid()], set()
    while stack:
        pid = stack.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid in seen:
                    continue
                seen.add(kid)
                stack.append(kid)
                try:
                    fields = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # utime, stime, cutime, cstime
                total += sum(int(f) for f in fields[11:15]) / ticks
    return total


def state_bytes(state: Path) -> int:
    name = (state / "_CURRENT").read_text(encoding="utf-8").strip()
    return sum(p.stat().st_size for p in (state / name).rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    engine, config, data, work = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    t0 = time.perf_counter()
    kwargs, stop = {"spark": _spark, "dask": _dask, "table": _table}[engine]()
    out: dict[str, Any] = {"engine": engine, "start_s": time.perf_counter() - t0}
    try:
        plan, commit = _functions(engine)
        state = work / "state"
        t = time.perf_counter()
        first = plan(config, data, state=state, out=work / "plan", **kwargs)
        out["plan_s"] = time.perf_counter() - t
        out["plan"] = json.loads(first.to_json())
        results = work / "results.csv"
        out["results_rows"] = write_results(work / "plan" / "changes", results)
        t = time.perf_counter()
        done = commit(results, state, **kwargs)
        out["commit_s"] = time.perf_counter() - t
        out["commit"] = {
            "delivered": done.delivered,
            "state_rows": done.state_rows,
            "version": done.version,
        }
        out["state_bytes"] = state_bytes(state)
        t = time.perf_counter()
        again = plan(config, data, state=state, out=work / "replan", **kwargs)
        out["replan_s"] = time.perf_counter() - t
        out["replan"] = json.loads(again.to_json())
    finally:
        out["cpu_s"] = tree_cpu_s()
        t = time.perf_counter()
        stop()
        out["stop_s"] = time.perf_counter() - t
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
