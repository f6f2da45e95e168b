"""Scaling policies: how many clones a pool should have, and why.

Pure strategies (`fixed`, `headroom`, `target-value`) and schedule windows decide; the
`PolicyRunner` state machine adds cooldowns; `read_metric` feeds target-value. The controller's
async loop wires them together: read the metric, `evaluate`, execute, `mark_done`.
"""

from forkscale.policy.config import (
    HttpSource,
    MetricSource,
    PolicyConfig,
    PrometheusSource,
    ScheduleWindow,
    parse_policy,
)
from forkscale.policy.reasons import ReasonCode
from forkscale.policy.runner import PolicyRunner, PolicyStatus, State
from forkscale.policy.schedule import Bounds, effective_bounds
from forkscale.policy.sources import read_metric
from forkscale.policy.strategies import Decision, Observed, decide, fixed, headroom, target_value

__all__ = [
    "Bounds",
    "Decision",
    "HttpSource",
    "MetricSource",
    "Observed",
    "PolicyConfig",
    "PolicyRunner",
    "PolicyStatus",
    "PrometheusSource",
    "ReasonCode",
    "ScheduleWindow",
    "State",
    "decide",
    "effective_bounds",
    "fixed",
    "headroom",
    "parse_policy",
    "read_metric",
    "target_value",
]
