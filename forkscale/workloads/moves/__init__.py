"""Day-2 moves as persisted operations (forkscale.workloads.operations): `promote` (linked -> full in
place), `rebalance` (spread a pool over its datastores and hosts, vacate removed ones) and
`evacuate` (empty a host for maintenance). Each is a `Kind`; `kinds(engine)` gives all three.
"""

from __future__ import annotations

from forkscale.fleet.engine import Engine
from forkscale.workloads.moves.common import Moves, start_or_resume
from forkscale.workloads.moves.kinds import MoveKind
from forkscale.workloads.moves.promote import Promote
from forkscale.workloads.operations import Kind


def kinds(engine: Engine) -> dict[str, Kind]:
    """Every move kind, sharing one view of vCenter per operation run."""
    moves = Moves(engine)
    found: list[Kind] = [Promote(moves), MoveKind("rebalance", moves), MoveKind("evacuate", moves)]
    return {k.name: k for k in found}


__all__ = ["Moves", "kinds", "start_or_resume"]
