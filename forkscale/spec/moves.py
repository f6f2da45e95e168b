"""The sections of a pool that govern day-2 moves: `rebalance` and `kind_policy` (evacuation follows
the pool's `rollout:`: claimed clones, max_unavailable)."""

from __future__ import annotations

from forkscale.core.errors import SpecError
from forkscale.spec.fields import as_bool, as_int, as_mapping, as_positive, check_keys, sub
from forkscale.spec.model import KindPolicy, Rebalance


def parse_rebalance(raw: object, path: str) -> Rebalance:
    if raw is None:
        return Rebalance()
    data = as_mapping(raw, path, "rebalance")
    check_keys(data, path, ("auto", "threshold", "max_used_pct", "max_concurrent"))
    d = Rebalance()
    threshold = as_positive(data.get("threshold", d.threshold), sub(path, "threshold"))
    if threshold >= 1:
        raise SpecError(sub(path, "threshold"), f"{threshold} is a fraction of the pool's clones: use 0 < threshold < 1")
    used = as_positive(data.get("max_used_pct", d.max_used_pct), sub(path, "max_used_pct"))
    if used > 100:
        raise SpecError(sub(path, "max_used_pct"), f"{used} is a percentage of a datastore's capacity: at most 100")
    return Rebalance(auto=as_bool(data.get("auto", d.auto), sub(path, "auto")), threshold=threshold,
                     max_used_pct=used,
                     max_concurrent=as_int(data.get("max_concurrent", d.max_concurrent), sub(path, "max_concurrent"),
                                           minimum=1))


def parse_kind_policy(raw: object, path: str) -> KindPolicy:
    if raw is None:
        return KindPolicy()
    data = as_mapping(raw, path, "kind_policy")
    check_keys(data, path, ("linked_max_age_s", "promote_on_claim"))
    age = data.get("linked_max_age_s")
    return KindPolicy(linked_max_age_s=None if age is None else as_positive(age, sub(path, "linked_max_age_s")),
                      promote_on_claim=as_bool(data.get("promote_on_claim", False), sub(path, "promote_on_claim")))
