"""What a `serve` replica says about pools it may not own: the owner, the owner's published status,
and count overrides kept in the ledger (so the owner -- today's or the next one -- applies them).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from forkscale.fleet.plan import LIVE
from forkscale.ledger import Lease, Ledger
from forkscale.workloads.runtime import BUILDING, PoolRuntime, iso

#: fields of the owner's status document that only the owner knows (the rest is read fresh)
OWNER_FIELDS = ("desired", "policy", "converging", "last_decision", "last_converge", "actions", "errors", "metric",
                "waiting_claims")


def owner_doc(lease: Lease | None, me: str, now: float) -> dict[str, Any] | None:
    """The pool's owner as status shows it; None when no replica has ever owned it."""
    if lease is None:
        return None
    live = lease.live(now)
    return {"replica": lease.holder, "pid": lease.pid, "host": lease.host, "since": iso(lease.acquired_at),
            "token": lease.token, "live": live, "here": live and lease.holder == me,
            "expires_in_s": round(lease.expires_at - now, 1) if live else None}


def apply_override(pr: PoolRuntime, ledger: Ledger) -> None:
    """Make the pool's policy the spec's plus the override in the ledger (if the spec still says
    what it said when the override was set: a spec edited since wins)."""
    spec_cfg = pr.pool.policy
    cfg, override = spec_cfg, {}
    found = ledger.override(pr.pool.name)
    if found is not None:
        field, value, spec_value = found
        now_value = spec_cfg.count if field == "count" else spec_cfg.min
        if spec_value is None or spec_value == now_value:
            cfg = dataclasses.replace(spec_cfg, count=value) if field == "count" else \
                dataclasses.replace(spec_cfg, min=value)
            override = {field: value}
    if pr.runner.config != cfg:
        pr.runner.update_config(cfg)
    pr.override = override


def remote_status(pr: PoolRuntime, ledger: Ledger, owner: dict[str, Any] | None, *, dry_run: bool) -> dict[str, Any]:
    """`GET /v1/pools/{pool}` on a replica that does not own the pool: counts read now from the
    ledger, everything only the owner knows as it last published it (`published_at`)."""
    pool = pr.pool
    counts = ledger.counts(pool.name)
    current = sum(counts[s] for s in LIVE if s != "draining")
    published = ledger.published_status(pool.name)
    doc: dict[str, Any] = published[0] if published is not None else {}
    desired = ledger.desired(pool.name)
    out: dict[str, Any] = {
        **{k: doc.get(k) for k in OWNER_FIELDS},
        "pool": pool.name,
        "current": current,
        "ready": counts["ready"] + counts["claimed"],
        "spares": counts["ready"],
        "claimed": counts["claimed"],
        "building": sum(counts[s] for s in BUILDING),
        "draining": counts["draining"],
        "counts": {k: v for k, v in counts.items() if v and k != "gone"},
        "on_release": pool.on_release,
        "drain": pool.drain is not None,
        "source": pool.source,
        "sources": doc.get("sources", []),
        "source_records": doc.get("source_records", []),
        "dry_run": dry_run,
        "owner": owner,
        "published_at": iso(published[2]) if published is not None else None,
    }
    if out["desired"] is None and desired is not None:
        out["desired"] = desired[0]
    out["errors"] = out["errors"] or []
    out["actions"] = out["actions"] or []
    out["waiting_claims"] = (out["waiting_claims"] or 0) + pr.waiting
    out["served_at"] = iso(time.time())
    return out
