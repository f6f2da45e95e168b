"""vSphere faults mapped, once, onto the engine's retry decision (PermanentError / TemporaryError)."""

from __future__ import annotations

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


def fault_name(fault: Any) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1]


def map_fault(fault: BaseException, what: str) -> Exception:
    """One place that decides: retry later, or give up on this rung."""
    if isinstance(fault, (PermanentError, TemporaryError)):
        return fault
    inner = fault.fault if isinstance(fault, TaskFailed) else fault
    name = fault_name(inner)
    msg = getattr(inner, "msg", None) or str(inner) or name
    if name == "SystemError" and "migrate.prepare" in (getattr(inner, "reason", "") or msg):
        return PermanentError(f"{what}: {msg}", "ChainTooDeep")
    if name in TEMPORARY_FAULTS:
        return TemporaryError(f"{what}: {msg}", name, delay=2.0)
    return PermanentError(f"{what}: {msg}", name)
