"""Reading spec files: strict YAML (duplicate keys refused), errors with line numbers, bounded.

A spec is read only from a regular file (not a FIFO, a device or a directory, which would hang
or never end), at most `FORKSCALE_SPEC_MAX_BYTES` bytes (default 1 MiB; a real spec is a few
KB), as UTF-8 text without NUL bytes. The YAML may nest at most `MAX_DEPTH` levels (a spec needs
about 6) and may expand, aliases included, to at most `MAX_NODES` nodes, so neither deep nesting
(a RecursionError in the parser) nor an alias bomb ("billion laughs") gets through.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from forkscale.core.errors import SpecError

SPEC_MAX_BYTES_ENV = "FORKSCALE_SPEC_MAX_BYTES"
DEFAULT_SPEC_MAX_BYTES = 1 << 20
#: The most FORKSCALE_SPEC_MAX_BYTES may be raised to.
LIMIT_SPEC_MAX_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_SCALAR_DIGITS = 100
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one) and deep nesting."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._name = name

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise SpecError("", f"{self._name}: line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        """A scalar Python cannot hold (a 5,000-digit integer, the date 2024-13-45) names its line."""
        if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_SCALAR_DIGITS and \
                node.tag in (_INT_TAG, _FLOAT_TAG):
            raise SpecError("", f"{self._name}: line {node.start_mark.line + 1}: a number of {len(node.value)} "
                                f"characters; numbers in a spec have at most {MAX_SCALAR_DIGITS}")
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise SpecError("", f"{self._name}: line {node.start_mark.line + 1}: {one_line(str(exc))}") from None


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


def spec_max_bytes() -> int:
    """The size cap for a spec file: FORKSCALE_SPEC_MAX_BYTES, else 1 MiB."""
    raw = os.environ.get(SPEC_MAX_BYTES_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_SPEC_MAX_BYTES
    text = raw.strip()
    if not text.isdigit() or not 1 <= int(text) <= LIMIT_SPEC_MAX_BYTES:
        raise SpecError(SPEC_MAX_BYTES_ENV, f"must be a number of bytes between 1 and {LIMIT_SPEC_MAX_BYTES}, "
                                            f"not {text[:40]!r}")
    return int(text)


def read_bounded(file: Path, where: str, *, limit: int, what: str, hint: str = "") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a SpecError at `where`.

    Opened without blocking (a FIFO with no writer would hang the open) and checked with fstat
    on the open descriptor, so what is read is what was checked.
    """
    fd = open_nonblocking(file, where)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(where, f"{file} is {file_kind(info.st_mode)}; {what} must be a regular file")
        if info.st_size > limit:
            raise SpecError(where, f"{file} is {info.st_size} bytes; {what} may be at most {limit} bytes{hint}")
        data = read_fd(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SpecError(where, f"{file} grew past {limit} bytes while being read; {what} may be at most {limit} "
                               f"bytes{hint}")
    return data


def open_nonblocking(file: Path, where: str, *, shown: str | None = None) -> int:
    """A descriptor of `file` opened for reading without blocking (a FIFO with no writer would hang
    the open); a missing or unreadable file is a SpecError at `where` (`shown`: the name to print)."""
    try:
        return os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecError(where, f"{shown or file}: no such file") from None
    except OSError as exc:
        raise SpecError(where, f"{file}: cannot open: {exc.strerror or exc}") from None


def read_fd(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from `fd` (a regular file: reads never block)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', ... for messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def read_yaml_file(path: str | os.PathLike[str]) -> tuple[object, Path]:
    """(parsed YAML, the file's directory) — a missing, unreadable, odd or oversized file is a SpecError."""
    file = Path(path).expanduser()
    data = read_bounded(file, "", limit=spec_max_bytes(), what="a spec", hint=f" ({SPEC_MAX_BYTES_ENV})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError("", f"{file}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    return parse_yaml(text, name=str(file)), file.resolve().parent


def parse_yaml(text: str, *, name: str = "<spec>") -> object:
    """YAML text to plain data; syntax errors become SpecError("") with the line number."""
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise SpecError("", f"{name}: line {line}: contains a NUL byte; a spec is text")
    loader = _StrictLoader(text, name)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, name)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError("", f"{name}: YAML syntax error{where}: {one_line(problem)}") from None
    except yaml.YAMLError as exc:
        raise SpecError("", f"{name}: YAML error: {one_line(str(exc))}") from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, name: str) -> None:
    """Refuse a document that expands (aliases followed) to more than MAX_NODES nodes."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        total = min(total, MAX_NODES + 1)
        sizes[id(node)] = total
        return total

    if size(root) > MAX_NODES:
        raise SpecError("", f"{name}: expands to more than {MAX_NODES} YAML nodes (aliases included); "
                            "a spec is far smaller")


def one_line(text: str) -> str:
    """Messages are one line: newlines and runs of blanks become one space."""
    return " ".join(text.split())
