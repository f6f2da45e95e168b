"""vSphere faults mapped, once, onto the engine's retry decision (PermanentError / TemporaryError)."""

from __future__ import annotations

import re
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError

TEMPORARY_FAULTS = {"TaskInProgress", "ConnectionError", "HostCommunication", "InsufficientResourcesFault",
                    "InsufficientMemoryResourcesFault", "NotAuthenticated", "RequestCanceled", "Timedout",
                    "HostNotConnected", "SystemError"}


class LoginRefused(PermanentError):
    """vCenter refused the user name or password (`InvalidLogin`)."""

    def __init__(self, user: str) -> None:
        super().__init__(f"vCenter refused the login for {user!r}", "InvalidLogin")


class TaskFailed(Exception):
    """A vCenter task ended in error; `fault` is the task's `info.error` (a MethodFault)."""

    def __init__(self, fault: Any) -> None:
        super().__init__(getattr(fault, "msg", None) or type(fault).__name__)
        self.fault = fault


#: Fault properties every MethodFault has; the rest (e.g. DuplicateName.object) say what it is about.
_COMMON = {"dynamicType", "dynamicProperty", "msg", "faultCause", "faultMessage"}


def fault_name(fault: Any) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1]


def _short(value: Any) -> str | None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value) if str(value) else None
    moid = getattr(value, "_moId", None)
    return str(moid) if moid else None


def describe(fault: Any) -> str:
    """One line: `Type: message [field value, ...]`, never pyVmomi's multi-line dump of the fault.

    The message is vCenter's own (`localizedMessage`, which pyVmomi puts in `msg`), else the
    first `faultMessage`; the fault's own fields (the object it concerns, the property, the
    method...) follow in brackets.
    """
    name = fault_name(fault)
    msg = getattr(fault, "msg", None) or ""
    if not msg:
        msgs = [m.message for m in getattr(fault, "faultMessage", None) or [] if getattr(m, "message", None)]
        msg = msgs[0] if msgs else ""
    if not hasattr(type(fault), "_GetPropertyList"):
        msg = msg or str(fault)
        fields: list[str] = []
    else:
        fields = [f"{p.name} {v}" for p in type(fault)._GetPropertyList() if p.name not in _COMMON
                  and (v := _short(getattr(fault, p.name, None))) is not None
                  and not re.search(rf"(?<![\w.-]){re.escape(v)}(?![\w.-])", msg)]
    text = f"{name}: {msg}" if msg else name
    if fields:
        text += f" [{', '.join(fields)}]"
    return " ".join(text.split())


def is_temporary(fault: BaseException) -> bool:
    """Whether `map_fault` would say "retry later" (the same decision for reads as for tasks)."""
    return isinstance(map_fault(fault, ""), TemporaryError)


def map_fault(fault: BaseException, what: str) -> Exception:
    """One place that decides: retry later, or give up on this rung. The message is one line."""
    if isinstance(fault, (PermanentError, TemporaryError)):
        return fault
    inner = fault.fault if isinstance(fault, TaskFailed) else fault
    name = fault_name(inner)
    text = f"{what}: {describe(inner)}"
    if name == "SystemError" and "migrate.prepare" in (getattr(inner, "reason", "") or text):
        return PermanentError(text, "ChainTooDeep")
    if name in TEMPORARY_FAULTS:
        return TemporaryError(text, name, delay=2.0)
    return PermanentError(text, name)
