"""Reading a config file: bounded bytes, UTF-8, bounded YAML, and each key's line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, ConfigProblem
from ..load import EXTENSIONS

#: a config is a few KB; a larger file is refused before YAML reads it
MAX_CONFIG_BYTES = 1024**2
#: mappings and lists inside one another; a config needs four or five levels
MAX_YAML_DEPTH = 100
#: nodes (keys, values, items) of the document once every alias is expanded
MAX_YAML_NODES = 100_000


def read_yaml(path: Path) -> tuple[Any, dict[tuple[str, ...], int], list[ConfigProblem]]:
    """The YAML document at ``path``, the line of each key path, and its duplicate keys.

    A file that cannot be read, is too large, is not UTF-8 or is not YAML is a ConfigError.
    """
    source = str(path)
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    if suffix not in (".json", ".txt") and suffix in EXTENSIONS:  # a JSON config is YAML too
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    f"{path.name} is an input file ({suffix}), not a YAML config",
                    "the config comes first: dmimport run CONFIG FILES",
                )
            ],
            source=source,
        )
    try:
        with open(path, "rb") as fh:
            # read one byte past the bound: /dev/zero or a wrong multi-GB file stops here
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                [
                    ConfigProblem(
                        "",
                        f"the file is larger than {MAX_CONFIG_BYTES // 1024**2} MiB; "
                        "a config is a few KB",
                        "is this the right file?",
                    )
                ],
                source=source,
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(_not_utf8(raw, exc), source=source) from None
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=source) from None
    try:
        data, node = _load_yaml(text)
        lines, duplicates = _key_lines(node)
    except _YamlBomb as exc:
        problem = ConfigProblem("", exc.problem, exc.hint, exc.line)
        raise ConfigError([problem], source=source) from None
    except yaml.reader.ReaderError as exc:
        # a character YAML refuses anywhere (NUL, most control characters): PyYAML's message
        # names an offset into "<unicode string>" over two lines
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    f"character U+{exc.character:04X} at column {column} cannot be in YAML "
                    "(special characters are not allowed)",
                    "remove it; a config is plain text",
                    line,
                )
            ],
            source=source,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    f"YAML syntax error: {what}",
                    "check indentation, colons and quotes around this line",
                    mark.line + 1 if mark is not None else None,
                )
            ],
            source=source,
        ) from None
    return data, lines, duplicates


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> list[ConfigProblem]:
    """Why a config's bytes are not UTF-8, with the line of the first bad byte."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return [ConfigProblem("", "the file is UTF-16 text (Windows Notepad's 'Unicode')",
                              "save it as UTF-8")]  # fmt: skip
    line = raw.count(b"\n", 0, exc.start) + 1
    return [
        ConfigProblem(
            "",
            f"byte 0x{raw[exc.start]:02x} is not UTF-8",
            "a config is UTF-8 text: save it as UTF-8",
            line,
        )
    ]


class _YamlBomb(Exception):
    """A YAML document too deep or too large (after aliases) to be a config."""

    def __init__(self, problem: str, hint: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.line = mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds on nesting depth and on the expanded size.

    The composer recurses once per level (a 50,000-deep ``[[[...]]]`` is a RecursionError)
    and an alias is a reference that every later walk expands (``_key_lines``, the deep copy,
    pydantic): nine levels of nine aliases ("billion laughs") are 9**9 nodes. Both are
    refused while composing, before anything walks the document.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0  # expanded nodes composed so far
        self._size: dict[int, int] = {}  # id(node) -> its expanded size, once complete

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            size = self._size.get(id(node))
            if size is None:
                raise _YamlBomb(
                    f"alias *{event.anchor} is used inside its own anchor (a structure that "
                    "contains itself)",
                    "write the values out instead of the alias",
                    event.start_mark,
                )
            self._count(size, f"alias *{event.anchor}", event.start_mark)
            return node
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlBomb(
                f"nesting deeper than {MAX_YAML_DEPTH} levels",
                "a config needs a few levels; is this the right file?",
                mark,
            )
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, "this value", mark)
        self._size[id(node)] = self._nodes - before
        return node

    def _count(self, size: int, what: str, mark: Any) -> None:
        self._nodes += size
        if self._nodes > MAX_YAML_NODES:
            raise _YamlBomb(
                f"{what} expands the document past {MAX_YAML_NODES:,} values "
                "(aliases repeating aliases)",
                "a config needs a few hundred; use fewer aliases (*name)",
                mark,
            )


def _load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(the data, the node tree) of one YAML document, within the bounds above."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        _cells_as_written(node)
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


#: YAML 1.1 reads some plain scalars as numbers, booleans or dates no one meant: ``0755`` is
#: octal 493, ``10:30`` is 630 (base 60), ``0x1F`` is 31, ``yes`` is true, ``1.10`` is 1.1.
_RETYPED = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool", "timestamp"))
#: a column's keys that hold a cell's text or a header, read as the text written
_CELL_KEYS = ("from", "value", "default")


def _cells_as_written(root: yaml.Node | None) -> None:
    """Retag the plain scalars of ``columns.X`` (the shorthand) and of its ``from``,
    ``value`` and ``default`` as text, so a constant or a default is the text written and
    converted by the column's own ``type`` like a cell (``1_000``, YAML's own digit
    grouping, keeps YAML's reading)."""
    if not isinstance(root, yaml.MappingNode):
        return
    for key, columns in root.value:
        if key.value != "columns" or not isinstance(columns, yaml.MappingNode):
            continue
        for _, spec in columns.value:
            scalars = [spec] if isinstance(spec, yaml.ScalarNode) else []
            if isinstance(spec, yaml.MappingNode):
                scalars = [v for k, v in spec.value if k.value in _CELL_KEYS]
            for node in scalars:
                if (
                    isinstance(node, yaml.ScalarNode)
                    and node.style is None
                    and node.tag in _RETYPED
                    and "_" not in node.value
                ):
                    node.tag = "tag:yaml.org,2002:str"


def _key_lines(
    node: yaml.Node | None,
) -> tuple[dict[tuple[str, ...], int], list[ConfigProblem]]:
    """Map every key path to the 1-based line of its key; also report duplicate keys."""
    lines: dict[tuple[str, ...], int] = {}
    duplicates: list[ConfigProblem] = []

    def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                here = (*path, key)
                line = key_node.start_mark.line + 1
                if key in seen and key != "<<":
                    duplicates.append(
                        ConfigProblem(
                            ".".join(here), f"duplicate key '{key}'", "keep only one", line
                        )
                    )
                seen.add(key)
                lines.setdefault(here, line)
                walk(value_node, here)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                here = (*path, str(i))
                lines.setdefault(here, item.start_mark.line + 1)
                walk(item, here)

    if node is not None:
        walk(node, ())
    return lines, duplicates
