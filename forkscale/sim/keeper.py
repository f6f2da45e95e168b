"""Keeping a twin's world in its state directory (`forkscale sim --state-dir DIR`).

At start the saved world, if any, replaces the one built from the world file; then the world is
saved whenever it has changed, at most once a second (less often for a world so large that a
save takes long: saving takes at most `MAX_SHARE` of the twin's time), and once more at a clean
stop. A twin killed outright (SIGKILL, power loss) restarts with the world as it was at its last
save: it loses at most the last second or so of changes. One twin at a time uses a state
directory (a lock held while it runs, released by the system when its process dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import persist
from .persist import StateError

if TYPE_CHECKING:
    from .service import Twin

log = logging.getLogger("forkscale.sim")
MIN_INTERVAL_S = 1.0
MAX_SHARE = 0.05


class Keeper:
    def __init__(self, twin: Twin, directory: Path) -> None:
        self.twin = twin
        self.directory = directory
        self.saved_seq = -1  # the world's change counter when it was last saved
        self.saved_at = 0.0
        self.interval = MIN_INTERVAL_S
        self.crashed = False  # stopped as if killed: no final save
        self._lock_fd: int | None = None
        self._writing: asyncio.Future[None] | None = None
        self._failed = False

    def lock(self) -> None:
        """Take the state directory (made private if new); StateError if another twin has it."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"{self.directory}: in use by another running twin") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def load(self) -> bool:
        """Replace the built world with the saved one; False if nothing was saved yet."""
        state = persist.read(self.directory, self.twin)
        if state is None:
            return False
        persist.restore(self.twin, state)
        _resume_guests(self.twin)
        self.saved_seq = self.twin.world.seq
        return True

    async def run(self) -> None:
        """Save whenever the world has changed, at most every `interval` seconds."""
        while True:
            await asyncio.sleep(self.interval)
            if self.twin.world.seq != self.saved_seq:
                await self.save()

    async def save(self) -> None:
        seq = self.twin.world.seq
        started = time.monotonic()
        try:
            data = persist.snapshot(self.twin)
        except Exception as exc:  # a twin bug must not stop the twin: say it once, keep serving
            self._warn(f"world not saved to {self.directory}: {exc!r}")
            return
        self._writing = asyncio.ensure_future(asyncio.to_thread(persist.write, self.directory, data))
        try:
            await asyncio.shield(self._writing)
        except OSError as exc:
            self._warn(f"world not saved to {self.directory}: {exc.strerror}")
            return
        self.saved_seq, self.saved_at = seq, time.time()
        self.interval = max(MIN_INTERVAL_S, (time.monotonic() - started) / MAX_SHARE)

    async def close(self) -> None:
        """At stop: the last save (unless crashed), then the directory is released."""
        try:
            if self._writing is not None:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await self._writing
            if not self.crashed and self.twin.world.seq != self.saved_seq:
                persist.write(self.directory, persist.snapshot(self.twin))
                self.saved_seq = self.twin.world.seq
        finally:
            self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def stats(self) -> dict[str, Any]:
        return {"state_dir": str(self.directory), "state_saved_seq": self.saved_seq, "world_seq": self.twin.world.seq}

    def _warn(self, message: str) -> None:
        if not self._failed:
            log.warning("%s", message)
        self._failed = True


def _resume_guests(twin: Twin) -> None:
    """Guests that were booting when the twin stopped come up as they would have."""
    from .ops.power import guest_up_later
    from .vm import VM

    for vm in twin.world.instances(VM):
        if (vm.power_state == "poweredOn" and not vm.frozen and not vm.guest.tools_running
                and vm.guest.agent == "simulated"):
            guest_up_later(vm, "guest_resume" if vm.mem.forked_at is not None else "guest_boot")
