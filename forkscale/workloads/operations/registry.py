"""The operation kinds a controller can run, built on one engine (add a kind here to make it resumable
by `serve`, `rollout resume` and a re-run of its command)."""

from __future__ import annotations

from forkscale.fleet.engine import Engine
from forkscale.fleet.replace import Replacer
from forkscale.workloads.moves.common import Moves
from forkscale.workloads.moves.kinds import MoveKind
from forkscale.workloads.moves.promote import Promote
from forkscale.workloads.operations.kind import Kind
from forkscale.workloads.operations.pushimage import PushImage
from forkscale.workloads.operations.refresh import Refresh
from forkscale.workloads.operations.rollout import RolloutStep


def kinds(engine: Engine) -> dict[str, Kind]:
    replacer = Replacer(engine)
    rollout = RolloutStep(engine, replacer)
    moves = Moves(engine, rollout)
    found: list[Kind] = [PushImage(engine, replacer, rollout), Refresh(engine, rollout), Promote(moves),
                         MoveKind("rebalance", moves), MoveKind("evacuate", moves)]
    return {k.name: k for k in found}
