"""Every Python snippet in README.md and docs/ runs, against the sandbox.

Each ```python block is run as a script in a fresh interpreter, in a scratch folder holding a
copy of ``configs/`` and ``sample_data/``, with ``DMART_SECRET`` set to the sandbox's SECRET.
The sandbox stands in for the platform at the address the samples use
(``http://127.0.0.1:8080``): that address is replaced by the sandbox's own, in the snippet and in
the copied configs. A snippet that fails fails the test with its stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from importer.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_URL = "http://127.0.0.1:8080"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _snippets() -> list[tuple[str, int, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((str(doc.relative_to(ROOT)), line, match.group(1)))
    return found


SNIPPETS = _snippets()
#: a snippet that imports an engine (the extras spark, dask) starts one: marked ``engine`` (so
#: ``make test-fast`` leaves it out), on the worker of that engine's other tests, given longer
ENGINE_TIMEOUT_S = 300


def _engine(code: str) -> str | None:
    for engine in ("spark", "dask"):
        if re.search(rf"^\s*(import|from) importer\.{engine}\b", code, re.M):
            return engine
    return None


def _params() -> list[object]:
    params: list[object] = []
    for doc, line, code in SNIPPETS:
        engine = _engine(code)
        marks = (
            [
                pytest.mark.engine,
                pytest.mark.xdist_group(engine),
                pytest.mark.timeout(ENGINE_TIMEOUT_S + 30),
            ]
            if engine
            else []
        )
        params.append(pytest.param(doc, line, code, marks=marks, id=f"{doc}:{line}"))
    return params


def test_the_docs_have_python_snippets() -> None:
    # the README's library example at least; a broken fence would silently run nothing
    assert any(doc == "README.md" for doc, _, _ in SNIPPETS)
    assert len(SNIPPETS) >= 3


def test_engine_snippets_are_told_apart() -> None:
    # the engines' worked examples (docs/engines.md) are marked, the others are not (there,
    # the rejects-to-CSV example runs plan_table: no engine)
    engines = [_engine(code) for doc, _, code in SNIPPETS if doc == "docs/engines.md"]
    assert sorted(e or "" for e in engines) == ["", "dask", "spark"]
    assert all(_engine(code) is None for doc, _, code in SNIPPETS if doc == "README.md")


@pytest.mark.parametrize(("doc", "line", "code"), _params())
def test_doc_snippet_runs(doc: str, line: int, code: str, tmp_path: Path, sandbox: Sandbox) -> None:
    for folder in ("configs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    for config in (tmp_path / "configs").glob("*.yaml"):
        config.write_text(
            config.read_text(encoding="utf-8").replace(SAMPLE_URL, sandbox.url), encoding="utf-8"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMART_")}
    env["DMART_SECRET"] = sandbox.secret
    proc = subprocess.run(
        [sys.executable, "-c", code.replace(SAMPLE_URL, sandbox.url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=ENGINE_TIMEOUT_S if _engine(code) else 120,
    )
    assert proc.returncode == 0, f"{doc}:{line} failed:\n{proc.stderr}"
    assert sandbox.secret not in proc.stdout + proc.stderr
