"""Strict YAML loading for files that finance staff edit by hand.

PyYAML follows YAML 1.1, where several innocent-looking values silently change meaning
(``08:30`` is the integer 510, ``no``/``off`` are False, ``010`` is 8, duplicate keys keep the
last value). In a collection-letter config each of those is a wrong rule that nobody notices, so
this module loads YAML with its own scalar rules and checks, and keeps the position of every node
so later validation errors can say ``file:line:column``.

Scalar rules (plain, i.e. unquoted, scalars; quoted scalars are always strings):

* ``true``/``True``/``TRUE`` and ``false``/``False``/``FALSE`` are booleans (YAML 1.2 core).
  ``yes``, ``no``, ``on``, ``off``, ``y``, ``n`` (any case) are strings.
* ``null``/``Null``/``NULL``, ``~`` and an empty value are None.
* Integers are decimal only: ``[-+]?(0|[1-9][0-9]*)``. **Numbers with a leading zero (``01``,
  ``010``, ``000123``) stay strings**, deliberately stricter than YAML 1.2 (which reads ``010`` as
  10): Protheus customer codes (``000123``) and branch codes (``01``) are written unquoted and
  must keep their zeros. ``0o10``, ``0x1F``, ``0b1``, ``1_000`` and base-60 ``08:30`` are strings.
* Floats need a decimal point: ``1.5``, ``-0.25``, ``.5``, ``2.5e3``; also ``.inf``/``.nan``.
  ``1e3`` without a point stays a string (an alphanumeric code such as ``12E34`` must not become a
  number), as do ``1,5`` and ``01.5``.
* Dates (``2025-03-05``) stay strings; the schema layer converts them.

Other checks: duplicate keys in one mapping, non-string keys, explicit tags other than the core
ones (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!map``, ``!!seq``), recursive
aliases and alias bombs are errors. Anchors, aliases and merge keys (``<<``) are allowed; keys
written in the mapping override merged ones, as YAML specifies.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Location", "YamlDocument", "YamlError", "load_yaml"]

Location = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"

#: Upper bound on nodes built, so an "alias bomb" cannot exhaust memory.
MAX_NODES = 200_000

_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT_RE = re.compile(
    r"[-+]?(?:(?:0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z"
    r"|[-+]?\.(?:inf|Inf|INF)\Z"
    r"|\.(?:nan|NaN|NAN)\Z"
)
_BOOL_RE = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_NULL_RE = re.compile(r"(?:~|null|Null|NULL|)\Z")


class YamlError(Exception):
    """A YAML file could not be loaded; ``str()`` is ``path:line:col: message`` (1-based)."""

    def __init__(
        self, path: Path | str, message: str, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(path, message, line, column)
        self.path = Path(path)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"{_where(self.path, self.line, self.column)}: {self.message}"


def _where(path: Path, line: int | None, column: int | None) -> str:
    if line is None:
        return str(path)
    if column is None:
        return f"{path}:{line}"
    return f"{path}:{line}:{column}"


@dataclass(frozen=True)
class YamlDocument:
    """Loaded data (plain Python values) plus the source position of every node."""

    path: Path
    data: Any
    #: (line, column), 1-based, per location; filled by load_yaml, never part of ``data``.
    positions: Mapping[Location, tuple[int, int]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def locate(self, loc: Location) -> tuple[int, int] | None:
        """(line, column) of the node at ``loc``, e.g. ``("layouts", 2, "selection")``.

        If ``loc`` does not exist (a missing key, or extra trailing parts such as a pydantic
        union tag), the position of its longest existing prefix is returned, which is the closest
        parent mapping or list - the document root for a missing top-level key. For a mapping
        value that is a block (indented on the lines below its key), and for aliases, the
        position is the key's / the alias's, since that is where a person looks. None only when
        the document carries no positions.
        """
        for end in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:end]))
            if pos is not None:
                return pos
        return None

    def where(self, loc: Location) -> str:
        """``"path:line:col"`` for ``loc`` (see :meth:`locate`), or just ``"path"``."""
        pos = self.locate(loc)
        if pos is None:
            return str(self.path)
        return _where(self.path, *pos)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like resolvers; used only to compose the node graph.

    Class-level tables are replaced here (not mutated), so the global SafeLoader is untouched.
    """

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """Give each alias use its own position (a shallow copy sharing the anchored content)."""
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark
            node = copy.copy(super().compose_node(parent, index))
            node.start_mark = mark
            return node
        return super().compose_node(parent, index)


