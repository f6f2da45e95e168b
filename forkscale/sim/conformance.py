"""Schema conformance of a vSphere endpoint, checked from the client's side over real SOAP.

pyVmomi carries the vSphere schema: every managed object property and data object field says
whether it is optional (`F_OPTIONAL`) and since which API version it exists. `check(si)` reads
every property of every managed object reachable from the ServiceContent — the inventory (one
recursive ContainerView of the root folder), the managers, and every object a property refers
to (snapshots, tasks, views, collectors, browsers...) — walks every nested data object, and
reports:

* a property or field the schema marks required (for the session's API version) that is unset,
  or an empty array where the schema requires one;
* an enum value that is not one of its type's values;
* a retrieval that fails, and a moref in a live property that no longer resolves;
* a property that a real vCenter always fills although the schema makes it optional (`ALWAYS`).

References found inside history (a TaskInfo, an Event) may name objects that are gone: those
are followed but not reported when they do not resolve. The check talks only SOAP, so it runs
against any endpoint (the twin, vcsim, a vCenter): `problems = check(si)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

PC = vmodl.query.PropertyCollector

# Optional in the schema, filled by every vCenter for that kind of object (paths into the
# object's properties; a path through an array means "in every element").
ALWAYS: dict[type, tuple[str, ...]] = {
    vim.ServiceInstanceContent: (
        "setting", "userDirectory", "sessionManager", "authorizationManager", "perfManager", "scheduledTaskManager",
        "alarmManager", "eventManager", "taskManager", "extensionManager", "customizationSpecManager",
        "customFieldsManager", "diagnosticManager", "licenseManager", "searchIndex", "fileManager",
        "virtualDiskManager", "vmProvisioningChecker", "vmCompatibilityChecker", "ovfManager", "ipPoolManager",
        "dvSwitchManager", "localizationManager", "storageResourceManager", "guestOperationsManager",
        "overheadMemoryManager", "viewManager"),
    vim.HostSystem: (
        "hardware", "capability", "config", "config.product", "config.network", "config.network.vnic",
        "config.network.vnic.spec.ip", "summary.config.product", "summary.runtime.bootTime",
        "configManager.networkSystem", "configManager.datastoreSystem", "configManager.storageSystem",
        "configManager.advancedOption", "configManager.memoryManager", "systemResources"),
    vim.ClusterComputeResource: (
        "configurationEx", "configurationEx.drsConfig.enabled", "configurationEx.dasConfig.enabled",
        "environmentBrowser", "summary", "resourcePool"),
    vim.ResourcePool: (
        "config.cpuAllocation.shares", "config.cpuAllocation.reservation", "config.cpuAllocation.limit",
        "config.cpuAllocation.expandableReservation", "config.memoryAllocation.shares",
        "config.memoryAllocation.reservation", "config.memoryAllocation.limit",
        "config.memoryAllocation.expandableReservation", "owner"),
    vim.DistributedVirtualSwitch: (
        "config.defaultPortConfig", "config.uplinkPortPolicy", "config.maxMtu", "config.host",
        "summary.productInfo", "summary.portgroupName"),
    vim.dvs.DistributedVirtualPortgroup: ("config.defaultPortConfig", "config.defaultPortConfig.uplinkTeamingPolicy",
                                          "portKeys"),
    vim.VirtualMachine: (
        "capability", "config", "config.tools", "config.bootOptions", "config.cpuAllocation",
        "config.memoryAllocation", "config.files", "storage", "storage.perDatastoreUsage", "layoutEx", "summary.storage",
        "summary.config.vmPathName", "runtime.host", "resourceConfig",
        "guest"),
    vim.Datastore: ("info", "info.url", "summary.url", "capability", "browser"),
    vim.Network: ("summary",),
    vim.vm.guest.GuestOperationsManager: (
        "processManager", "fileManager", "authManager"),
}


@dataclass(frozen=True)
class Problem:
    obj: str  # "HostSystem:host-12", "ServiceContent", "Event 42"
    path: str  # "config.network.vnic[0].spec", or "" for the object itself
    issue: str

    def __str__(self) -> str:
        where = f"{self.obj}.{self.path}" if self.path else self.obj
        return f"{where}: {self.issue}"


def label(ref: Any) -> str:
    return f"{VmomiSupport.GetWsdlName(type(ref))}:{ref._moId}"


class Checker:
    """One run of the check over one session (`si`, a pyVmomi ServiceInstance)."""

    def __init__(self, si: Any) -> None:
        self.si = si
        self.version = si._stub.version
        self.content = si.RetrieveContent()
        self.problems: list[Problem] = []
        self.queue: deque[tuple[Any, bool]] = deque()  # (moref, found only in history)
        self.seen: set[str] = set()
        self.checked: list[str] = []

    # the walk over data ------------------------------------------------------------------
    def props(self, typ: Any) -> Iterator[Any]:
        for p in typ._GetPropertyList():
            if VmomiSupport.IsChildVersion(self.version, p.version):
                yield p

    def walk(self, obj: str, path: str, val: Any, declared: Any, history: bool) -> None:
        if isinstance(val, VmomiSupport.ManagedObject):
            self.enqueue(val, history)
        elif isinstance(val, list):
            for i, item in enumerate(val):
                self.walk(obj, f"{path}[{i}]", item, getattr(declared, "Item", object), history)
        elif isinstance(val, VmomiSupport.DataObject):
            history = history or isinstance(val, (vim.TaskInfo, vim.event.Event))
            for p in self.props(type(val)):
                self.field(obj, f"{path}.{p.name}" if path else p.name, getattr(val, p.name, None), p, history)
        elif isinstance(declared, type) and issubclass(declared, VmomiSupport.Enum) and val is not None:
            if str(val) not in getattr(declared, "values", ()):
                self.problems.append(Problem(obj, path, f"{val!r} is not a value of {declared.__name__}"))

    def field(self, obj: str, path: str, val: Any, info: Any, history: bool) -> None:
        required = not info.flags & VmomiSupport.F_OPTIONAL
        if val is None or (isinstance(val, list) and not val):
            if required:
                self.problems.append(Problem(obj, path, "required by the schema, unset"))
            return
        self.walk(obj, path, val, info.type, history)

    def always(self, obj: str, typ: Any, values: dict[str, Any]) -> None:
        reported = {p.path for p in self.problems if p.obj == obj}
        for kind, paths in ALWAYS.items():
            if not issubclass(typ, kind):
                continue
            for path in paths:
                parts = path.split(".")
                if any(".".join(parts[:i]) in reported for i in range(1, len(parts) + 1)):
                    continue  # already reported (required and unset, or a shorter always-path)
                if not any(_present(v) for v in _resolve(values, parts)):
                    self.problems.append(Problem(obj, path, "always filled by vCenter, unset"))
                    reported.add(path)

    # the walk over objects ----------------------------------------------------------------
    def enqueue(self, ref: Any, history: bool) -> None:
        key = label(ref)
        if key not in self.seen:
            self.seen.add(key)
            self.queue.append((ref, history))

    def check_object(self, ref: Any, history: bool) -> None:
        obj = label(ref)
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=ref)], propSet=[PC.PropertySpec(type=type(ref), all=True)])
        try:
            result = self.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        except vmodl.fault.ManagedObjectNotFound:
            if not history:
                self.problems.append(Problem(obj, "", "referenced by a live property but not found"))
            return
        except vmodl.MethodFault as fault:
            self.problems.append(Problem(obj, "", f"retrieving all properties failed: {_fault(fault)}"))
            return
        self.checked.append(obj)
        contents = result.objects if result is not None else []
        if len(contents) != 1:
            self.problems.append(Problem(obj, "", f"retrieving all properties returned {len(contents)} objects"))
            return
        values = {p.name: p.val for p in contents[0].propSet}
        for missing in contents[0].missingSet or []:
            self.problems.append(Problem(obj, missing.path, f"could not be read: {_fault(missing.fault)}"))
        for p in self.props(type(ref)):
            self.field(obj, p.name, values.get(p.name), p, False)
        self.always(obj, type(ref), values)

    def run(self, extra: list[Any]) -> list[Problem]:
        content = self.content
        values = {p.name: getattr(content, p.name) for p in self.props(type(content))}
        self.walk("ServiceContent", "", content, type(content), False)
        self.always("ServiceContent", type(content), values)
        view = content.viewManager.CreateContainerView(content.rootFolder, [], True)
        try:
            for ref in [content.rootFolder, *view.view, *extra]:
                self.enqueue(ref, False)
        finally:
            view.DestroyView()
        self.events()
        while self.queue:
            ref, history = self.queue.popleft()
            self.check_object(ref, history)
        return self.problems

    def events(self) -> None:
        manager = self.content.eventManager
        if manager is None:
            return
        for event in manager.QueryEvents(vim.event.EventFilterSpec()) or []:
            self.walk(f"{VmomiSupport.GetWsdlName(type(event))} {event.key}", "", event, type(event), True)


def _resolve(values: Any, parts: list[str]) -> Iterator[Any]:
    """Every value at a dotted path (through arrays: of each element)."""
    if isinstance(values, list):
        for item in values:
            yield from _resolve(item, parts)
        return
    if not parts:
        yield values
        return
    if values is None:
        yield None
        return
    head = values.get(parts[0]) if isinstance(values, dict) else getattr(values, parts[0], None)
    if isinstance(head, list) and not head:
        yield None
        return
    yield from _resolve(head, parts[1:])


def _present(val: Any) -> bool:
    return val is not None and not (isinstance(val, list) and not val)


def _fault(fault: Any) -> str:
    return f"{type(fault).__name__}: {getattr(fault, 'msg', '') or ''}".rstrip(": ")


def check(si: Any, extra: list[Any] | None = None) -> list[Problem]:
    """Every conformance problem of the endpoint behind `si` (a logged-in pyVmomi ServiceInstance).

    `extra`: more morefs to check (e.g. collectors the caller created that nothing refers to).
    """
    return Checker(si).run(list(extra or []))
