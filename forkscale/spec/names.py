"""Clone names and hostnames: patterns, rendering checks, and names unique across pools."""

from __future__ import annotations

import re
import string

from forkscale.core.errors import SpecError
from forkscale.core.identity import FIRST_INDEX, render_name
from forkscale.spec.fields import as_str, sub
from forkscale.spec.model import MAX_VM_NAME, Pool

#: Rendering every possible name is how cross-pool name collisions are found; beyond this many
#: indices the check samples only the first ones (a /16 pool is already 65k names).
_MAX_RENDER_CHECK = 100_000


_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


_BAD_VM_NAME_CHARS = set("/\\%") | {chr(c) for c in range(32)}


def parse_pattern(raw: object, path: str, pool: str) -> str:
    text = as_str(raw, path)
    try:
        fields = {fname for _, fname, _, _ in string.Formatter().parse(text) if fname is not None}
    except ValueError as exc:
        raise SpecError(path, f"{text!r} is not a valid pattern: {exc}") from None
    unknown = sorted(fields - {"index", "pool"})
    if unknown:
        raise SpecError(path, f"{text!r} uses {{{unknown[0]}}}; only {{index}} and {{pool}} are available")
    if "index" not in fields:
        raise SpecError(path, f"{text!r} must contain {{index}} so that every clone gets its own name")
    try:
        render_name(text, FIRST_INDEX, pool=pool)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise SpecError(path, f"{text!r} cannot be rendered: {exc}") from None
    return text


def check_rendered(pool: Pool, path: str) -> None:
    """Every name the pool can ever hold must be a valid VM name and hostname, and distinct."""
    last = FIRST_INDEX + max(pool.capacity(), 1) - 1
    for index in sorted({FIRST_INDEX, last}):
        name = pool.rendered_name(index)
        check_vm_name(name, sub(path, "name_pattern"))
        hostname_path = sub(path, "hostname_pattern" if pool.hostname_pattern is not None else "name_pattern")
        hostname = pool.rendered_hostname(index)
        if not valid_hostname(hostname):
            hint = "" if pool.hostname_pattern is not None else "; set hostname_pattern"
            raise SpecError(hostname_path, f"renders {hostname!r}, which is not a valid RFC 1123 hostname{hint}")


def check_vm_name(name: str, path: str) -> None:
    if not name.strip():
        raise SpecError(path, "renders an empty VM name")
    if len(name) > MAX_VM_NAME:
        raise SpecError(path, f"renders {name!r} ({len(name)} characters); VM names are at most {MAX_VM_NAME}")
    bad = sorted(set(name) & _BAD_VM_NAME_CHARS)
    if bad:
        raise SpecError(path, f"renders {name!r}, which contains {bad[0]!r}; avoid '/', '\\' and '%' in VM names")


def valid_hostname(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.match(label) for label in name.split("."))


def check_across_pools(pools: tuple[Pool, ...]) -> None:
    """Pool names unique, address ranges disjoint, and no name rendered by two pools."""
    seen_names: dict[str, int] = {}
    rendered: dict[str, tuple[int, int]] = {}
    for i, pool in enumerate(pools):
        path = f"pools[{i}]"
        if pool.name in seen_names:
            raise SpecError(sub(path, "name"), f"{pool.name!r} is already used by pools[{seen_names[pool.name]}]")
        seen_names[pool.name] = i
        for j, other in enumerate(pools[:i]):
            a, b = pool.network.range, other.network.range
            if a[0] <= b[1] and b[0] <= a[1]:
                raise SpecError(
                    sub(path, "network.range"),
                    f"{a[0]}-{a[1]} overlaps pools[{j}] ({other.name}) range {b[0]}-{b[1]}; "
                    "give each pool its own network.range",
                )
        limit = min(pool.capacity(), _MAX_RENDER_CHECK)
        for index in range(FIRST_INDEX, FIRST_INDEX + limit):
            name = pool.rendered_name(index)
            owner = rendered.get(name)
            if owner is not None:
                where = f"pools[{owner[0]}]" if owner[0] != i else f"index {owner[1]} of this pool"
                raise SpecError(sub(path, "name_pattern"), f"renders {name!r} for index {index}, as does {where}")
            rendered[name] = (i, index)
