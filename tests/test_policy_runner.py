"""The policy handler state machine, driven by an injectable clock: cooldowns per direction,
no cooldown for no-ops or failures, and a status that always explains itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from forkscale.policy import Observed, PolicyRunner, State, parse_policy

T0 = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
METRIC = {"prometheus": {"url": "http://127.0.0.1:9999", "query": "sum(x)"}}


class FakeClock:
    """A monotonic clock the test moves by hand (time itself needs no server)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def runner(**kw: Any) -> tuple[PolicyRunner, FakeClock]:
    raw = {"strategy": "target-value", "target": 10, "max": 100, "metric": METRIC,
           "cooldown_up_s": 60, "cooldown_down_s": 300, **kw}
    clock = FakeClock()
    return PolicyRunner(parse_policy(raw, "p"), clock=clock), clock


def obs(current: int) -> Observed:
    return Observed(current=current, ready=current, claimed=0)


def scale(r: PolicyRunner, current: int, metric: float, now: datetime = T0) -> Any:
    """evaluate → begin → mark_done, as the controller loop does for an actionable decision."""
    d = r.evaluate(obs(current), metric, now)
    assert not d.is_noop, d.reason
    assert r.state is State.WAITING_TURN
    r.begin(d)
    assert r.state is State.SCALING
    r.mark_done(d)
    return d


# (id, direction of the first scale, seconds after it, expected state, expected no-op)
COOLDOWN_CASES = [
    ("up-cooling-at-0s", 20.0, 0, State.COOLDOWN, True),
    ("up-cooling-at-59s", 20.0, 59, State.COOLDOWN, True),
    ("up-over-at-60s", 20.0, 60, State.IDLE, False),
    ("down-cooling-at-60s", 2.0, 60, State.COOLDOWN, True),
    ("down-cooling-at-299s", 2.0, 299, State.COOLDOWN, True),
    ("down-over-at-300s", 2.0, 300, State.IDLE, False),
]


@pytest.mark.parametrize(
    "metric, after_s, state, noop", [c[1:] for c in COOLDOWN_CASES], ids=[c[0] for c in COOLDOWN_CASES]
)
def test_cooldown_length_depends_on_direction(metric, after_s, state, noop):
    r, clock = runner()
    first = scale(r, 10, metric)
    assert r.state is State.COOLDOWN
    clock.t += after_s
    assert r.state is state
    # The load is still far from target, so outside cooldown the policy acts again.
    d = r.evaluate(obs(first.count), metric * 10 if first.direction == "up" else 0.0, T0 + timedelta(seconds=after_s))
    assert d.is_noop is noop, d.reason
    if noop:
        assert d.count == first.count
        assert d.reason.startswith(f"in cooldown after scaling {first.direction} until ")


def test_cooldown_reason_names_wall_time_and_what_the_policy_wants():
    r, clock = runner()
    scale(r, 4, 20.0)  # 4 → 8
    clock.t += 18
    d = r.evaluate(obs(8), 40.0, T0 + timedelta(seconds=18))
    assert d.reason == (
        "in cooldown after scaling up until 2024-06-05T12:01:00+00:00 (42 s left); policy says: "
        "metric 40.0 / target 10.0 = 4.00 × 8 clones = 32.00, ceil 32 → 32 clones (from 8)"
    )
    st = r.status()
    assert (st.state, st.decision, st.at, st.cooldown_left_s, st.pending) == (State.COOLDOWN, d, T0 + timedelta(
        seconds=18), 42.0, None)


def test_noop_does_not_start_a_cooldown():
    r, clock = runner()
    d = r.evaluate(obs(10), 10.0, T0)  # exactly on target
    assert d.is_noop and "within precision" in d.reason
    assert r.state is State.IDLE
    # A second later the load jumps: nothing holds the policy back.
    clock.t += 1
    d2 = r.evaluate(obs(10), 30.0, T0 + timedelta(seconds=1))
    assert (d2.direction, d2.count) == ("up", 30)
    assert r.state is State.WAITING_TURN


