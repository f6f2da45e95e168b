"""Per-VM guest sandboxes: the twin's Linux guests run real programs and keep real files.

Each Linux VM that guest operations touch gets a directory under the twin's sandbox directory
(a fresh temporary directory per twin, removed when it stops; with a state directory, its
`guests` directory, kept across restarts like the rest of the world). That directory is the guest's `/`
as far as guest operations go — its "disk": `/tmp`, `/root`, `/home`, `/var`, `/opt` ... and a
copy of a few files of the host's `/etc` (passwd, group, alternatives, ld.so, ca-certificates'
links; never a private key or shadow) with the VM's own hostname. The host's `/usr` (and `/bin`,
`/lib*` where they are directories) are mounted read-only, so programs have a userland.

A program started with `StartProgramInGuest` runs for real, with bubblewrap (`bwrap`):

* in its VM's root, with the host's system directories read-only, a private `/proc` and `/dev`;
* with no network (its own network namespace: only loopback, as for a clone whose NICs are
  disconnected), its own PID, IPC and UTS namespaces (the VM's hostname) and a new session;
* as uid 0 of the guest without any capability (as root: `--cap-drop ALL`; otherwise in a user
  namespace), so it can write its own sandbox but cannot remount or touch the host;
* through `/bin/bash -c` (or `/bin/sh`) as VMware Tools do on Linux, so redirections in
  `arguments` work; with `envVariables` as its whole environment when given, else a login's.

It ends with its own exit status (128+N when a signal killed it). `TerminateProcessInGuest`,
powering the VM off or destroying it, and stopping the twin kill it, and everything it started
(the PID namespace ends with it). An instant clone starts with a copy of its source's sandbox
(the clone's disk is its source's); linked and full clones start with a fresh one (the twin keeps
no guest files per snapshot).

Without `bwrap` (Debian/Ubuntu package `bubblewrap`) guest programs cannot run; StartProgramInGuest
then answers a `GuestOperationsUnavailable` fault that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import proctree
from .guestfs import GuestFS, GuestFsError

if TYPE_CHECKING:
    from .vm import VM
    from .world import World

log = logging.getLogger("forkscale.sim")
HOST_SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
SKELETON = (("tmp", 0o1777), ("root", 0o700), ("home", 0o755), ("var", 0o755), ("var/tmp", 0o1777),
            ("var/log", 0o755), ("run", 0o755), ("opt", 0o755), ("srv", 0o755), ("mnt", 0o755), ("etc", 0o755))
#: what a guest's /etc gets from the host's (copied, so the guest may change it)
ETC_COPY = ("passwd", "group", "hosts", "nsswitch.conf", "host.conf", "os-release", "debian_version",
            "lsb-release", "issue", "profile", "profile.d", "bash.bashrc", "shells", "environment", "login.defs",
            "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "mime.types",
            "ssl/certs", "ca-certificates.conf", "ca-certificates", "python3", "python3.11", "gai.conf")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _copy_etc(dest: Path) -> None:
    for name in ETC_COPY:
        src = Path("/etc") / name
        target = dest / "etc" / name
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                target.symlink_to(os.readlink(src))
            elif src.is_dir():
                shutil.copytree(src, target, symlinks=True, ignore_dangling_symlinks=True)
            elif src.is_file():
                shutil.copy2(src, target)


class Sandboxes:
    """The world's guest sandboxes and the real programs running in them."""

    def __init__(self, world: World, base: Path | None = None) -> None:
        self.world = world
        self._base = base
        self.bwrap = shutil.which("bwrap")
        self.system = tuple(n for n in HOST_SYSTEM if os.path.isdir(f"/{n}") and not os.path.islink(f"/{n}"))
        self.links = {n: os.readlink(f"/{n}") for n in HOST_SYSTEM if os.path.islink(f"/{n}")}
        self.running: dict[tuple[str, int], asyncio.subprocess.Process] = {}
        self.kept = False  # the files stay when the twin stops (see keep)
        world.clone_hooks.append(self.on_clone)

    def keep(self, base: Path) -> None:
        """Keep the guests' files in `base` (a twin's state directory), across restarts."""
        base.mkdir(mode=0o700, exist_ok=True)
        self._base = base
        self.kept = True

    @property
    def base(self) -> Path:
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="forkscale-twin-guests-"))
        return self._base

    def unavailable(self) -> str | None:
        """Why guest programs cannot run here, or None."""
        if self.bwrap is None:
            return ("the twin runs guest programs in a bubblewrap sandbox, and bwrap is not installed "
                    "(apt-get install bubblewrap)")
        return None

    # disks ------------------------------------------------------------------------------------
    def root(self, vm: VM) -> Path:
        """The VM's guest root, made on first use."""
        path = self.base / vm.moid
        if not path.exists():
            self._prune()
            self._make(path, vm)
        return path

    def fs(self, vm: VM) -> GuestFS:
        return GuestFS(self.root(vm), self.system)

    def _make(self, path: Path, vm: VM) -> None:
        path.mkdir(mode=0o755)
        for sub, mode in SKELETON:
            (path / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(path / sub, mode)
        for name, target in self.links.items():
            (path / name).symlink_to(target)
        _copy_etc(path)
        self._name(path, vm)

    def _name(self, path: Path, vm: VM) -> None:
        hostname = vm.guest.hostname or vm.name
        with contextlib.suppress(OSError):
            (path / "etc" / "hostname").write_text(hostname + "\n")
            hosts = path / "etc" / "hosts"
            if hosts.is_file() and not hosts.is_symlink():
                hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost\n")

    def on_clone(self, source: VM, clone: VM) -> None:
        """An instant clone's disk is its source's: copy the source's sandbox (if it has one), /etc/hostname
        included — the clone is the source until something in it changes that."""
        src = self.base / source.moid if self._base is not None else None
        if src is None or not src.is_dir() or (self.base / clone.moid).exists():
            return
        try:
            shutil.copytree(src, self.base / clone.moid, symlinks=True)
        except OSError as exc:  # a half copy would be worse than none
            log.warning("guest sandbox of %s not copied to %s: %s", source.name, clone.name, exc)
            shutil.rmtree(self.base / clone.moid, ignore_errors=True)

    def _prune(self) -> None:
        """Remove the sandboxes of VMs that no longer exist (an unregistered VM's files stay)."""
        if self._base is None or not self._base.is_dir():
            return
        kept = {vm.moid for vm in self.world.files.unregistered.values()}
        for entry in self._base.iterdir():
            if entry.name not in self.world.objects and entry.name not in kept:
                shutil.rmtree(entry, ignore_errors=True)

    def moved(self, old_moid: str, new_moid: str) -> None:
        """A VM registered again is a new managed object with the same disk: its files follow it."""
        if self._base is None or not (self._base / old_moid).is_dir() or (self._base / new_moid).exists():
            return
        (self._base / old_moid).rename(self._base / new_moid)

    def close(self) -> None:
        for proc in list(self.running.values()):
            _kill(proc)
        self.running.clear()
        if self._base is not None and not self.kept:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    # programs ---------------------------------------------------------------------------------
    def argv(self, vm: VM, command: str, cwd: str, env: dict[str, str]) -> list[str]:
        """The bwrap command line that runs `command` through the guest's shell in `vm`'s sandbox."""
        assert self.bwrap is not None
        root = self.root(vm)
        argv = [self.bwrap, "--bind", str(root), "/"]
        for name in self.system:
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
        argv += ["--proc", "/proc", "--dev", "/dev", "--unshare-all", "--die-with-parent", "--new-session",
                 "--hostname", (vm.guest.hostname or vm.name)[:63], "--chdir", cwd, "--clearenv"]
        if os.geteuid() == 0:
            argv += ["--cap-drop", "ALL"]
        else:
            argv += ["--unshare-user", "--uid", "0", "--gid", "0"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        shell = "/bin/bash" if os.path.exists("/usr/bin/bash") or os.path.exists("/bin/bash") else "/bin/sh"
        return [*argv, "--", shell, "-c", command]

    def default_env(self, vm: VM, user: str) -> dict[str, str]:
        home = "/root" if user == "root" else f"/home/{user}"
        return {"PATH": DEFAULT_PATH, "HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/bash",
                "LANG": "C.UTF-8", "HOSTNAME": vm.guest.hostname or vm.name}

    async def start(self, vm: VM, pid: int, program: str, arguments: str, *, cwd: str, env: dict[str, str],
                    on_exit: Callable[[int], None]) -> None:
        """Run `program arguments` in `vm`'s sandbox as guest process `pid`; `on_exit(code)` when it ends
        (also when it is killed because the VM was powered off, reset or destroyed)."""
        command = f"{shlex.quote(program)} {arguments}".rstrip()
        proc = await asyncio.create_subprocess_exec(
            *self.argv(vm, command, cwd, env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        key = (vm.moid, pid)
        self.running[key] = proc
        job = asyncio.get_running_loop().create_task(self._watch(vm, key, proc, on_exit))
        self.world.tasks.background.add(job)
        job.add_done_callback(self.world.tasks.background.discard)

    async def _watch(self, vm: VM, key: tuple[str, int], proc: asyncio.subprocess.Process,
                     on_exit: Callable[[int], None]) -> None:
        boot = vm.boot_time
        waiter = asyncio.ensure_future(proc.wait())
        try:
            while not waiter.done():
                if not vm.alive or vm.power_state != "poweredOn" or vm.boot_time != boot:
                    _kill(proc)
                    break
                change = asyncio.ensure_future(self.world.changed().wait())
                await asyncio.wait({waiter, change}, return_when=asyncio.FIRST_COMPLETED)
                change.cancel()
            code = await waiter
        finally:
            if not waiter.done():  # the twin is stopping: the program goes with it
                _kill(proc)
                waiter.cancel()
            self.running.pop(key, None)
        if vm.alive and vm.boot_time == boot:
            on_exit(128 - code if code < 0 else code)

    def is_running(self, vm: VM, pid: int) -> bool:
        proc = self.running.get((vm.moid, pid))
        return proc is not None and proc.returncode is None

    async def terminate(self, vm: VM, pid: int, wait_s: float = 5.0) -> int | None:
        """SIGTERM the guest program `pid` (its sandbox, and all it started, end with it); its exit
        code once it ended (SIGKILL after `wait_s`), or None if it was not running."""
        proc = self.running.get((vm.moid, pid))
        if proc is None or proc.returncode is not None:
            return None
        noted = proctree.signal_tree(proc.pid, signal.SIGTERM)
        try:
            code = await asyncio.wait_for(asyncio.shield(proc.wait()), wait_s)
        except TimeoutError:
            _kill(proc)
            code = await proc.wait()
        proctree.kill_left(noted)  # a sandbox signalled while bwrap was still setting it up
        return 128 - code if code < 0 else code


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a sandbox (bwrap) and everything under it."""
    if proc.returncode is None:
        proctree.kill_left(proctree.signal_tree(proc.pid, signal.SIGKILL))


def is_executable(fs: GuestFS, path: str) -> bool:
    """Whether `path` names a file in the guest (symlinks followed, inside the guest)."""
    for _ in range(40):
        try:
            entry = fs.stat(path)
        except GuestFsError:
            return False
        if entry.kind != "symlink":
            return entry.kind == "file" and bool(entry.mode & 0o111)
        target = entry.target or ""
        path = target if target.startswith("/") else f"{path.rsplit('/', 1)[0]}/{target}"
    return False
