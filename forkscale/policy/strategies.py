"""Pure scaling strategies: (observed, metric, config) -> Decision.

Pure so that every rule can be tested as a table, and so that "why did it scale to 17?" always
has an answer: each Decision carries a human sentence with the numbers that produced it. The
async loop that reads metrics and acts lives elsewhere; nothing here does I/O or reads a clock.

Every strategy computes a wanted count, then the same three rules settle it, in this order:
raise to `min`, cap at `max`, then move at most `max_step` away from the current count. The
step limit applies last, also to moves forced by min/max, so a schedule window that raises min
from 0 to 50 ramps up in steps rather than cloning 50 at once when the operator asked for steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from forkscale.policy.config import PolicyConfig
from forkscale.policy.reasons import ReasonCode
from forkscale.policy.schedule import effective_bounds

Direction = Literal["up", "down", "none"]

# Float noise (1.1 - 1 = 0.10000000000000009) must not push an exact band edge or an exact
# product (3 × 1.0000000000000002) across a boundary.
_EPS = 1e-9


@dataclass(frozen=True)
class Observed:
    """What the fleet looks like now.

    current: clones that exist or are being made (the count the policy moves);
    ready: ready and unclaimed spares; claimed: in use; building: still being made.
    """

    current: int
    ready: int
    claimed: int
    building: int = 0

    def __post_init__(self) -> None:
        for name in ("current", "ready", "claimed", "building"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Observed.{name} must be a whole number >= 0, got {value!r}")


@dataclass(frozen=True)
class Decision:
    """How many clones the pool should have, why, and which way that moves it.

    `count` is the desired total, not a delta; `window` names the schedule window in force;
    `code` says which rule settled it (metrics label by the code, never by the sentence).
    """

    count: int
    reason: str
    direction: Direction
    window: str | None = None
    code: ReasonCode = ReasonCode.FIXED

    @property
    def is_noop(self) -> bool:
        """True when nothing should change (and so no cooldown should start)."""
        return self.direction == "none"


StrategyFn = Callable[[Observed, float | None, PolicyConfig], Decision]


def fixed(observed: Observed, metric: float | None, config: PolicyConfig) -> Decision:
    """A constant count (the pool's `count`), still subject to min/max/max_step."""
    count = config.count or 0
    return _settle(observed.current, count, f"fixed count {count}", config, ReasonCode.FIXED)


def headroom(observed: Observed, metric: float | None, config: PolicyConfig) -> Decision:
    """Keep `headroom` ready spares above what is claimed: desired = claimed + headroom.

    The VDI policy: a user who logs in takes a spare, and the pool refills behind them, so a
    login never waits for a clone.
    """
    k = config.headroom or 0
    wanted = observed.claimed + k
    base = f"{observed.claimed} claimed + headroom {k} = {wanted}"
    return _settle(observed.current, wanted, base, config, ReasonCode.HEADROOM)


def target_value(observed: Observed, metric: float | None, config: PolicyConfig) -> Decision:
    """Nomad's target-value: desired = ceil(current × metric / target).

    Inside the precision band (|metric/target − 1| ≤ precision) nothing changes, so a metric
    that wobbles around its target does not churn clones. From zero clones the product is
    always 0, so the count becomes ceil(metric / target) instead (at least 1 for any load).
    A missing or unusable metric changes nothing by itself; min/max still hold.
    """
    current = observed.current
    target = config.target
    if target is None or target <= 0:
        raise ValueError("target-value needs a positive target (parse_policy enforces this)")
    code = ReasonCode.TARGET_VALUE
    if metric is None:
        return _settle(current, current, "metric unavailable", config, ReasonCode.METRIC_UNAVAILABLE)
    if not math.isfinite(metric):
        return _settle(current, current, f"metric is {metric} (not a number)", config, ReasonCode.METRIC_UNAVAILABLE)
    if metric < 0:
        return _settle(current, current, f"metric {_num(metric)} is negative, ignored", config,
                       ReasonCode.METRIC_UNAVAILABLE)

    factor = metric / target
    ratio = f"metric {_num(metric)} / target {_num(target)} = {factor:.2f}"
    if current == 0:
        if metric == 0:
            return _settle(current, 0, f"{ratio} with no clones", config, code)
        wanted = math.ceil(factor - _EPS)
        return _settle(current, wanted, f"{ratio}, scaling from zero to ceil({factor:.2f}) = {wanted}", config, code)
    if abs(factor - 1) <= config.precision + _EPS:
        return _settle(current, current, f"{ratio}, within precision ±{_num(config.precision)}", config, code)
    product = current * factor
    wanted = math.ceil(product - _EPS)
    return _settle(current, wanted, f"{ratio} × {current} clones = {product:.2f}, ceil {wanted}", config, code)


STRATEGIES: dict[str, StrategyFn] = {
    "fixed": fixed,
    "headroom": headroom,
    "target-value": target_value,
}


def decide(observed: Observed, metric: float | None, config: PolicyConfig, now: datetime) -> Decision:
    """Apply the schedule window in force at `now`, then the strategy.

    `now` must be timezone-aware even without a schedule, so that adding a window to a running
    policy cannot turn a silently-local timestamp into a wrong window match.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    bounds = effective_bounds(config, now)
    effective = config
    if bounds.window is not None:
        effective = dataclasses.replace(config, min=bounds.min, max=bounds.max)
    decision = STRATEGIES[config.strategy](observed, metric, effective)
    if bounds.window is None:
        return decision
    hi = "none" if bounds.max is None else str(bounds.max)
    reason = f"window {bounds.window} (min {bounds.min}, max {hi}): {decision.reason}"
    return dataclasses.replace(decision, reason=reason, window=bounds.window)


def _settle(current: int, wanted: int, base: str, config: PolicyConfig, code: ReasonCode) -> Decision:
    """Clamp `wanted` to min/max, limit the move to max_step, and phrase the result.

    The code is the last rule that changed the count (max_step over max over min), unless the
    metric was unusable: then that is the reason, whatever min/max did.
    """
    notes: list[str] = []
    desired = wanted
    settled_by = code
    if desired < config.min:
        notes.append(f"raised to min {config.min}")
        desired, settled_by = config.min, ReasonCode.MIN
    if config.max is not None and desired > config.max:
        notes.append(f"capped by max {config.max}")
        desired, settled_by = config.max, ReasonCode.MAX
    step = config.max_step
    if step is not None and abs(desired - current) > step:
        notes.append(f"capped by max_step {step} on the way to {desired}")
        desired = current + step if desired > current else current - step
        settled_by = ReasonCode.MAX_STEP
    if code is ReasonCode.METRIC_UNAVAILABLE:
        settled_by = code
    direction: Direction = "up" if desired > current else "down" if desired < current else "none"
    if direction == "none":
        reason = f"{base} → keep {desired} clones"
    else:
        reason = f"{base} → {desired} clones (from {current})"
    if notes:
        reason += f" ({'; '.join(notes)})"
    return Decision(count=desired, reason=reason, direction=direction, code=settled_by)


def _num(x: float) -> str:
    """A metric for a sentence: 42.0, 0.35, 1234567.5 — not 0.30000000000000004 or 1.2e+06."""
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3g}"
    text = f"{x:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
