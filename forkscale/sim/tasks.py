"""Tasks with vCenter-like queueing: a global operation limit and per-host provisioning slots.

A task is created `queued`, waits for its slots (visible as the gap between `queueTime` and
`startTime`), runs for a latency drawn from the operation's distribution, then applies its
effect atomically on the event loop and ends `success` with a result or `error` with a fault.
While it runs, `info.progress` climbs in steps over its latency (`Task.run_for`), as vCenter's
long tasks report it; a task shorter than two steps jumps from 0 to 100.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from .mo import MO, wsdl_name
from .taskhistory import TaskHistory, TaskRecord

if TYPE_CHECKING:
    from .world import World


PROGRESS_STEP_S = 0.01  # real seconds between two progress updates, at least
PROGRESS_STEPS = 9  # at most: 10, 20, ... 90 %, then 100 at the end


def _method(name: str) -> Any:
    try:
        return VmomiSupport.GetWsdlMethod("urn:vim25", name)
    except KeyError:
        return None


class Slots:
    """A FIFO counting semaphore whose waiters are visible (for queueTime/startTime)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.used < self.limit and not self.waiters:
            self.used += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut in self.waiters:
                self.waiters.remove(fut)
            elif fut.done() and not fut.cancelled():
                self.release()
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.used -= 1


class Task(MO):
    kind = vim.Task
    transient = True  # a restarted vCenter forgets its tasks

    def __init__(self, world: World, moid: str, info: Any) -> None:
        super().__init__(world, moid)
        self.info = info
        self.drawn_s = 0.0  # the latency this task drew (bench/fanout.py computes the ideal from it)
        self.record: TaskRecord | None = None  # its entry in the task history

    def p_info(self) -> Any:
        return self.info

    async def run_for(self, delay: float) -> None:
        """Let `delay` real seconds pass, raising `info.progress` in steps on the way (never down)."""
        steps = min(PROGRESS_STEPS, int(delay / PROGRESS_STEP_S) - 1)
        if steps <= 0:
            await asyncio.sleep(delay)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(1, steps + 1):
            await asyncio.sleep(max(0.0, start + delay * k / (steps + 1) - loop.time()))
            percent = 100 * k // (steps + 1)
            if self.info.state == "running" and percent > (self.info.progress or 0):
                self.update(progress=percent)
        await asyncio.sleep(max(0.0, start + delay - loop.time()))

    def update(self, **fields: Any) -> None:
        # copy on write: a filter holding the previous `info` (pathSet ["info"], as pyVim's
        # WaitForTask asks) must see a different object, or the change compares equal to itself
        self.info = copy.copy(self.info)
        for k, v in fields.items():
            setattr(self.info, k, v)
        self.world.touch(self)
        if self.record is not None:
            self.record.info = self.info
            self.world.tasks.history.changed(self.record)


# The task whose body is running (set by TaskRunner for the body's own asyncio task).
CURRENT_TASK: ContextVar[Task | None] = ContextVar("forkscale_twin_task", default=None)


class RecentTasks:
    """recentTask: tasks in submission order, iterated as tasks; added and dropped in O(1)."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(self, task: Task) -> None:
        self._tasks[task.moid] = task

    def pop(self, moid: str) -> Task | None:
        return self._tasks.pop(moid, None)

    def __contains__(self, moid: object) -> bool:
        return moid in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)


class TaskRunner:
    """Creates tasks and runs their bodies under the concurrency limits."""

    def __init__(self, world: World, *, vcenter_limit: int = 640, host_limit: int = 16,
                 keep_completed: int = 2000) -> None:
        self.world = world
        self.vcenter = Slots(vcenter_limit)
        self.host_limit = host_limit
        self.hosts: dict[str, Slots] = {}
        self.recent = RecentTasks()  # TaskManager.recentTask, in submission order
        self.finished: deque[Task] = deque()  # the finished ones among them, in the order they finished
        self.keep_completed = keep_completed
        self.manager: MO | None = None  # TaskManager MO, touched when recentTask changes
        self.on_created: Callable[[Task], None] | None = None  # the event log's TaskEvent
        self.background: set[asyncio.Task[Any]] = set()
        self.completed = 0
        self.history = TaskHistory(world)

    def host_slots(self, host_moid: str) -> Slots:
        slots = self.hosts.get(host_moid)
        if slots is None:
            slots = self.hosts[host_moid] = Slots(self.host_limit)
        return slots

    def submit(self, method: str, entity: MO, body: Callable[[Task], Awaitable[Any]], *,
               host: str | None = None, user: str = "", description: str = "") -> Any:
        moid = self.world.new_id("task")
        now = self.world.now()
        from .vm import _to_dt

        info = vim.TaskInfo(
            key=moid, task=vim.Task(moid), name=_method(method), descriptionId=description or f"{wsdl_name(entity.ref)}.{method}",
            entity=entity.ref, entityName=getattr(entity, "name", entity.moid), state="queued", cancelled=False,
            cancelable=False, reason=vim.TaskReasonUser(userName=user or "twin"), queueTime=_to_dt(now),
            eventChainId=int(moid.split("-")[1]), changeTag=None)
        task = Task(self.world, moid, info)
        task.record = self.history.record(info, entity)
        self.world.add(task)
        if self.on_created is not None:
            self.on_created(task)
        self.recent.add(task)
        self.world.tasklist += 1
        self._trim()
        job = asyncio.get_running_loop().create_task(self._run(task, body, host))
        self.background.add(job)
        job.add_done_callback(self.background.discard)
        return task.ref

    async def _run(self, task: Task, body: Callable[[Task], Awaitable[Any]], host: str | None) -> None:
        from .vm import _to_dt

        slots = [self.vcenter] + ([self.host_slots(host)] if host else [])
        held: list[Slots] = []
        try:
            for s in slots:
                await s.acquire()
                held.append(s)
            task.update(state="running", startTime=_to_dt(self.world.now()), progress=0)
            CURRENT_TASK.set(task)
            result = await body(task)
            task.update(state="success", result=result, progress=100, completeTime=_to_dt(self.world.now()))
        except vmodl.MethodFault as fault:
            fault.msg = fault.msg or type(fault).__name__  # type: ignore[attr-defined]  # stubs omit MethodFault.msg
            task.update(state="error", error=fault, completeTime=_to_dt(self.world.now()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a twin bug must surface as a task error, never a hang
            task.update(state="error", completeTime=_to_dt(self.world.now()),
                        error=vmodl.fault.SystemError(msg=f"twin internal error: {exc!r}", reason=repr(exc)))
        finally:
            for s in held:
                s.release()
            self.completed += 1
            if task.moid in self.recent:
                self.finished.append(task)
            if self.manager is not None:
                self.world.touch(self.manager)

    def _trim(self) -> None:
        """Keep at most `keep_completed` finished tasks in recentTask, dropping those that finished
        first: O(1) per task, never a pass over the list."""
        dropped = False
        while len(self.finished) > self.keep_completed:
            t = self.finished.popleft()
            if self.recent.pop(t.moid) is not None:
                self.world.remove(t)
                dropped = True
        if dropped:
            self.world.tasklist += 1
        if self.manager is not None:
            self.world.touch(self.manager)

    def recent_refs(self) -> list[Any]:
        return [t.ref for t in self.recent]
