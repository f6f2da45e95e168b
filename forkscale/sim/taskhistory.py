"""Task history: every task's TaskInfo as it was last seen, and TaskHistoryCollectors over it.

`TaskManager.recentTask` shows the running and recently finished Task objects; the history goes
further back (vCenter keeps it in its database) and outlives the Task objects themselves. A
TaskHistoryCollector (`TaskManager.CreateCollectorForTasks`) pages through the tasks its
TaskFilterSpec matches, oldest first (forkscale.sim.history has the paging rules); its
`latestPage` follows the tasks in it as they run, so a WaitForUpdatesEx on it sees them progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import vim, vmodl

from .dispatch import Ctx, method
from .history import HistoryCollector, Journal, count, entity_matches, lineage, open_collector
from .mo import MO

if TYPE_CHECKING:
    from .world import World

KEEP = 20_000  # tasks kept in the history, oldest dropped first
_TIMES = {"queuedTime": "queueTime", "startedTime": "startTime", "completedTime": "completeTime"}


@dataclass
class TaskRecord:
    seq: int
    info: Any  # the task's TaskInfo, replaced as the task runs
    direct: frozenset[str]
    parents: frozenset[str]
    ancestors: frozenset[str]


class TaskHistory:
    """The world's task journal and the collectors that watch it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.journal: Journal[TaskRecord] = Journal(KEEP)
        self.next_seq = 1
        self.collectors: set[TaskCollector] = set()

    def record(self, info: Any, entity: MO) -> TaskRecord:
        rec = TaskRecord(self.next_seq, info, *lineage(entity))
        self.next_seq += 1
        self.journal.append(rec.seq, rec)
        self.changed(rec)
        return rec

    def changed(self, rec: TaskRecord) -> None:
        """A task in the history changed: collectors showing it report their latestPage again."""
        for c in list(self.collectors):
            if not c.alive:
                self.collectors.discard(c)
            elif c.matches(rec):
                self.world.touch(c)


def matches(rec: TaskRecord, spec: Any) -> bool:
    if spec is None:
        return True
    info = rec.info
    if spec.entity is not None and not entity_matches(spec.entity.entity._moId, spec.entity.recursion or "self",
                                                      rec.direct, rec.parents, rec.ancestors):
        return False
    if spec.state and info.state not in spec.state:
        return False
    if spec.time is not None and not _in_time(info, spec.time):
        return False
    if spec.userName is not None:
        user = getattr(info.reason, "userName", "") or ""
        if not (user in set(spec.userName.userList or []) or (spec.userName.systemUser and not user)):
            return False
    if spec.eventChainId and info.eventChainId not in spec.eventChainId:
        return False
    if spec.rootTaskKey and info.key not in spec.rootTaskKey:
        return False
    # The twin's tasks are started by users: none comes from an alarm, a scheduled task, an
    # activation or a parent task, and none carries tags.
    return not (spec.alarm or spec.scheduledTask or spec.activationId or spec.parentTaskKey or spec.tag)


def _in_time(info: Any, when: Any) -> bool:
    stamp = getattr(info, _TIMES.get(when.timeType or "queuedTime", "queueTime"), None)
    if stamp is None:
        return False
    if when.beginTime is not None and stamp < _aware(when.beginTime):
        return False
    return not (when.endTime is not None and stamp > _aware(when.endTime))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class TaskCollector(HistoryCollector[TaskRecord]):
    """A TaskHistoryCollector over the task journal."""

    kind = vim.TaskHistoryCollector

    def matches(self, record: TaskRecord) -> bool:
        return matches(record, self.spec)

    def item(self, record: TaskRecord) -> Any:
        return record.info


@method("CreateCollectorForTasks")
def create_collector(ctx: Ctx, this: MO, filter: Any) -> Any:  # noqa: A002
    if filter is not None and filter.entity is not None:
        ctx.twin.resolve(filter.entity.entity, ctx.session)
    history = ctx.twin.world.tasks.history

    def make(moid: str) -> TaskCollector:
        c = TaskCollector(ctx.twin.world, moid, history.journal, filter)
        history.collectors.add(c)
        return c

    return open_collector(ctx, make, TaskCollector, "TaskHistoryCollector")


def _tasks_collector(this: MO) -> TaskCollector:
    if not isinstance(this, TaskCollector):
        raise vmodl.fault.InvalidArgument(msg="not a task history collector", invalidProperty="_this")
    return this


@method("ReadNextTasks")
def read_next(ctx: Ctx, this: MO, maxCount: int) -> list[Any]:  # noqa: N803
    return _tasks_collector(this).read_next(count(maxCount))


@method("ReadPreviousTasks")
def read_previous(ctx: Ctx, this: MO, maxCount: int) -> list[Any]:  # noqa: N803
    return _tasks_collector(this).read_previous(count(maxCount))
