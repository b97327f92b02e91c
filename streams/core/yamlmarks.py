"""A YAML loader that remembers the line of every mapping and list, for error messages."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hip.errors import ConfigError


class LineDict(dict[Any, Any]):
    """A YAML mapping that knows its own line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list[Any]):
    """A YAML sequence that knows its line."""

    line: int = 0


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(f"duplicate key {key!r}", file=str(loader.name),
                              line=key_node.start_mark.line + 1, field=str(key))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load(path: Path) -> Any:
    """Parse a YAML file keeping line numbers; syntax errors become ConfigError with the line."""
    try:
        with path.open(encoding="utf-8") as fh:
            loader = _Loader(fh)
            loader.name = str(path)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"invalid YAML: {exc.problem}", file=str(path),
                          line=mark.line + 1 if mark else None) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None


def line_of(node: Any, key: Any = None) -> int | None:
    """Line of a loaded node, or of one of its keys."""
    if key is not None and isinstance(node, LineDict) and key in node.key_lines:
        return node.key_lines[key]
    line = getattr(node, "line", 0)
    return line or None
