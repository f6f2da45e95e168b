"""The policy handler state machine (after Nomad Autoscaler's): Idle → WaitingTurn → Scaling → Cooldown.

Why a state machine around pure strategies: a decision takes time to carry out (clones are
built over seconds to minutes) and its effect on the metric lags further. Without a cooldown a
target-value policy sees the old load on the new clones-in-progress and scales again, and
again. So:

* Idle: `evaluate` asks the strategy. A no-op stays Idle and does NOT start a cooldown
  (nothing happened, so there is nothing to let settle). An actionable decision moves to
  WaitingTurn: it is handed to the caller, who runs it when an executor slot is free.
* WaitingTurn → Scaling: the caller calls `begin(decision)` when it starts executing.
* Scaling → Cooldown: `mark_done(decision)`; the cooldown length depends on the direction
  (`cooldown_up_s` after a scale-up, `cooldown_down_s` after a scale-down, usually longer so
  desktops are not torn down on a short lull). A failed run (`ok=False`) goes back to Idle
  without a cooldown: the next evaluation looks at what was actually built.
* While WaitingTurn/Scaling/Cooldown, `evaluate` returns a no-op saying why, with what the
  strategy would have done, so status always explains itself.

Sync and clock-injected: the async loop that calls it belongs to the controller, and tests
drive time with a plain function instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from forkscale.policy.config import PolicyConfig
from forkscale.policy.reasons import ReasonCode
from forkscale.policy.strategies import Decision, Observed, decide


class State(StrEnum):
    """Where a pool's policy is in its cycle."""

    IDLE = "idle"
    WAITING_TURN = "waiting-turn"
    SCALING = "scaling"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class PolicyStatus:
    """What `forkscale status` shows for a pool's policy."""

    state: State
    decision: Decision | None  # the most recent evaluation's answer (a no-op while cooling down)
    at: datetime | None  # when that evaluation ran
    pending: Decision | None  # the decision handed out and not yet marked done
    cooldown_left_s: float | None  # seconds of cooldown left, None when not cooling down

    @property
    def reason(self) -> str:
        """The last decision's sentence, or a placeholder before the first evaluation."""
        return self.decision.reason if self.decision is not None else "not evaluated yet"


class PolicyRunner:
    """One pool's policy handler. Not thread-safe: one coroutine owns it."""

    def __init__(self, config: PolicyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._state = State.IDLE
        self._pending: Decision | None = None
        self._last: Decision | None = None
        self._last_at: datetime | None = None
        self._cooldown_until: float | None = None
        self._cooldown_after: str = ""

    @property
    def config(self) -> PolicyConfig:
        """The policy in force."""
        return self._config

    @property
    def state(self) -> State:
        """The current state, with an expired cooldown already counted as Idle."""
        self._expire_cooldown()
        return self._state

    def update_config(self, config: PolicyConfig) -> None:
        """Swap the policy (spec reload) without forgetting an in-flight decision or a cooldown."""
        self._config = config

    def evaluate(self, observed: Observed, metric: float | None, now: datetime) -> Decision:
        """Decide what to do now; returns a no-op while busy or cooling down.

        `now` is the wall clock (timezone-aware) for schedule windows and status; cooldowns run on
        the injected monotonic clock so a wall-clock jump cannot end or extend one.
        """
        self._expire_cooldown()
        wanted = decide(observed, metric, self._config, now)
        if self._state is State.IDLE:
            decision = wanted
            if not decision.is_noop:
                self._state = State.WAITING_TURN
                self._pending = decision
        elif self._state is State.COOLDOWN:
            assert self._cooldown_until is not None
            left = max(0.0, self._cooldown_until - self._clock())
            until = (now + timedelta(seconds=left)).isoformat(timespec="seconds")
            decision = Decision(
                count=observed.current,
                reason=f"in cooldown after scaling {self._cooldown_after} until {until} "
                f"({left:.0f} s left); policy says: {wanted.reason}",
                direction="none",
                window=wanted.window,
                code=ReasonCode.COOLDOWN,
            )
        else:
            assert self._pending is not None
            decision = Decision(
                count=observed.current,
                reason=f"scaling {self._pending.direction} to {self._pending.count} clones in progress "
                f"({self._state}); policy says: {wanted.reason}",
                direction="none",
                window=wanted.window,
                code=ReasonCode.IN_PROGRESS,
            )
        self._last = decision
        self._last_at = now
        return decision

    def begin(self, decision: Decision) -> None:
        """WaitingTurn → Scaling: the caller has started carrying out `decision`."""
        self._check_pending(decision, (State.WAITING_TURN,))
        self._state = State.SCALING

    def mark_done(self, decision: Decision, *, ok: bool = True) -> None:
        """Scaling (or WaitingTurn) → Cooldown for the decision's direction; → Idle when `ok` is False.

        Accepted straight from WaitingTurn too, for callers that have no separate start step.
        """
        self._check_pending(decision, (State.WAITING_TURN, State.SCALING))
        self._pending = None
        cooldown = self._config.cooldown_up_s if decision.direction == "up" else self._config.cooldown_down_s
        if not ok or cooldown <= 0:
            self._state = State.IDLE
            self._cooldown_until = None
            return
        self._state = State.COOLDOWN
        self._cooldown_until = self._clock() + cooldown
        self._cooldown_after = decision.direction

    def status(self) -> PolicyStatus:
        """A snapshot for status output."""
        self._expire_cooldown()
        left = None
        if self._state is State.COOLDOWN and self._cooldown_until is not None:
            left = max(0.0, self._cooldown_until - self._clock())
        return PolicyStatus(
            state=self._state,
            decision=self._last,
            at=self._last_at,
            pending=self._pending,
            cooldown_left_s=left,
        )

    def _expire_cooldown(self) -> None:
        if self._state is State.COOLDOWN and self._cooldown_until is not None:
            if self._clock() >= self._cooldown_until:
                self._state = State.IDLE
                self._cooldown_until = None

    def _check_pending(self, decision: Decision, states: tuple[State, ...]) -> None:
        if self._state not in states or self._pending is None:
            raise RuntimeError(f"no decision waiting for this step (state {self._state})")
        if decision is not self._pending and decision != self._pending:
            raise RuntimeError(f"not the pending decision: pending is {self._pending.reason!r}")
