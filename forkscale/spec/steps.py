"""Steps and checks (`{name, run, timeout_s, upload}`), shared by the rehearsal spec and a pool's `checks:`."""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import as_mapping, as_path, as_positive, as_str, check_keys, kind_of, required, sub
from forkscale.spec.model import MAX_TIMEOUT_S, Step, Upload

STEP_KEYS = ("name", "run", "timeout_s", "upload")


def parse_steps(raw: object, path: str, default_timeout: float, base_dir: Path) -> tuple[Step, ...]:
    """A list of steps; names are unique within the list, uploads exist on this machine."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of {{name, run, timeout_s, upload}}, not {kind_of(raw)}")
    out: list[Step] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        data = as_mapping(item, where, "a step")
        check_keys(data, where, STEP_KEYS)
        name = as_str(required(data, "name", where), sub(where, "name"))
        if name in seen:
            raise SpecError(sub(where, "name"), f"{name!r} is already the name of {path}[{seen[name]}]")
        seen[name] = i
        out.append(Step(
            name=name,
            run=as_str(required(data, "run", where), sub(where, "run")),
            timeout_s=as_positive(data.get("timeout_s", default_timeout), sub(where, "timeout_s"),
                                  maximum=MAX_TIMEOUT_S),
            upload=parse_uploads(data.get("upload"), sub(where, "upload"), base_dir),
        ))
    return tuple(out)


def parse_uploads(raw: object, path: str, base_dir: Path) -> tuple[Upload, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of {{src, dest, mode}}, not {kind_of(raw)}")
    out = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        data = as_mapping(item, where, "an upload")
        check_keys(data, where, ("src", "dest", "mode"))
        src = as_path(required(data, "src", where), sub(where, "src"), base_dir)
        try:
            info = src.stat()
        except OSError as exc:
            raise SpecError(sub(where, "src"), f"{src}: {exc.strerror or 'cannot stat'}") from None
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(sub(where, "src"), f"{src} is not a regular file")
        dest = as_str(required(data, "dest", where), sub(where, "dest"))
        if not dest.startswith("/") or dest.endswith("/") or posixpath.normpath(dest) != dest:
            raise SpecError(sub(where, "dest"), f"{dest!r} must be a normalized absolute file path in the guest")
        mode = _mode(data.get("mode"), sub(where, "mode"), stat.S_IMODE(info.st_mode))
        out.append(Upload(src=src, dest=dest, mode=mode))
    return tuple(out)


def _mode(raw: object, path: str, local: int) -> int:
    """Permission bits: an octal string ("0755"), a YAML 1.1 octal (0755), or the local file's own."""
    if raw is None:
        return local & 0o777
    if isinstance(raw, str):
        try:
            value = int(raw, 8)
        except ValueError:
            raise SpecError(path, f"{raw!r} is not an octal mode such as \"0644\"") from None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise SpecError(path, f"must be an octal mode such as \"0644\", not {kind_of(raw)}")
    if not 0 <= value <= 0o7777:
        raise SpecError(path, f"{raw!r} is not a file mode (0000-7777)")
    return value
