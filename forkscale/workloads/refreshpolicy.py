"""When `serve` refreshes a clone on its own: a pool's `refresh:` policies.

* `on_release` (the pool's `on_release: refresh`, or `refresh.on_release: true`): every release.
* `refresh.max_uses: N`: a released clone that has been claimed N times (the CI-runner pattern:
  `max_uses: 1` gives every claim a fresh clone), whatever `on_release` says.
* `refresh.max_age_s`: a released clone older than this; and idle (ready) clones older than this,
  a few per round (never more out at once than `rollout.max_unavailable`).

A refresh is a replacement with the same identity (unless `refresh.identity: new`) and user disk,
from the pool's current image: the released clone goes `draining`, the next round replaces it.
"""

from __future__ import annotations

from forkscale.ledger import CloneRecord, Ledger
from forkscale.spec import Pool


def uses(ledger: Ledger, rec: CloneRecord) -> int:
    """How many times this clone (this VM, not its identity) has been claimed."""
    return sum(1 for e in ledger.events(rec.id) if e.what == "claimed")


def worn(pool: Pool, ledger: Ledger, rec: CloneRecord, now: float) -> str | None:
    """Why a released clone must be refreshed (None: it may be kept)."""
    if pool.on_release == "refresh":
        return "on_release: refresh"
    policy = pool.refresh
    if policy.max_uses is not None:
        n = uses(ledger, rec)
        if n >= policy.max_uses:
            return f"claimed {n} time(s) (refresh.max_uses {policy.max_uses})"
    if policy.max_age_s is not None and now - rec.created_at >= policy.max_age_s:
        return f"{now - rec.created_at:.0f}s old (refresh.max_age_s {policy.max_age_s:g})"
    return None


def aged(pool: Pool, ledger: Ledger, now: float, out_now: int) -> list[CloneRecord]:
    """Idle clones past `refresh.max_age_s`, oldest first, as many as may go out of service now."""
    limit = pool.refresh.max_age_s
    if limit is None:
        return []
    count = len(ledger.live(pool.name))
    room = pool.rollout.max_unavailable.of(count, minimum=1) - out_now
    if room <= 0:
        return []
    old = [r for r in ledger.clones(pool.name, ["ready"]) if now - r.created_at >= limit]
    return sorted(old, key=lambda r: r.created_at)[:room]
