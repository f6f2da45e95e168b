"""The operation kinds a controller can run (add a kind here to make it resumable by `serve`,
`rollout resume` and a re-run of its command).

`kinds(engine_of)`: `engine_of` is the engine a command opened, or `serve`'s "engine of this pool's
vCenter" (one engine per vCenter).
"""

from __future__ import annotations

from collections.abc import Callable

from forkscale.fleet.engine import Engine
from forkscale.workloads.moves.common import Moves
from forkscale.workloads.moves.kinds import MoveKind
from forkscale.workloads.moves.promote import Promote
from forkscale.workloads.operations.kind import Kind
from forkscale.workloads.operations.pushimage import PushImage
from forkscale.workloads.operations.refresh import Refresh
from forkscale.workloads.operations.rollout import Tools


def kinds(engine_of: Callable[[str], Engine] | Engine) -> dict[str, Kind]:
    tools = Tools(engine_of)
    moves = Moves(tools)
    found: list[Kind] = [PushImage(tools), Refresh(tools), Promote(moves), MoveKind("rebalance", moves),
                         MoveKind("evacuate", moves)]
    return {k.name: k for k in found}
