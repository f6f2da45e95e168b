"""Errors that carry the decision a caller has to make.

Like kopf's PermanentError/TemporaryError split: vSphere faults are mapped once, in the
driver, onto "retry later" or "don't bother", so the engine never inspects fault names.
"""

from __future__ import annotations


class ForkscaleError(Exception):
    """Base of every error forkscale raises on purpose."""


class SpecError(ForkscaleError):
    """A pool spec (or CLI input) is wrong. `path` names the field, e.g. `pools[0].network.cidr`.

    The CLI prints `error: <path>: <message>` and exits 2; nothing has been created.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class PermanentError(ForkscaleError):
    """Retrying the same call will fail the same way (e.g. InvalidState for this rung)."""

    def __init__(self, message: str, fault: str = "") -> None:
        super().__init__(message)
        self.fault = fault or type(self).__name__


class TemporaryError(ForkscaleError):
    """Worth retrying after `delay` seconds (TaskInProgress, network errors, busy hosts)."""

    def __init__(self, message: str, fault: str = "", delay: float = 1.0) -> None:
        super().__init__(message)
        self.fault = fault or type(self).__name__
        self.delay = delay
