"""What the layers above may ask of vSphere: small protocols, one per role.

The engine, per-host sources, workloads and the exporter depend on these, never on the pyVmomi
driver (`forkscale.vsphere.driver.Driver` implements them all; `mypy` checks that it does). A
second implementation — an informer-backed model, another vCenter client, a test double — only
has to offer the role its caller uses. Errors are `PermanentError` / `TemporaryError` with the
vSphere fault's name, never pyVmomi exceptions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from forkscale.core.errors import ForkscaleError, PermanentError, TemporaryError
from forkscale.vsphere.model import CloneRequest, FleetRead, GuestLogin, GuestProcess, Inventory, VmDetail

#: hook(method, seconds, fault name or None), called when a vCenter task ends.
TaskHook = Callable[[str, float, str | None], None]


class TaskTimeout(TemporaryError):
    """A task outlived its deadline: it is still queued or running in vCenter, and may yet succeed.

    `task` is its moref, so the caller can ask later whether it ended (`Provisioner.task_ended`).
    """

    def __init__(self, message: str, task: str) -> None:
        super().__init__(message, "Timeout", delay=2.0)
        self.task = task


class TaskLost(TemporaryError):
    """vCenter no longer knows a task it accepted (it restarted: tasks in flight are lost with it).

    The task will never end, and whatever it was doing may or may not have happened: the caller
    looks for its effect (the clone's VM by name and tags) before doing the work again.
    """

    def __init__(self, message: str, task: str) -> None:
        super().__init__(message, "TaskLost", delay=0.5)
        self.task = task


class SourceThawed(PermanentError):
    """An instant clone refused, or made too late: its source thawed (a power cycle, a reboot).

    An instant clone of a running source is a copy of a running machine, with its IP on the
    network. `clone` is the VM made after the thaw (None when none was), which the caller removes.
    """

    def __init__(self, message: str, source: str, *, clone: str | None = None) -> None:
        super().__init__(message, "SourceThawed")
        self.source = source
        self.clone = clone


class VCenterUnavailable(ForkscaleError):
    """vCenter stayed unreachable (refused connections, failed TLS or login) past the outage budget.

    Neither Permanent nor Temporary on purpose: no rung, retry or fallback can help, so it ends
    the run (exit 1, this one line); `serve` fails the round and tries again at the next.
    """


class InventoryReader(Protocol):
    """Batched reads: the whole inventory, or a few VMs."""

    @property
    def api_version(self) -> str:
        """vCenter's `about.apiVersion` (e.g. "8.0.3.0"), read at login."""
        ...

    @property
    def epoch(self) -> int:
        """Which vCenter session this is: it changes when vCenter restarted (or the session expired)."""
        ...

    async def inventory(self) -> Inventory: ...

    async def vm_detail(self, vm: str, *, tags: tuple[str, ...] = ()) -> VmDetail: ...

    async def vm_props(self, vms: list[str], paths: list[str]) -> dict[str, dict[str, Any]]: ...

    async def chain_depths(self, vms: list[str]) -> dict[str, int]: ...

    async def tagged_child(self, folder: str, name: str) -> tuple[str, str | None, str | None] | None: ...

    async def snapshots_named(self, vm: str, name: str) -> list[str]: ...

    async def snapshot_names(self, vm: str) -> dict[str, str]: ...

    async def hosts_entering_maintenance(self) -> set[str]:
        """Host morefs with an EnterMaintenanceMode_Task queued or running."""
        ...


class Provisioner(Protocol):
    """Make and remove VMs (each call waits for its vCenter task, with a deadline)."""

    async def instant_clone(self, source: str, req: CloneRequest) -> str: ...

    async def check_instant_clone(self, source: str, req: CloneRequest) -> list[str]: ...

    async def clone(self, source: str, req: CloneRequest, *, linked: bool, snapshot: str | None) -> str: ...

    async def power_off(self, vm: str) -> None: ...

    async def power_on(self, vm: str) -> None: ...

    async def task_ended(self, task: str) -> bool: ...

    async def destroy(self, vm: str) -> None: ...

    async def create_folder(self, parent: str, name: str) -> str: ...

    async def vm_folder(self) -> str: ...

    async def wait_clone_tasks_settled(self, timeout: float) -> bool: ...


class Mover(Protocol):
    """Change what a VM is made of or where it runs, keeping the VM (day-2 operations)."""

    async def create_snapshot(self, vm: str, name: str) -> str:
        """A snapshot of the VM's disks (no memory), its moref."""
        ...

    async def relocate(self, vm: str, *, host: str | None = None, datastore: str | None = None) -> None:
        """RelocateVM_Task: to `host` (vMotion) and/or `datastore` (Storage vMotion: every disk backing is
        moved and none shared, so a linked clone is consolidated into a full one)."""
        ...

    async def promote_disks(self, vm: str) -> None:
        """PromoteDisks_Task(unlink=true): the VM's disks stop depending on what they were cloned from."""
        ...

    async def enter_maintenance(self, host: str, timeout_s: int) -> None: ...

    async def exit_maintenance(self, host: str) -> None: ...


class UserDisks(Protocol):
    """Users' independent-persistent disks: created with a clone, detached before it is destroyed for a
    replacement and attached to the replacement (forkscale/vsphere/disks.py)."""

    async def vm_disk_files(self, vm: str) -> list[str]: ...

    async def add_disk(self, vm: str, path: str, *, size_gb: int | None, mode: str = "independent_persistent") -> None:
        ...

    async def remove_disk(self, vm: str, path: str, *, delete: bool) -> bool: ...

    async def delete_disk(self, path: str) -> None: ...


class GuestAccess(Protocol):
    """What the guest reports, and the freeze started inside it."""

    async def wait_ready(self, vm: str, timeout: float) -> str: ...

    async def freeze_guestops(self, vm: str, user: str, password: str, program: str, args: str) -> None: ...

    async def is_frozen(self, vm: str) -> bool: ...

    async def wait_frozen(self, vm: str, timeout: float) -> None: ...

    def source_thawed(self, source: str) -> bool:
        """Whether vCenter reported a source the driver clones from thawed since it was seen frozen."""
        ...


class GuestOperations(Protocol):
    """Programs and files inside a guest through VMware Tools, with no network to the guest
    (StartProgramInGuest, ListProcessesInGuest, TerminateProcessInGuest, the guest file manager and
    its one-shot transfer URLs). A guest that cannot take the call yet is a TemporaryError
    (`GuestOperationsUnavailable`); a refused login a PermanentError (`InvalidGuestLogin`)."""

    async def guest_start(self, vm: str, login: GuestLogin, program: str, args: str, *,
                          cwd: str | None = None) -> int: ...

    async def guest_processes(self, vm: str, login: GuestLogin, pids: list[int]) -> list[GuestProcess]: ...

    async def guest_terminate(self, vm: str, login: GuestLogin, pid: int) -> bool: ...

    async def guest_temp_dir(self, vm: str, login: GuestLogin, prefix: str) -> str: ...

    async def guest_make_dir(self, vm: str, login: GuestLogin, path: str) -> None: ...

    async def guest_remove_dir(self, vm: str, login: GuestLogin, path: str) -> None: ...

    async def guest_upload(self, vm: str, login: GuestLogin, path: str, data: bytes | Path, mode: int) -> None: ...

    async def guest_download(self, vm: str, login: GuestLogin, path: str, sink: Callable[[bytes], None]) -> int: ...


class FleetReader(Protocol):
    """The exporter's view: one fleet read per refresh, and task timings as tasks end."""

    task_hooks: list[TaskHook]

    async def read_fleet(self, *, page_size: int = 1000) -> FleetRead: ...


class VSphere(InventoryReader, Provisioner, Mover, UserDisks, GuestAccess, GuestOperations, FleetReader, Protocol):
    """Every role at once: what the engine is given."""

    def stop_waiting(self) -> None:
        """The program is stopping: calls waiting through a vCenter outage give up now (`VCenterUnavailable`)."""
        ...
