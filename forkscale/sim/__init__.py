"""The vSphere twin: a vCenter stand-in built on pyVmomi's type system, with instant-clone physics.

Run it with `forkscale sim`, or in-process with `forkscale.sim.start_in_thread()`.
"""

from .server import SimHandle, start_in_thread

__all__ = ["SimHandle", "start_in_thread"]
