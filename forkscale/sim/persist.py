"""The twin's world on disk, so that a restarted twin keeps it, as a restarted vCenter keeps its
inventory: every entity (VMs with their disks, snapshots, extraConfig, guest state...), the disk
files, the events and the finished tasks' history, the managers' stored properties (custom field
definitions...), identifiers and MACs handed out, the guests' process tables.

What a restarted vCenter forgets is not kept: sessions (clients log in again) with their
collectors, filters and views, and tasks: a task in flight is lost with its effect, and its Task
object is gone (`ManagedObjectNotFound`); finished tasks remain in the task history.

A state is a pickle of those objects. References from them to what is rebuilt at start (the
world, the twin, the managers) are stored by name and bound to the new ones on load; pyVmomi
objects are stored as their type's name and their fields. A state is only loaded by the twin
build that wrote it (`fingerprint`): the classes it holds are that build's. The file is written
atomically (a temporary file renamed over it), readable by its owner only; since loading a pickle
runs code, keep the state directory private (it is made 0700).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import itertools
import os
import pickle
import random
import secrets
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport

from . import disks
from .mo import MO, Manager

if TYPE_CHECKING:
    from .service import Twin

STATE_FILE = "world.state"
FORMAT = 1
# World attributes rebuilt at start (from the world file, the options, or empty), never saved.
WORLD_FRESH = {"objects", "index", "time_scale", "log", "_changed", "started_mono", "started_wall", "latencies",
               "memory", "guest_credentials", "clone_hooks", "tasks", "faults", "sandboxes"}


class StateError(Exception):
    """A saved state that cannot be loaded (one line: the path and why)."""


@functools.cache
def fingerprint() -> str:
    """What a state's classes must match: this twin's sources and pyVmomi's version."""
    digest = hashlib.sha256(f"{FORMAT}:{getattr(VmomiSupport, 'version', '')}".encode())
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# pyVmomi objects, by type name and fields -------------------------------------------------------
def _vmodl(name: str) -> Any:
    return VmomiSupport.GetVmodlType(name)


def _ref(name: str, moid: str) -> Any:
    return _vmodl(name)(moid)


def _data(name: str, fields: dict[str, Any]) -> Any:
    obj = _vmodl(name)()
    for key, value in fields.items():
        setattr(obj, key, value)
    return obj


def _array(name: str, items: list[Any]) -> Any:
    return _vmodl(name)(items)


def _enum(name: str, value: str) -> Any:
    return _vmodl(name)(value)


def _reduce_vmodl(obj: Any) -> Any:
    """How to pickle a pyVmomi object or type (NotImplemented: anything else)."""
    if isinstance(obj, VmomiSupport.ManagedObject):
        return _ref, (VmomiSupport.GetVmodlName(type(obj)), obj._moId)
    if isinstance(obj, VmomiSupport.DataObject):
        fields = {p.name: getattr(obj, p.name) for p in obj._GetPropertyList()}
        return _data, (VmomiSupport.GetVmodlName(type(obj)), {k: v for k, v in fields.items() if v is not None})
    if isinstance(obj, VmomiSupport.Array):
        return _array, (VmomiSupport.GetVmodlName(type(obj)), list(obj))
    if isinstance(obj, VmomiSupport.Enum):
        return _enum, (VmomiSupport.GetVmodlName(type(obj)), str(obj))
    if isinstance(obj, type) and issubclass(obj, (VmomiSupport.DataObject, VmomiSupport.ManagedObject,
                                                  VmomiSupport.Enum, VmomiSupport.Array)):
        return _vmodl, (VmomiSupport.GetVmodlName(obj),)
    return NotImplemented


_PLAIN = {str, int, float, bool, type(None), bytes, tuple, list, dict, set, frozenset}


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, twin: Twin, saved: set[int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.twin = twin
        self.saved = saved  # ids of the MOs saved in full

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) in _PLAIN:  # most of what a world holds: decided at once
            return None
        if obj is self.twin.world:
            return "world"
        if obj is self.twin:
            return "twin"
        if isinstance(obj, MO) and id(obj) not in self.saved:
            return ("mo", obj.moid)  # a manager, a task, a collector: bound again (or to None) on load
        if isinstance(obj, (asyncio.Event, asyncio.Future, asyncio.AbstractEventLoop)):
            return "none"
        if isinstance(obj, (types.FunctionType, types.MethodType)) and "<" in obj.__qualname__:
            return "none"  # a lambda or a closure: not part of the state
        return None

    def reducer_override(self, obj: Any) -> Any:
        return _reduce_vmodl(obj)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, twin: Twin) -> None:
        super().__init__(file)
        self.twin = twin

    def persistent_load(self, pid: Any) -> Any:
        if pid == "world":
            return self.twin.world
        if pid == "twin":
            return self.twin
        if isinstance(pid, tuple) and pid[0] == "mo":
            return self.twin.world.objects.get(pid[1])
        return None


def persistent(mo: MO) -> bool:
    """Whether an object is saved in full (entities, snapshots...), not rebuilt at start."""
    return not (mo.transient or mo.session_scoped or isinstance(mo, Manager))


