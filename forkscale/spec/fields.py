"""Scalar and shape checks shared by every spec section; each names the field path it refuses."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from pathlib import Path

from forkscale.core.errors import SpecError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def sub(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"a number ({shown(value)})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 80 else f"a string ({value[:60]!r}... {len(value)} chars)"
    return type(value).__name__


def as_mapping(raw: object, path: str, what: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise SpecError(path, f"{what} must be a mapping, not {kind_of(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(path, f"key {key!r} must be a string")
    return raw


def check_keys(data: Mapping[str, object], path: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(allowed)})"
            raise SpecError(sub(path, key), f"unknown key{hint}")


def required(data: Mapping[str, object], key: str, path: str) -> object:
    if key not in data or data[key] is None:
        raise SpecError(sub(path, key), "required")
    return data[key]


def as_str(raw: object, path: str) -> str:
    if not isinstance(raw, str):
        raise SpecError(path, f"must be a string, not {kind_of(raw)}")
    if not raw.strip():
        raise SpecError(path, "must not be empty")
    return raw


def opt_str(raw: object, path: str) -> str | None:
    return None if raw is None else as_str(raw, path)


def as_str_list(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of names, not {kind_of(raw)}")
    items = tuple(as_str(item, f"{path}[{i}]") for i, item in enumerate(raw))
    for i, item in enumerate(items):
        if item in items[:i]:
            raise SpecError(f"{path}[{i}]", f"{item!r} is listed twice")
    return items


def as_choice(raw: object, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw not in choices:
        shown = kind_of(raw) if not isinstance(raw, str) else repr(raw)
        close = difflib.get_close_matches(raw, choices, n=1) if isinstance(raw, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(path, f"{shown} is not one of: {', '.join(choices)}{hint}")
    return raw


def as_bool(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        raise SpecError(path, f"must be true or false, not {kind_of(raw)}")
    return raw


def as_int(raw: object, path: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(path, f"must be an integer, not {kind_of(raw)}")
    if raw < minimum:
        raise SpecError(path, f"must be >= {minimum}, not {raw}")
    if maximum is not None and raw > maximum:
        raise SpecError(path, f"must be between {minimum} and {maximum}, not {shown(raw)}")
    return raw


def as_positive(raw: object, path: str, *, maximum: float | None = None, minimum: float = 0.0) -> float:
    """A finite number > 0 (and >= `minimum`, <= `maximum` when given: every duration and rate has one)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SpecError(path, f"must be a number, not {kind_of(raw)}")
    if not raw > 0 or raw != raw or raw == float("inf"):
        raise SpecError(path, f"must be a positive number, not {shown(raw)}")
    if maximum is None:
        if raw < minimum:
            raise SpecError(path, f"must be at least {minimum:g}, not {shown(raw)}")
    elif raw < minimum or raw > maximum:
        low = f"between {minimum:g} and" if minimum > 0 else "more than 0 and at most"
        raise SpecError(path, f"must be {low} {maximum:g}, not {shown(raw)}")
    return float(raw)


def shown(value: int | float) -> str:
    """A number for a message: huge integers are not printed in full (10**30 has 31 digits)."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"{float(value):g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def as_port(raw: object, path: str) -> int:
    port = as_int(raw, path, minimum=1)
    if port > 65535:
        raise SpecError(path, f"{shown(port)} is not a TCP port (1-65535)")
    return port


def as_env_name(raw: object, path: str) -> str:
    name = as_str(raw, path)
    if not _ENV_NAME.match(name):
        # not echoed: people do paste the password itself here
        raise SpecError(
            path, "must be the name of an environment variable (letters, digits, '_'), not the value itself"
        )
    return name


def as_ipv4(raw: object, path: str) -> IPv4Address:
    text = as_str(raw, path)
    try:
        return IPv4Address(text.strip())
    except ValueError:
        raise SpecError(path, f"{text!r} is not an IPv4 address") from None


def as_path(raw: object, path: str, base_dir: Path) -> Path:
    file = Path(as_str(raw, path)).expanduser()
    return file if file.is_absolute() else base_dir / file


def opt_path(raw: object, path: str, base_dir: Path) -> Path | None:
    return None if raw is None else as_path(raw, path, base_dir)
