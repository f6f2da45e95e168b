"""The day-2 sections of a pool: `rollout:`, `refresh:`, `user_disk:` and `notify:`."""

from __future__ import annotations

import re
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import (
    as_bool,
    as_choice,
    as_int,
    as_mapping,
    as_positive,
    check_keys,
    kind_of,
    opt_str,
    required,
    sub,
)
from forkscale.spec.model import (
    CLAIMED_POLICIES,
    IDENTITY_POLICIES,
    ON_RELEASE,
    USER_DISK_MODES,
    Drain,
    Refresh,
    Rollout,
    Share,
    UserDiskSpec,
)
from forkscale.spec.sections import parse_drain

_PERCENT = re.compile(r"^\s*(\d{1,3})\s*%\s*$")
#: a user disk is at most this big (vSphere's limit for a virtual disk is 62 TB)
MAX_USER_DISK_GB = 62 * 1024


def as_share(raw: object, path: str, *, minimum: int) -> Share:
    """`4` or `"25%"`."""
    if isinstance(raw, str):
        found = _PERCENT.match(raw)
        if found is None:
            raise SpecError(path, f"{raw!r} is neither a whole number nor a percentage such as '25%'")
        value = int(found.group(1))
        if not minimum <= value <= 100:
            raise SpecError(path, f"{value}% must be between {minimum}% and 100%")
        return Share(value, percent=True)
    return Share(as_int(raw, path, minimum=minimum))


def parse_rollout(raw: object, path: str) -> Rollout:
    if raw is None:
        return Rollout()
    data = as_mapping(raw, path, "rollout")
    check_keys(data, path, ("max_unavailable", "batch", "max_failure", "claimed", "force_after_s", "keep_previous_s"))
    d = Rollout()
    batch = data.get("batch")
    keep = data.get("keep_previous_s", d.keep_previous_s)
    if isinstance(keep, bool) or not isinstance(keep, int | float) or keep < 0:
        raise SpecError(sub(path, "keep_previous_s"), f"must be a number of seconds >= 0, not {kind_of(keep)}")
    return Rollout(
        max_unavailable=as_share(data.get("max_unavailable", 1), sub(path, "max_unavailable"), minimum=1),
        batch=None if batch is None else as_int(batch, sub(path, "batch"), minimum=1),
        max_failure=as_share(data.get("max_failure", 0), sub(path, "max_failure"), minimum=0),
        claimed=as_choice(data.get("claimed", d.claimed), sub(path, "claimed"), CLAIMED_POLICIES),
        force_after_s=as_positive(data.get("force_after_s", d.force_after_s), sub(path, "force_after_s")),
        keep_previous_s=float(keep),
    )


def parse_refresh(raw: object, path: str, on_release: str) -> tuple[Refresh, str]:
    """`refresh:` and the pool's on_release (`refresh.on_release: true|false` is the same setting as
    the top-level `on_release: refresh|keep`; giving both, they must agree)."""
    if raw is None:
        return Refresh(), on_release
    data = as_mapping(raw, path, "refresh")
    check_keys(data, path, ("on_release", "max_uses", "max_age_s", "identity"))
    if "on_release" in data:
        value = data["on_release"]
        wanted = ("refresh" if value else "keep") if isinstance(value, bool) else \
            as_choice(value, sub(path, "on_release"), ON_RELEASE)
        if on_release != wanted and on_release != "refresh":  # (refresh is the top-level default)
            raise SpecError(sub(path, "on_release"), f"says {wanted} but the pool's on_release says {on_release}")
        on_release = wanted
    uses = data.get("max_uses")
    age = data.get("max_age_s")
    return Refresh(
        max_uses=None if uses is None else as_int(uses, sub(path, "max_uses"), minimum=1),
        max_age_s=None if age is None else as_positive(age, sub(path, "max_age_s")),
        identity=as_choice(data.get("identity", "same"), sub(path, "identity"), IDENTITY_POLICIES),
    ), on_release


def parse_user_disk(raw: object, path: str) -> UserDiskSpec | None:
    if raw is None:
        return None
    data = as_mapping(raw, path, "user_disk")
    check_keys(data, path, ("size_gb", "datastore", "mode", "keep"))
    size = as_int(required(data, "size_gb", path), sub(path, "size_gb"), minimum=1)
    if size > MAX_USER_DISK_GB:
        raise SpecError(sub(path, "size_gb"), f"{size} GB is above vSphere's largest virtual disk ({MAX_USER_DISK_GB})")
    return UserDiskSpec(
        size_gb=size,
        datastore=opt_str(data.get("datastore"), sub(path, "datastore")),
        mode=as_choice(data.get("mode", "independent_persistent"), sub(path, "mode"), USER_DISK_MODES),
        keep=as_bool(data.get("keep", False), sub(path, "keep")),
    )


def parse_notify(raw: object, path: str, base_dir: Path) -> Drain | None:
    """`notify: {command, timeout_s, ssh}`: shaped like `drain:` (run over SSH in the clone)."""
    return None if raw is None else parse_drain(raw, path, base_dir)


def check_day2(path: str, rollout: Rollout, notify: Drain | None) -> None:
    """Checks across sections: a forced rollout names how a claimed clone's user is told first."""
    if rollout.claimed == "force" and notify is None:
        raise SpecError(sub(path, "notify"), "required when rollout.claimed: force (the command that tells a "
                                             "claimed clone's user it is about to be replaced)")
