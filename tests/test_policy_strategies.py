"""Table-driven tests of the pure strategies: every rule as a row with the numbers it must produce."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from forkscale.policy import Observed, ReasonCode, decide, parse_policy
from forkscale.policy.strategies import STRATEGIES

METRIC = {"prometheus": {"url": "http://127.0.0.1:9999", "query": "sum(x)"}}
NOON = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)  # a Wednesday


def tv(**kw: Any) -> dict[str, Any]:
    return {"strategy": "target-value", "target": 10, "min": 0, "max": 100, "metric": METRIC, **kw}


def hr(**kw: Any) -> dict[str, Any]:
    return {"strategy": "headroom", "headroom": 5, "min": 0, "max": 100, **kw}


def fx(**kw: Any) -> dict[str, Any]:
    return {"strategy": "fixed", "count": 10, **kw}


def obs(current: int, claimed: int = 0, ready: int = 0) -> Observed:
    return Observed(current=current, ready=ready, claimed=claimed)


# (id, raw policy, observed, metric, expected count, expected direction, fragments of the reason)
CASES = [
    # --- target-value: the core formula
    ("tv-up-formula", tv(), obs(4), 20.0, 8, "up", ["metric 20.0 / target 10.0 = 2.00", "× 4 clones", "→ 8 clones"]),
    ("tv-down-formula", tv(), obs(10), 5.0, 5, "down", ["= 0.50", "→ 5 clones (from 10)"]),
    ("tv-ceil-rounds-up", tv(), obs(3), 14.0, 5, "up", ["= 4.20, ceil 5"]),
    ("tv-float-noise-no-extra-clone", tv(target=0.3), obs(9), 0.1, 3, "down", ["→ 3 clones (from 9)"]),
    # --- precision band
    ("tv-in-band-noop", tv(), obs(8), 10.5, 8, "none", ["within precision ±0.1", "keep 8 clones"]),
    ("tv-band-edge-inclusive-up", tv(), obs(8), 11.0, 8, "none", ["within precision"]),
    ("tv-band-edge-inclusive-down", tv(), obs(8), 9.0, 8, "none", ["within precision"]),
    ("tv-just-outside-band", tv(), obs(10), 11.1, 12, "up", ["= 1.11"]),
    ("tv-zero-precision-moves", tv(precision=0), obs(10), 10.5, 11, "up", []),
    ("tv-wide-band", tv(precision=0.5), obs(10), 14.0, 10, "none", ["within precision ±0.5"]),
    # --- from zero / to zero
    ("tv-from-zero-one", tv(), obs(0), 0.5, 1, "up", ["scaling from zero to ceil(0.05) = 1"]),
    ("tv-from-zero-ceil", tv(), obs(0), 42.0, 5, "up", ["ceil(4.20) = 5"]),
    ("tv-from-zero-raised-to-min", tv(min=3), obs(0), 5.0, 3, "up", ["raised to min 3"]),
    ("tv-zero-metric-stays-zero", tv(), obs(0), 0.0, 0, "none", ["with no clones", "keep 0"]),
    ("tv-to-zero-when-min-0", tv(), obs(6), 0.0, 0, "down", ["→ 0 clones (from 6)"]),
    ("tv-not-to-zero-when-min-2", tv(min=2), obs(6), 0.0, 2, "down", ["raised to min 2"]),
    # --- clamping
    ("tv-capped-by-max", tv(max=12), obs(10), 50.0, 12, "up", ["ceil 50", "capped by max 12"]),
    ("tv-current-above-max-in-band", tv(max=5), obs(8), 10.0, 5, "down", ["within precision", "capped by max 5"]),
    # --- max_step, both ways
    ("tv-max-step-up", tv(max_step=4), obs(4), 42.0, 8, "up", ["= 4.20", "capped by max_step 4 on the way to 17"]),
    ("tv-max-step-down", tv(max_step=3), obs(20), 1.0, 17, "down", ["capped by max_step 3 on the way to 2"]),
    ("tv-max-step-not-binding", tv(max_step=10), obs(4), 20.0, 8, "up", []),
    ("tv-max-step-after-max", tv(max=10, max_step=4), obs(2), 100.0, 6, "up", ["capped by max 10", "max_step 4"]),
    # --- missing / unusable metric
    ("tv-metric-none-noop", tv(), obs(7), None, 7, "none", ["metric unavailable", "keep 7"]),
    ("tv-metric-none-still-min", tv(min=9), obs(7), None, 9, "up", ["metric unavailable", "raised to min 9"]),
    ("tv-metric-nan-noop", tv(), obs(7), float("nan"), 7, "none", ["not a number"]),
    ("tv-metric-negative-noop", tv(), obs(7), -3.0, 7, "none", ["metric -3.0 is negative"]),
    # --- headroom (VDI)
    ("hr-fill-spares", hr(), obs(3, claimed=0), None, 5, "up", ["0 claimed + headroom 5 = 5", "→ 5 clones (from 3)"]),
    ("hr-follow-claims", hr(), obs(15, claimed=12, ready=3), None, 17, "up", ["12 claimed + headroom 5 = 17"]),
    ("hr-steady", hr(), obs(17, claimed=12, ready=5), None, 17, "none", ["keep 17"]),
    ("hr-release-spares", hr(), obs(20, claimed=2, ready=18), None, 7, "down", ["→ 7 clones (from 20)"]),
    ("hr-capped-by-max", hr(max=10), obs(10, claimed=10), None, 10, "none", ["= 15", "capped by max 10"]),
    ("hr-min-floor", hr(min=8, headroom=2), obs(0), None, 8, "up", ["raised to min 8"]),
    ("hr-zero-headroom-to-zero", hr(headroom=0), obs(4, ready=4), None, 0, "down", []),
    ("hr-max-step", hr(max_step=2), obs(0, claimed=0), None, 2, "up", ["max_step 2 on the way to 5"]),
    # --- fixed
    ("fx-up", fx(), obs(4), None, 10, "up", ["fixed count 10", "→ 10 clones (from 4)"]),
    ("fx-steady", fx(), obs(10), 99.0, 10, "none", ["keep 10"]),
    ("fx-down", fx(count=2), obs(5), None, 2, "down", []),
    ("fx-max-step", fx(max_step=3), obs(0), None, 3, "up", ["max_step 3"]),
    ("fx-clamped-by-max", fx(max=6), obs(0), None, 6, "up", ["capped by max 6"]),
]


@pytest.mark.parametrize(
    "raw, observed, metric, count, direction, fragments",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_strategy_table(raw, observed, metric, count, direction, fragments):
    decision = decide(observed, metric, parse_policy(raw, "p"), NOON)
    assert (decision.count, decision.direction) == (count, direction), decision.reason
    for fragment in fragments:
        assert fragment in decision.reason
    assert decision.window is None
    assert decision.is_noop == (direction == "none")


def test_every_strategy_has_rows():
    prefixes = {"target-value": "tv-", "headroom": "hr-", "fixed": "fx-"}
    assert set(prefixes) == set(STRATEGIES)
    for prefix in prefixes.values():
        assert sum(c[0].startswith(prefix) for c in CASES) >= 5


def test_reason_example_from_the_issue():
    """The sentence shape promised to operators: ratio, the result, and what capped it."""
    d = decide(obs(4), 42.0, parse_policy(tv(max_step=4), "p"), NOON)
    assert d.reason == (
        "metric 42.0 / target 10.0 = 4.20 × 4 clones = 16.80, ceil 17 → 8 clones (from 4) "
        "(capped by max_step 4 on the way to 17)"
    )


def test_schedule_window_overrides_bounds_for_any_strategy():
    window = {"name": "office-hours", "days": ["wed"], "from": "07:45", "to": "18:00", "min": 50, "max": 200}
    raw = hr(max=100, schedule=[window])
    inside = decide(obs(10, claimed=10), None, parse_policy(raw, "p"), NOON)
    assert (inside.count, inside.direction, inside.window) == (50, "up", "office-hours")
    assert inside.reason.startswith("window office-hours (min 50, max 200): 10 claimed + headroom 5 = 15")
    assert "raised to min 50" in inside.reason
    evening = decide(obs(10, claimed=10), None, parse_policy(raw, "p"), NOON.replace(hour=19))
    assert (evening.count, evening.window) == (15, None)


def test_window_raise_ramps_with_max_step():
    window = {"name": "prewarm", "from": "07:00", "to": "19:00", "min": 50}
    d = decide(obs(0), None, parse_policy(fx(count=0, max_step=10, schedule=[window]), "p"), NOON)
    assert (d.count, d.direction) == (10, "up")
    assert "capped by max_step 10 on the way to 50" in d.reason


@pytest.mark.parametrize(
    "kwargs",
    [{"current": -1, "ready": 0, "claimed": 0}, {"current": 1, "ready": 1.5, "claimed": 0},
     {"current": 1, "ready": 0, "claimed": 0, "building": True}],
    ids=["negative-current", "float-ready", "bool-building"],
)
def test_observed_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="Observed"):
        Observed(**kwargs)


@pytest.mark.parametrize(
    "raw", [fx(schedule=[{"from": "07:00", "to": "19:00", "min": 1}]), fx()], ids=["with-window", "without-window"]
)
def test_naive_now_is_refused(raw):
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(obs(1), None, parse_policy(raw, "p"), datetime(2024, 6, 5, 12, 0))


# The code each case's decision carries (the metric label): the rule that settled it.
CODES = {
    "tv-from-zero-raised-to-min": "min", "tv-not-to-zero-when-min-2": "min", "hr-min-floor": "min",
    "tv-capped-by-max": "max", "tv-current-above-max-in-band": "max", "hr-capped-by-max": "max",
    "fx-clamped-by-max": "max",
    "tv-max-step-up": "max-step", "tv-max-step-down": "max-step", "tv-max-step-after-max": "max-step",
    "hr-max-step": "max-step", "fx-max-step": "max-step",
    "tv-metric-none-noop": "metric-unavailable", "tv-metric-none-still-min": "metric-unavailable",
    "tv-metric-nan-noop": "metric-unavailable", "tv-metric-negative-noop": "metric-unavailable",
}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_decision_carries_the_code_of_the_rule_that_settled_it(case):
    name, raw, observed, metric = case[:4]
    decision = decide(observed, metric, parse_policy(raw, "p"), NOON)
    assert decision.code == CODES.get(name, raw["strategy"]), decision.reason
    assert isinstance(decision.code, ReasonCode)


def test_a_window_keeps_the_code_of_the_strategy_decision():
    raw = fx(count=1, schedule=[{"name": "office", "days": ["wed"], "from": "08:00", "to": "18:00", "min": 4}])
    decision = decide(obs(0), None, parse_policy(raw, "p"), NOON)
    assert decision.window == "office" and decision.reason.startswith("window office")
    assert decision.code == ReasonCode.MIN
