"""The processes of the twin's simulated guests: one table per boot of each VM.

A new boot starts with the guest's base processes; a clone of a frozen source resumes with its
source's processes, and there the freeze call (the process that froze the source) has returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

if TYPE_CHECKING:
    from .vm import VM
    from .world import World

FIRST_PID = 1000
_BASE_LINUX = [(1, "systemd", "/sbin/init"), (612, "vmtoolsd", "/usr/bin/vmtoolsd")]
_BASE_WINDOWS = [(4, "System", "System"), (2212, "vmtoolsd.exe",
                                           '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"')]


@dataclass
class GuestProcess:
    pid: int
    name: str
    owner: str
    cmd_line: str
    start: float
    end: float | None = None
    exit_code: int | None = None
    freeze: bool = False

    def info(self) -> Any:
        dt = datetime.fromtimestamp
        return vim.vm.guest.ProcessManager.ProcessInfo(
            name=self.name, pid=self.pid, owner=self.owner, cmdLine=self.cmd_line, startTime=dt(self.start, tz=UTC),
            endTime=dt(self.end, tz=UTC) if self.end is not None else None, exitCode=self.exit_code)


@dataclass
class ProcessTable:
    """The processes of one boot of one guest."""

    boot: float | None
    next_pid: int = FIRST_PID
    procs: dict[int, GuestProcess] = field(default_factory=dict)

    def start(self, name: str, owner: str, cmd_line: str, now: float, *, freeze: bool = False) -> GuestProcess:
        proc = GuestProcess(pid=self.next_pid, name=name, owner=owner, cmd_line=cmd_line, start=now, freeze=freeze)
        self.procs[proc.pid] = proc
        self.next_pid += 1
        return proc


class GuestProcesses:
    """The process tables of the world's simulated guests, kept in step with instant clones."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.tables: dict[str, ProcessTable] = {}
        world.clone_hooks.append(self.on_clone)

    def table(self, vm: VM) -> ProcessTable:
        """The process table of the VM's current boot (a new boot starts empty)."""
        t = self.tables.get(vm.moid)
        if t is None or t.boot != vm.boot_time:
            if len(self.tables) > 1024:
                for moid in [m for m in self.tables if m not in self.world.objects]:
                    del self.tables[moid]
            t = self.tables[vm.moid] = ProcessTable(boot=vm.boot_time)
            base = _BASE_WINDOWS if vm.guest_id.startswith("win") else _BASE_LINUX
            owner = "NT AUTHORITY\\SYSTEM" if vm.guest_id.startswith("win") else "root"
            for pid, name, cmd in base:
                t.procs[pid] = GuestProcess(pid=pid, name=name, owner=owner, cmd_line=cmd, start=vm.boot_time or 0.0)
        return t

    def on_clone(self, source: VM, clone: VM) -> None:
        """A clone of a frozen source resumes with the source's processes; its freeze call returns 0."""
        src = self.tables.get(source.moid)
        if src is None or src.boot != source.boot_time:
            return
        now = self.world.now()
        procs = {}
        for pid, p in src.procs.items():
            q = replace(p)
            if q.freeze and q.end is None:
                q.end, q.exit_code = now, 0
            procs[pid] = q
        self.tables[clone.moid] = ProcessTable(boot=clone.boot_time, next_pid=src.next_pid, procs=procs)
