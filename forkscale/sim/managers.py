"""The ServiceContent managers a client dereferences besides the ones the twin's methods serve:
every one a vCenter lists, each with the properties the schema requires (their methods answer
`MethodNotFound` unless some module implements them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from .mo import Manager
from .product import elements, enum_elements, types

if TYPE_CHECKING:
    from .service import Twin
    from .world import World

_TASK_STATES = ("queued", "running", "success", "error")
_ALARM_EXPRESSIONS = ("StateAlarmExpression", "MetricAlarmExpression", "EventAlarmExpression", "AndAlarmExpression",
                      "OrAlarmExpression")
_ALARM_ACTIONS = ("MethodAction", "SendEmailAction", "SendSNMPAction", "RunScriptAction", "CreateTaskAction")


def _alarm_description() -> Any:
    return vim.alarm.AlarmDescription(
        expr=types(_ALARM_EXPRESSIONS), stateOperator=enum_elements(vim.alarm.StateAlarmExpression.StateOperator),
        metricOperator=enum_elements(vim.alarm.MetricAlarmExpression.MetricOperator),
        hostSystemConnectionState=enum_elements(vim.HostSystem.ConnectionState),
        virtualMachinePowerState=enum_elements(vim.VirtualMachine.PowerState),
        datastoreConnectionState=elements(("connected", "disconnected")),
        hostSystemPowerState=enum_elements(vim.HostSystem.PowerState),
        virtualMachineGuestHeartbeatStatus=enum_elements(vim.ManagedEntity.Status),
        entityStatus=enum_elements(vim.ManagedEntity.Status), action=types(_ALARM_ACTIONS))


def _scheduler_description() -> Any:
    detail = vim.scheduler.ScheduledTaskDescription.SchedulerDetail
    kinds = {"OnceTaskScheduler": "once", "HourlyTaskScheduler": "hourly", "DailyTaskScheduler": "daily",
             "WeeklyTaskScheduler": "weekly", "MonthlyByDayTaskScheduler": "monthly"}
    return vim.scheduler.ScheduledTaskDescription(
        action=types(("MethodAction",)), state=elements(_TASK_STATES),
        schedulerInfo=[detail(key=t.key, label=t.label, summary=t.summary, frequency=kinds[name])
                       for name, t in zip(kinds, types(tuple(kinds)), strict=True)],
        dayOfWeek=enum_elements(VmomiSupport.GetWsdlType("urn:vim25", "DayOfWeek")),
        weekOfMonth=enum_elements(VmomiSupport.GetWsdlType("urn:vim25", "WeekOfMonth")))


def task_description() -> Any:
    methods = ("VirtualMachine.clone", "VirtualMachine.instantClone", "VirtualMachine.powerOn",
               "VirtualMachine.powerOff", "VirtualMachine.reset", "VirtualMachine.reconfigure",
               "VirtualMachine.destroy", "VirtualMachine.createSnapshot", "VirtualMachine.revert",
               "VirtualMachine.removeAllSnapshots", "VirtualMachineSnapshot.revert", "VirtualMachineSnapshot.remove",
               "Folder.destroy", "ProvisioningChecker.checkInstantClone", "ProvisioningChecker.checkClone")
    return vim.TaskDescription(methodInfo=elements(methods), state=enum_elements(vim.TaskInfo.State),
                               reason=types(("TaskReasonUser", "TaskReasonSystem", "TaskReasonAlarm",
                                             "TaskReasonSchedule")))


def _license() -> Any:
    lic = vim.LicenseManager.LicenseInfo(licenseKey="00000-00000-00000-00000-00000", editionKey="eval",
                                         name="Evaluation Mode", total=0, costUnit="",
                                         properties=[vmodl.KeyAnyValue(key="expirationHours", value=1440)])
    return {"source": vim.LicenseManager.EvaluationLicense(remainingHours=1440), "sourceAvailable": True,
            "licensedEdition": "", "licenses": [lic],
            "evaluation": vim.LicenseManager.EvaluationInfo(properties=[
                vmodl.KeyAnyValue(key="expirationHours", value=1440)])}


def fill_content(twin: Twin) -> None:
    """Add the managers a vCenter's ServiceContent lists and the twin has no methods for."""
    world = twin.world
    content = twin.si.props["content"]

    def add(moid: str, kind: type, **props: Any) -> Any:
        existing = world.objects.get(moid)
        return existing.ref if existing is not None else world.add(Manager(world, moid, kind, **props)).ref

    content.alarmManager = content.alarmManager or add("AlarmManager", vim.alarm.AlarmManager,
                                                       defaultExpression=[], description=_alarm_description())
    content.scheduledTaskManager = content.scheduledTaskManager or add(
        "ScheduledTaskManager", vim.scheduler.ScheduledTaskManager, scheduledTask=[],
        description=_scheduler_description())
    content.customizationSpecManager = content.customizationSpecManager or add(
        "CustomizationSpecManager", vim.CustomizationSpecManager, info=[])
    content.diagnosticManager = content.diagnosticManager or add("DiagMgr", vim.DiagnosticManager)
    content.ipPoolManager = content.ipPoolManager or add("IpPoolManager", vim.IpPoolManager)
    content.dvSwitchManager = content.dvSwitchManager or add("DVSManager", vim.dvs.DistributedVirtualSwitchManager)
    content.localizationManager = content.localizationManager or add("LocalizationManager", vim.LocalizationManager,
                                                                     catalog=[])
    content.storageResourceManager = content.storageResourceManager or add("StorageResourceManager",
                                                                           vim.StorageResourceManager)
    content.overheadMemoryManager = content.overheadMemoryManager or add("OverheadMemoryManager",
                                                                         vim.OverheadMemoryManager)
    content.vmCompatibilityChecker = content.vmCompatibilityChecker or add("CompatChecker",
                                                                           vim.vm.check.CompatibilityChecker)
    _fill_managers(twin, world)


def _fill_managers(twin: Twin, world: World) -> None:
    """Required properties of the managers the builder made."""
    objects = world.objects
    objects["TaskManager"].props.setdefault("description", task_description())
    objects["SessionManager"].props.setdefault("defaultLocale", "en")
    objects["SessionManager"].props.setdefault("messageLocaleList", ["en"])
    objects["SessionManager"].props.setdefault("supportedLocaleList", ["en"])
    auth = objects["AuthorizationManager"]
    auth.props.setdefault("description", vim.AuthorizationDescription(
        privilege=elements(("System.Anonymous", "System.View", "System.Read")), privilegeGroup=elements(("System",))))
    for key, value in _license().items():
        if not objects["LicenseManager"].props.get(key):
            objects["LicenseManager"].props[key] = value
    guest_ops = objects["guestOperationsManager"]
    if guest_ops.props.get("aliasManager") is None:
        guest_ops.props["aliasManager"] = world.add(Manager(world, "guestOperationsAliasManager",
                                                            vim.vm.guest.AliasManager)).ref

