"""``python -S bench/spawn.py RESULT CMD...``: run CMD as this process's only child and write
its own resource usage to the file RESULT (JSON), then exit with its exit code.

Why a middleman: a child's ``ru_maxrss`` starts from the peak RSS of the process it was forked
from (Linux carries the old address space's high-water mark over ``exec``), so a command
started straight from the benchmark, which holds generated data and client state, reports the
benchmark's peak when its own is smaller. This wrapper is a fresh, small interpreter (``-S``:
no site-packages), so what its child reports is the child's own peak.

Standard library only, nothing but ``os``, ``sys``, ``time`` and ``json``: it must stay small.
"""

import json
import os
import sys
import time


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    except OSError as exc:
        with open(result, "w") as f:
            json.dump({"error": f"cannot start {cmd[0]}: {exc.strerror}"}, f)
        return 127
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as f:
        json.dump(
            {
                "pid": pid,
                "returncode": code,
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
            },
            f,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