def test_failed_scaling_returns_to_idle_without_cooldown():
    r, clock = runner()
    d = r.evaluate(obs(4), 20.0, T0)
    r.begin(d)
    r.mark_done(d, ok=False)
    assert r.state is State.IDLE
    assert r.status().cooldown_left_s is None
    again = r.evaluate(obs(5), 20.0, T0)  # only one clone got made: the policy decides afresh
    assert (again.direction, again.count) == ("up", 10)


def test_busy_while_waiting_turn_and_scaling():
    r, clock = runner()
    d = r.evaluate(obs(4), 20.0, T0)
    busy = r.evaluate(obs(4), 20.0, T0)
    assert busy.is_noop and busy.count == 4
    assert busy.reason.startswith("scaling up to 8 clones in progress (waiting-turn); policy says:")
    r.begin(d)
    busy = r.evaluate(obs(6), 20.0, T0)
    assert busy.reason.startswith("scaling up to 8 clones in progress (scaling)")
    assert r.status().pending == d
    # Evaluating while busy must not replace the pending decision.
    r.mark_done(d)
    assert r.state is State.COOLDOWN


def test_mark_done_straight_from_waiting_turn():
    r, clock = runner()
    d = r.evaluate(obs(10), 0.0, T0)  # down to 0
    assert d.direction == "down"
    r.mark_done(d)
    assert r.state is State.COOLDOWN
    assert r.status().cooldown_left_s == 300.0


@pytest.mark.parametrize("step", ["begin", "mark_done"])
def test_steps_without_a_pending_decision_are_bugs(step):
    r, clock = runner()
    d = r.evaluate(obs(10), 10.0, T0)  # no-op: nothing pending
    with pytest.raises(RuntimeError, match="no decision waiting"):
        getattr(r, step)(d)


def test_marking_a_different_decision_is_a_bug():
    r, clock = runner()
    r.evaluate(obs(4), 20.0, T0)
    other = runner()[0].evaluate(obs(4), 40.0, T0)
    with pytest.raises(RuntimeError, match="not the pending decision"):
        r.mark_done(other)


def test_zero_cooldown_goes_straight_to_idle():
    r, clock = runner(cooldown_up_s=0)
    scale(r, 4, 20.0)
    assert r.state is State.IDLE
    assert not r.evaluate(obs(8), 40.0, T0).is_noop


def test_cooldown_runs_on_the_monotonic_clock_not_the_wall_clock():
    r, clock = runner()
    scale(r, 4, 20.0)
    # The wall clock jumps a day ahead (NTP, DST, a VM resume) but no real time passed.
    d = r.evaluate(obs(8), 40.0, T0 + timedelta(days=1))
    assert d.is_noop and "in cooldown" in d.reason


def test_status_before_and_after_first_evaluation():
    r, clock = runner()
    st = r.status()
    assert (st.state, st.decision, st.at, st.reason) == (State.IDLE, None, None, "not evaluated yet")
    d = r.evaluate(obs(0), None, T0)
    st = r.status()
    assert (st.state, st.decision, st.at) == (State.IDLE, d, T0)
    assert st.reason == "metric unavailable → keep 0 clones"


def test_schedule_window_reaches_through_the_runner():
    r, clock = runner(schedule=[{"name": "prewarm", "days": ["wed"], "from": "07:45", "to": "18:00", "min": 50}])
    d = r.evaluate(obs(0), None, T0)
    assert (d.count, d.direction, d.window) == (50, "up", "prewarm")
    r.mark_done(d)
    clock.t += 30
    cooling = r.evaluate(obs(50), None, T0)
    assert cooling.window == "prewarm" and cooling.is_noop


def test_update_config_keeps_cooldown():
    r, clock = runner()
    scale(r, 4, 20.0)
    r.update_config(parse_policy({"strategy": "fixed", "count": 3}, "p"))
    assert r.state is State.COOLDOWN
    clock.t += 60
    d = r.evaluate(obs(8), None, T0)
    assert (d.count, d.direction) == (3, "down")