# saving ------------------------------------------------------------------------------------------
def snapshot(twin: Twin) -> bytes:
    """The twin's state, as bytes (on the twin's loop: the world does not change meanwhile)."""
    world = twin.world
    objects = [mo for mo in world.objects.values() if persistent(mo)]
    state = {
        "format": FORMAT, "fingerprint": fingerprint(), "saved_wall": time.time(), "sim_now": world.sim_seconds(),
        "user": twin.user, "password": twin.password, "instance_uuid": twin.instance_uuid,
        "world": {k: v for k, v in vars(world).items() if k not in WORLD_FRESH and k != "_ids"},
        "ids": {prefix: int(repr(counter)[6:-1]) for prefix, counter in world._ids.items()},
        "file_ids": int(repr(disks._file_ids)[6:-1]),
        "objects": objects,
        "managers": {mo.moid: dict(mo.props) for mo in world.objects.values() if isinstance(mo, Manager)},
        "events": (twin.events.items, twin.events.next_key),
        "tasks": [r for r in world.tasks.history.journal.records if r.info.state in ("success", "error")],
        "guests": twin.guests.tables,
        "guest_rpc": (twin.guest_rpc._secret, twin.guest_rpc.seq, twin.guest_rpc.clones),
    }
    out = io.BytesIO()
    _Pickler(out, twin, {id(mo) for mo in objects}).dump(state)
    return out.getvalue()


def write(directory: Path, data: bytes) -> None:
    """Replace the saved state atomically (a crash leaves the old state or the new one)."""
    path = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# loading -----------------------------------------------------------------------------------------
def read(directory: Path, twin: Twin) -> dict[str, Any] | None:
    """The saved state bound to a freshly built twin, or None if there is none."""
    path = directory / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        head = _Unpickler(io.BytesIO(data), twin)
        state = head.load()
    except Exception as exc:
        raise StateError(f"{path}: not a twin state ({type(exc).__name__}); remove it or start with --fresh") from exc
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint():
        raise StateError(f"{path}: saved by another twin build; remove it or start with --fresh")
    return state


def restore(twin: Twin, state: dict[str, Any]) -> None:
    """Put a saved state in place of the freshly built inventory (before the twin serves anyone)."""
    world = twin.world
    for mo in [mo for mo in world.objects.values() if persistent(mo)]:
        del world.objects[mo.moid]
        world.index.get(type(mo.ref), {}).pop(mo.moid, None)
    for key, value in state["world"].items():
        _assign(world, key, value)
    world._ids = {prefix: itertools.count(n) for prefix, n in state["ids"].items()}
    disks._file_ids = itertools.count(max(state["file_ids"], int(repr(disks._file_ids)[6:-1])))
    for mo in state["objects"]:
        world.objects[mo.moid] = mo
        world.index.setdefault(type(mo.ref), {})[mo.moid] = mo
        if isinstance(getattr(mo, "_cache", None), dict):
            mo._cache.clear()  # renderings cached under the old run's versions
    for moid, props in state["managers"].items():
        manager = world.objects.get(moid)
        if isinstance(manager, Manager):
            manager.props.update(props)
    root = world.objects.get(twin.root.moid)
    if root is not None:
        twin.root = root  # type: ignore[assignment]  # the saved root folder (a Folder)
    twin.instance_uuid = state["instance_uuid"]
    twin.password = state["password"]  # a restarted vCenter keeps its credentials (an explicit one wins)
    twin.events.items, twin.events.next_key = state["events"]
    history = world.tasks.history
    for record in state["tasks"]:
        history.journal.append(record.seq, record)
    history.next_seq = max([history.next_seq, *(r.seq + 1 for r in state["tasks"])])
    twin.guests.tables = state["guests"]
    twin.guest_rpc._secret, twin.guest_rpc.seq, twin.guest_rpc.clones = state["guest_rpc"]
    _continue_clock(twin, state)
    world.seq += 1
    world.structure += 1


def _assign(world: Any, key: str, value: Any) -> None:
    """Put a saved world attribute in place: containers and objects are filled in place, since what
    the build made may already hold them (a manager's callback bound to the world's custom fields)."""
    current = getattr(world, key, None)
    if current is None or type(current) is not type(value):
        setattr(world, key, value)
    elif isinstance(value, dict):
        current.clear()
        current.update(value)
    elif isinstance(value, list):
        current[:] = value
    elif isinstance(value, set):
        current.clear()
        current.update(value)
    elif isinstance(value, random.Random):
        current.setstate(value.getstate())
    elif hasattr(current, "__dict__") and not isinstance(value, (int, float, str, bytes, tuple, frozenset)):
        vars(current).clear()
        vars(current).update(vars(value))
    else:
        setattr(world, key, value)


def _continue_clock(twin: Twin, state: dict[str, Any]) -> None:
    """Simulated time goes on from where it was, plus the time the twin was down (hosts kept running)."""
    world = twin.world
    scale = world.time_scale if world.time_scale > 0 else 1.0
    now_wall, now_mono = time.time(), time.monotonic()
    sim_now = state["sim_now"] + max(0.0, now_wall - state["saved_wall"]) / scale
    world.started_mono = now_mono - sim_now * scale
    world.started_wall = now_wall - sim_now * scale