_StrictLoader.add_implicit_resolver(_BOOL, _BOOL_RE, list("tTfF"))
_StrictLoader.add_implicit_resolver(_INT, _INT_RE, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+.0123456789"))
_StrictLoader.add_implicit_resolver(_NULL, _NULL_RE, ["~", "n", "N", ""])
_StrictLoader.add_implicit_resolver(_MERGE, re.compile(r"<<\Z"), ["<"])


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns the composed node graph into plain data, recording positions by location."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.positions: dict[Location, tuple[int, int]] = {}
        self.count = 0
        self.active: set[int] = set()  # ids of collections being built (cycle check)

    def error(self, node: Node, message: str) -> YamlError:
        line, column = _pos(node)
        return YamlError(self.path, message, line, column)

    def build(self, node: Node, loc: Location, pos: tuple[int, int] | None = None) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            message = f"too many values (over {MAX_NODES}); are aliases repeating each other?"
            raise self.error(node, message)
        self.positions[loc] = pos or _pos(node)
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        key = id(node.value)
        if key in self.active:
            raise self.error(node, "alias refers to a value that contains itself")
        self.active.add(key)
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    raise self.error(
                        node, f"unsupported tag {_tag(node.tag)!r} on a list; remove it"
                    )
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _MAP:
                    raise self.error(
                        node, f"unsupported tag {_tag(node.tag)!r} on a mapping; remove it"
                    )
                result: dict[str, Any] = {}
                self.fill_mapping(node, loc, result)
                return result
            raise self.error(node, "unsupported YAML node")  # pragma: no cover
        finally:
            self.active.discard(key)

    def scalar(self, node: ScalarNode) -> Any:
        value, tag = node.value, node.tag
        if tag == _STR:
            return value
        if tag == _NULL and _NULL_RE.match(value):
            return None
        if tag == _BOOL and _BOOL_RE.match(value):
            return value.lower() == "true"
        if tag == _INT and _INT_RE.match(value):
            return int(value)
        if tag == _FLOAT and _FLOAT_RE.match(value):
            if value[-1].isalpha():  # .inf, -.Inf, .NaN: Python spells them without the dot
                return float(value.replace(".", ""))
            return float(value)
        if tag in (_NULL, _BOOL, _INT, _FLOAT):
            raise self.error(node, f"{value!r} is not a valid {_tag(tag)} value")
        if tag == _MERGE:
            raise self.error(node, "'<<' (merge key) can only be used as a mapping key")
        raise self.error(
            node, f"unsupported tag {_tag(tag)!r}; remove it or put the value in quotes"
        )

    def key_of(self, node: Node) -> str:
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return node.value
        if isinstance(node, ScalarNode):
            raise self.error(
                node,
                f'mapping key {node.value!r} must be text; put it in quotes ("{node.value}")',
            )
        raise self.error(node, "mapping key must be plain text, not a list or mapping")

    def value_pos(self, key_node: Node, value_node: Node) -> tuple[int, int]:
        """Position of a mapping entry: its value's if on the key's line, else the key's."""
        if value_node.start_mark.line == key_node.start_mark.line:
            return _pos(value_node)
        return _pos(key_node)

    def fill_mapping(self, node: MappingNode, loc: Location, result: dict[str, Any]) -> None:
        first_seen: dict[str, Node] = {}
        merges: list[Node] = []
        explicit: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                name = "<<"
            else:
                name = self.key_of(key_node)
            if name in first_seen:
                first = first_seen[name].start_mark.line + 1
                raise self.error(key_node, f"duplicate key {name!r} (first at line {first})")
            first_seen[name] = key_node
            if name == "<<" and key_node.tag == _MERGE:
                merges.append(value_node)
            else:
                explicit.append((name, key_node, value_node))

        # Merged mappings first, later sources first, so earlier sources and explicit keys win.
        for source in reversed(self.merge_sources(merges)):
            self.fill_mapping(source, loc, result)
        for name, key_node, value_node in explicit:
            child = (*loc, name)
            if name in result:  # overriding a merged key: forget its old positions
                self.forget(child)
            result[name] = self.build(value_node, child, self.value_pos(key_node, value_node))

    def merge_sources(self, merges: list[Node]) -> list[MappingNode]:
        sources: list[MappingNode] = []
        for value in merges:
            items = value.value if isinstance(value, SequenceNode) else [value]
            for item in items:
                if not isinstance(item, MappingNode) or item.tag != _MAP:
                    raise self.error(
                        item, "merge key '<<' needs a mapping (or a list of mappings) as value"
                    )
                key = id(item.value)
                if key in self.active:
                    raise self.error(item, "alias refers to a value that contains itself")
                sources.append(item)
        return sources

    def forget(self, loc: Location) -> None:
        n = len(loc)
        for stale in [k for k in self.positions if k[:n] == loc]:
            del self.positions[stale]


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YamlError(path, "file not found") from None
    except IsADirectoryError:
        raise YamlError(path, "is a directory, not a YAML file") from None
    except PermissionError:
        raise YamlError(path, "permission denied: cannot read the file") from None
    except OSError as exc:
        raise YamlError(path, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1  # byte column within the line
        raise YamlError(
            path,
            f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it with UTF-8 encoding",
            line,
            column,
        ) from None


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def load_yaml(path: Path) -> YamlDocument:
    """Load one YAML document strictly; raise :class:`YamlError` naming file:line:col."""
    path = Path(path)
    text = _read_text(path)
    loader: _StrictLoader | None = None
    try:
        try:
            loader = _StrictLoader(text)  # checks for unprintable characters
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            message = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.context_mark and exc.context_mark is not mark:
                message += f" ({exc.context} at line {exc.context_mark.line + 1})"
            if mark is None:
                raise YamlError(path, message) from None
            raise YamlError(path, message, mark.line + 1, mark.column + 1) from None
        except yaml.reader.ReaderError as exc:
            line, column = _line_col(text, exc.position)
            char = exc.character
            code = ord(char) if isinstance(char, str) else char
            raise YamlError(
                path, f"unacceptable character #x{code:04x}: {exc.reason}", line, column
            ) from None
        except yaml.YAMLError as exc:  # pragma: no cover - other PyYAML errors
            raise YamlError(path, str(exc)) from None
        except RecursionError:
            raise YamlError(path, "nesting too deep") from None
    finally:
        if loader is not None:
            loader.dispose()

    # No document, or only "---" / comments: nothing a config could mean.
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL and root.value == ""):
        raise YamlError(path, "empty file")

    builder = _Builder(path)
    try:
        data = builder.build(root, ())
    except RecursionError:
        raise YamlError(path, "nesting too deep") from None
    return YamlDocument(path=path, data=data, positions=builder.positions)
