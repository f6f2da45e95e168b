"""The vSphere twin: a vCenter stand-in built on pyVmomi's type system, with instant-clone physics.

Run it with `forkscale sim`, or in-process with `forkscale.sim.start_in_thread()`. The server is
imported lazily so the guest-side `vmware-rpctool` stand-in (forkscale.sim.rpctool) starts fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SimHandle", "start_in_thread"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
