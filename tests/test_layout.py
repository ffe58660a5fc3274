"""The package's shape, checked: every import arrow points down (no cycle; the shared
vocabulary at the bottom; no stage reaches up to what drives it), the run path loads neither
``requests`` nor the ``init`` wizard, no module or class grows past what a newcomer can read,
tests use only public names, and concepts are defined once. docs/architecture.md describes the
layout these tests hold in place."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

import importer
from importer.config import Config, RetryOptions
from importer.protocol import DEFAULT_BASE_URL, DEFAULT_HEADERS, KINDS, Kind

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "importer"

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 250

# the shared vocabulary: imports nothing but itself and the standard library
BOTTOM = {
    "importer.atomic",
    "importer.errcodes",
    "importer.errors",
    "importer.outcomes",
    "importer.exitcodes",
    "importer.secrets",
    "importer.protocol",
    # the Open API's access-sign as the contract defines it (a known vector checked against
    # openssl in tests/test_verify.py keeps both ends from erring alike)
    "importer.opensign",
}
# the stages and their settings: they never reach up to what wires or drives them
STAGES = ("importer.config", "importer.load", "importer.map", "importer.send", "importer.report",
          "importer.ledger")  # fmt: skip
ABOVE_STAGES = ("importer.job", "importer.pipeline", "importer.api", "importer.cli",
                "importer.init", "importer.client", "importer.previewer", "importer.feed",
                "importer.quota", "importer.producer", "importer.outputs",
                "importer.progress", "importer.openapi", "importer.readback",
                "importer.cli_verify", "importer.cli_prepare", "importer.spark",
                "importer.dask")  # fmt: skip
# the optional engines (extras spark, dask): only their own modules may import them
ENGINE_MODULES = ("importer.spark", "importer.dask")
ENGINE_PACKAGES = {"pyspark", "py4j", "dask", "distributed"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import executed at run time, at any depth (a late import inside a function is
    still an arrow), except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _edges() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [
                    f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem
                    for a in node.names
                ]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _under(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(_edges()) == []


def test_the_shared_vocabulary_imports_only_itself() -> None:
    graph = _edges()
    assert set(graph) >= BOTTOM, sorted(BOTTOM - set(graph))
    wrong = {m: sorted(graph[m] - BOTTOM) for m in BOTTOM if graph[m] - BOTTOM}
    assert wrong == {}


def test_stages_never_import_what_drives_them() -> None:
    graph = _edges()
    wrong = {
        m: sorted(t for t in targets if _under(t, ABOVE_STAGES) or t == "importer")
        for m, targets in graph.items()
        if _under(m, STAGES)
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_sandbox_speaks_only_the_shared_vocabulary() -> None:
    # the stand-in platform must not share the importer's checks, or both would err alike
    graph = _edges()
    wrong = {
        m: sorted(t for t in targets if not (_under(t, {"importer.sandbox"}) or t in BOTTOM))
        for m, targets in graph.items()
        if _under(m, {"importer.sandbox"})
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_stages_are_packages() -> None:
    for stage in STAGES:
        assert (ROOT / Path(*stage.split(".")) / "__init__.py").is_file(), stage


def test_no_module_is_longer_than_a_newcomer_can_read() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_class_is_longer_than_a_newcomer_can_read() -> None:
    long: dict[str, int] = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    long[f"{name}.{node.name}"] = size
    assert long == {}


def test_a_run_loads_neither_requests_nor_the_init_wizard(tmp_path: Path) -> None:
    """The run path (library and CLI) does not pay for the single-call SDK or ``init``."""
    script = textwrap.dedent(
        """
        import sys
        import importer
        import importer.api
        import importer.cli
        import importer.pipeline
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] == "requests" or m.startswith(("importer.init", "importer.client"))
        )
        print(loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_the_engine_modules_import_an_engine() -> None:
    """pyspark and dask are optional extras: a module outside importer.spark and importer.dask
    that imported one, even late inside a function, would fail where the extra is not
    installed."""
    wrong = []
    for name, path in _modules().items():
        if _under(name, ENGINE_MODULES):
            continue
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                targets = [] if node.level else [node.module or ""]
            wrong += [f"{name}: {t}" for t in targets if t.split(".")[0] in ENGINE_PACKAGES]
    assert wrong == []


def test_importing_importer_loads_no_engine(tmp_path: Path) -> None:
    """``import importer``, and every module of it but the engines', stays light: neither
    pyspark (with its JVM gateway) nor dask is loaded, even where the extras are installed."""
    modules = sorted(
        name
        for name in _modules()
        if not _under(name, ENGINE_MODULES) and not name.endswith("__main__")
    )
    assert "importer" in modules and len(modules) > 100
    script = textwrap.dedent(
        f"""
        import importlib
        import sys
        for name in {modules!r}:
            importlib.import_module(name)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {sorted(ENGINE_PACKAGES)!r}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _public_importer_names(tree: ast.Module) -> tuple[set[str], list[tuple[int, str]]]:
    """Names a test binds to dmimport modules or objects, and ``from importer... import _x``."""
    bound: set[str] = set()
    private: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "importer":
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "importer":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.append((node.lineno, alias.name))
                bound.add(alias.asname or alias.name)
    return bound, private


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("*.py")), ids=lambda p: p.name)
def test_tests_use_only_public_names(path: Path) -> None:
    """A test that reaches a private name pins the code's insides: block sizes, engine
    switches and counters are options and public counters instead."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound, private = _public_importer_names(tree)
    for node in ast.walk(tree):
        chain = node
        while isinstance(chain, ast.Attribute):
            chain = chain.value
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(chain, ast.Name)
            and chain.id in bound
        ):
            private.append((node.lineno, ast.unparse(node)))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name | ast.Attribute)
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
        ):
            target = node.args[0]
            while isinstance(target, ast.Attribute):
                target = target.value
            if isinstance(target, ast.Name) and target.id in bound:
                private.append((node.lineno, f"setattr(..., {node.args[1].value!r})"))
    assert private == []


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
