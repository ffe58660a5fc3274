"""The package's shape: which modules the run path loads, and which concepts are defined once."""

from __future__ import annotations

import subprocess
import sys


def test_the_run_path_does_not_import_requests() -> None:
    # a fresh interpreter: the test session itself has long imported requests (the SDK tests)
    code = (
        "import sys, importer.pipeline\n"
        "bad = sorted(m for m in sys.modules if m == 'requests' or m == 'importer.client')\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
