"""Reading spec files: strict YAML (duplicate keys refused), errors with line numbers."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from forkscale.core.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise SpecError(
                    "", f"line {line}: duplicate key {key_node.value!r} (first at line {seen[key_node.value]})"
                )
            seen[key_node.value] = line
    loader.flatten_mapping(node)
    try:
        return dict(loader.construct_pairs(node))
    except TypeError:
        raise SpecError("", f"line {node.start_mark.line + 1}: a mapping key must be a plain value") from None


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_file(path: str | os.PathLike[str]) -> tuple[object, Path]:
    """(parsed YAML, the file's directory) — a missing or unreadable file is a SpecError."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("", f"{file}: cannot read: {exc}") from None
    return parse_yaml(text, name=str(file)), file.resolve().parent


def parse_yaml(text: str, *, name: str = "<spec>") -> object:
    """YAML text to plain data; syntax errors become SpecError("") with the line number."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError("", f"{name}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError("", f"{name}: YAML error: {exc}") from None
