"""Why a policy decided what it did, as a code: the metric label and what tests and tools match on.

Each `Decision` carries a `ReasonCode` and a human sentence. The sentence has the numbers and may be
reworded freely; the code is a small fixed set, so `forkscale_policy_decisions_total{reason}` never
grows with the numbers and never changes when a sentence is edited.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """What settled a decision (the first rule that applied, most specific first)."""

    FIXED = "fixed"  # strategy fixed: the configured count
    HEADROOM = "headroom"  # strategy headroom: claimed + spares
    TARGET_VALUE = "target-value"  # strategy target-value: the metric against its target
    MIN = "min"  # raised to the policy's (or the window's) min
    MAX = "max"  # capped by max
    MAX_STEP = "max-step"  # a move limited by max_step
    METRIC_UNAVAILABLE = "metric-unavailable"  # no usable metric: nothing changes by itself
    COOLDOWN = "cooldown"  # a cooldown (or a hold after refreshes) keeps the count
    IN_PROGRESS = "in-progress"  # an earlier decision is still being carried out


STRATEGY_CODES: dict[str, ReasonCode] = {
    "fixed": ReasonCode.FIXED,
    "headroom": ReasonCode.HEADROOM,
    "target-value": ReasonCode.TARGET_VALUE,
}
