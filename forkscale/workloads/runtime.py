"""What the controller keeps per pool between rounds, and the status document built from it."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forkscale.core.errors import ForkscaleError
from forkscale.fleet.plan import LIVE
from forkscale.ledger import Ledger
from forkscale.policy import Decision, Observed, PolicyRunner
from forkscale.spec import Pool
from forkscale.workloads.operations import operation_doc
from forkscale.workloads.operations.control import images_doc

BUILDING = ("planned", "cloning", "customizing")
MAX_ERRORS = 20
MAX_HISTORY = 50


class ControllerError(ForkscaleError):
    """A request the controller refuses; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass
class PoolRuntime:
    """What the controller knows about one pool between rounds (status reads it)."""

    pool: Pool
    runner: PolicyRunner
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    desired: int | None = None
    needs_converge: bool = True  # the first round always reconciles (adopts/cleans after a restart)
    hold_down_until: float = 0.0  # monotonic; no scale-down before (set after refresh replacements)
    held: bool = False  # the last decision was a scale-down held back by hold_down_until
    waiting: int = 0  # claims waiting for a clone
    override: dict[str, int] = field(default_factory=dict)
    metric: float | None = None
    metric_at: float | None = None
    metric_error: str | None = None
    decision: Decision | None = None
    decision_at: float | None = None
    last_result: dict[str, Any] | None = None
    converging: bool = False
    errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    rounds: int = 0
    logged_shape: str = ""
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    round: asyncio.Task[Any] | None = None  # the round in flight (cancelled if the pool's lease is lost)




def observed_of(pr: PoolRuntime, counts: dict[str, int]) -> Observed:
    """The pool as the policy sees it: `draining` clones are on their way out and not counted."""
    current = sum(counts[s] for s in LIVE if s != "draining")
    return Observed(current=current, ready=counts["ready"], claimed=counts["claimed"] + pr.waiting,
                    building=sum(counts[s] for s in BUILDING))


def _policy_doc(pr: PoolRuntime) -> dict[str, Any]:
    cfg, pst = pr.runner.config, pr.runner.status()
    policy: dict[str, Any] = {"strategy": cfg.strategy, "state": str(pst.state), "min": cfg.min, "max": cfg.max,
                              "max_step": cfg.max_step, "cooldown_up_s": cfg.cooldown_up_s,
                              "cooldown_down_s": cfg.cooldown_down_s, "evaluate_every_s": cfg.evaluate_every_s,
                              "cooldown_left_s": None if pst.cooldown_left_s is None
                              else round(pst.cooldown_left_s, 3), "override": dict(pr.override)}
    if cfg.strategy == "fixed":
        policy["count"] = cfg.count
    elif cfg.strategy == "headroom":
        policy["headroom"] = cfg.headroom
    else:
        policy["target"] = cfg.target
        policy["precision"] = cfg.precision
    return policy


def status_doc(pr: PoolRuntime, ledger: Ledger, *, dry_run: bool) -> dict[str, Any]:
    """`GET /v1/pools/{pool}`: counts, policy, last decision and converge, actions, errors."""
    pool = pr.pool
    counts = ledger.counts(pool.name)
    observed = observed_of(pr, counts)
    live = ledger.clones(pool.name, states=list(LIVE))
    generations = Counter((r.source, r.source_generation) for r in live)
    sources = [{"source": s, "generation": g, "clones": n} for (s, g), n in sorted(generations.items())]
    recorded = [{"vm": s.vm_name, "host": s.host, "generation": s.generation, "state": s.state,
                 "frozen": s.frozen} for s in ledger.sources(pool.name)]
    out: dict[str, Any] = {
        "pool": pool.name,
        "desired": pr.desired,
        "current": observed.current,
        "ready": counts["ready"] + counts["claimed"],
        "spares": counts["ready"],
        "claimed": counts["claimed"],
        "building": observed.building,
        "draining": counts["draining"],
        "waiting_claims": pr.waiting,
        "counts": {k: v for k, v in counts.items() if v and k != "gone"},
        "on_release": pool.on_release,
        "drain": pool.drain is not None,
        "source": pool.source,
        "sources": sources,
        "source_records": recorded,
        "policy": _policy_doc(pr),
        "converging": pr.converging,
        "last_decision": None if pr.decision is None else {
            "count": pr.decision.count, "direction": pr.decision.direction, "reason": pr.decision.reason,
            "code": str(pr.decision.code), "window": pr.decision.window, "at": iso(pr.decision_at)},
        "last_converge": pr.last_result,
        "actions": list(pr.history),
        "errors": list(pr.errors),
        "dry_run": dry_run,
        **images_doc(ledger, pool.name),
        "refresh": {"on_release": pool.on_release, "max_uses": pool.refresh.max_uses,
                    "max_age_s": pool.refresh.max_age_s, "identity": pool.refresh.identity},
    }
    op = ledger.operations.open(pool.name) or ledger.operations.last(pool.name)
    out["operation"] = None if op is None else operation_doc(ledger, op, steps=False)
    if pr.runner.config.metric is not None:
        out["metric"] = {"value": pr.metric, "at": iso(pr.metric_at), "error": pr.metric_error}
    return out
