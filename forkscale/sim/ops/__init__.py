"""The twin's VM operations: power, reconfigure, snapshots, clones, provisioning checks, destroy, guests
(processes, real programs, files).

Importing this package registers their handlers. Argument shape errors are raised as method
faults straight away (as vCenter does); anything that depends on the state of the world is
checked when the task runs, so a source powered off while a clone waits in the queue fails that
clone with `InvalidState`, like the real thing.
"""

from . import (
    checks,
    clone,
    destroy,
    entities,
    guest,
    guestexec,
    guestfiles,
    guestpower,
    instant,
    maintenance,
    pools,
    power,
    promote,
    reconfigure,
    register,
    relocate,
    snapshots,
)

__all__ = ["checks", "clone", "destroy", "entities", "guest", "guestexec", "guestfiles", "guestpower", "instant",
           "maintenance", "pools", "power", "promote", "reconfigure", "register", "relocate", "snapshots"]
