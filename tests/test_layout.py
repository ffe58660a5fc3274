"""The package's shape: which modules the run path loads, and which concepts are defined once."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import importer
from importer.config import Config, RetryOptions
from importer.protocol import DEFAULT_BASE_URL, DEFAULT_HEADERS, KINDS, Kind


def test_the_run_path_does_not_import_requests() -> None:
    # a fresh interpreter: the test session itself has long imported requests (the SDK tests)
    code = (
        "import sys, importer.api, importer.pipeline\n"
        "bad = sorted(m for m in sys.modules if m == 'requests' or m == 'importer.client')\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _constants_outside(module: str) -> Iterator[tuple[str, ast.AST]]:
    """Every node of importer's source outside ``module``, with the file it is in."""
    root = Path(importer.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == module:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            yield rel, node


def test_the_wire_vocabulary_is_defined_once_in_protocol() -> None:
    kinds = set(get_args(Kind))
    assert set(KINDS) == kinds
    twins = []
    for rel, node in _constants_outside("protocol.py"):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if values == kinds and len(node.elts) == len(kinds):
                twins.append(f"{rel}:{node.lineno}: the set of kinds")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == DEFAULT_BASE_URL:
                twins.append(f"{rel}:{node.lineno}: the default base URL")
            if node.value in (DEFAULT_HEADERS.secret, DEFAULT_HEADERS.timestamp):
                twins.append(f"{rel}:{node.lineno}: a header name")
    assert not twins, twins


def test_the_retry_settings_are_one_model() -> None:
    # the config's send.retry section is the model the sender and its processes use
    send = Config.model_fields["send"].annotation
    assert send is not None
    assert send.model_fields["retry"].annotation is RetryOptions
    twins = [
        f"{rel}:{node.lineno}"
        for rel, node in _constants_outside("config/model.py")
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id in ("initial_backoff_s", "retry_after_cap_s")
    ]
    assert not twins, twins
