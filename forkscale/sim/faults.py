"""Faults on demand: failure rates per method, one-shot failures and slow operations — what production
does to a controller (broken hosts, expired sessions and lost frozen states are admin actions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vmodl

if TYPE_CHECKING:
    from .world import World


def make_fault(name: str, message: str, refs: tuple[Any, ...] = ()) -> vmodl.MethodFault:
    """A fault by its wsdl name (`TaskInProgress`, `InvalidState`, `SystemError`, ...).

    Required fields are filled (a moref from `refs` of the right type, else a plain value), so
    the fault serializes like one vCenter would send: `TaskInProgress.task`, `DuplicateName.name`...
    """
    for ns in ("urn:vim25",):
        try:
            typ = VmomiSupport.GetWsdlType(ns, name)
            break
        except KeyError:
            continue
    else:
        raise ValueError(f"unknown fault type {name!r}")
    fault: vmodl.MethodFault = typ(msg=message)
    if isinstance(fault, vmodl.fault.SystemError):
        fault.reason = message
    for prop in typ._GetPropertyList():
        if prop.flags & VmomiSupport.F_OPTIONAL or getattr(fault, prop.name, None) not in (None, []):
            continue
        fault_type = prop.type
        if issubclass(fault_type, VmomiSupport.ManagedObject):
            ref = next((r for r in refs if isinstance(r, fault_type)), None)
            setattr(fault, prop.name, ref if ref is not None else fault_type("unknown"))
        elif issubclass(fault_type, bool):
            setattr(fault, prop.name, False)
        elif issubclass(fault_type, int):
            setattr(fault, prop.name, 0)
        elif issubclass(fault_type, str) and not issubclass(fault_type, VmomiSupport.Enum):
            setattr(fault, prop.name, message)
    return fault


class FaultPlan:
    def __init__(self, world: World, failure_rates: dict[str, Any]) -> None:
        """`failure_rates`: method -> rate, or -> {"rate": r, "fault": wsdl name} (a world file's `faults.failure_rate`)."""
        self.world = world
        self.rates: dict[str, tuple[float, str]] = {}
        for meth, val in (failure_rates or {}).items():
            self.set_rate(meth, val if isinstance(val, (int, float)) else val["rate"],
                          "SystemError" if isinstance(val, (int, float)) else val.get("fault", "SystemError"))
        self.next: dict[str, list[str]] = {}  # method -> faults for the next calls (task or method)
        self.slow: dict[str, float] = {}
        self.injected = 0

    def set_rate(self, meth: str, rate: float, fault: str = "SystemError") -> None:
        make_fault(fault, "check")
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within 0..1")
        self.rates[meth] = (float(rate), fault)

    def fail_next(self, meth: str, fault: str, count: int = 1) -> None:
        make_fault(fault, "check")
        self.next.setdefault(meth, []).extend([fault] * count)

    def before_call(self, meth: str) -> None:
        """Faults for non-task methods, raised before the handler runs."""
        if meth.endswith("_Task"):
            return
        self._one_shot(meth)

    def maybe_fail(self, meth: str, entity: Any, task: Any = None) -> None:
        """Called when a task starts running: one-shot faults first, then the failure rate."""
        refs = tuple(getattr(x, "ref", x) for x in (task, entity) if x is not None)
        self._one_shot(meth, refs)
        rate = self.rates.get(meth)
        if rate and self.world.rng.random() < rate[0]:
            self.injected += 1
            raise make_fault(rate[1], f"injected {rate[1]} for {meth} (failure rate {rate[0]:.0%})", refs)

    def _one_shot(self, meth: str, refs: tuple[Any, ...] = ()) -> None:
        queue = self.next.get(meth)
        if queue:
            name = queue.pop(0)
            self.injected += 1
            raise make_fault(name, f"injected {name} for {meth}", refs)

    def slowdown(self, op: str) -> float:
        return self.slow.get(op, 1.0)
