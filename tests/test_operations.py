"""The persisted-operation mechanism (forkscale/workloads/operations): batches, pause, resume, cancel,
the health gate, waiting steps, one executor at a time, and kill -9 at any point then a re-run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from forkscale.ledger import Ledger, LedgerError, Operation, OperationBusy, PlannedStep, Step
from forkscale.workloads.operations import (
    Busy,
    Control,
    OperationRunner,
    Outcome,
    describe_plan,
    done,
    failed,
    operation_doc,
    progress_line,
    waiting,
)

REPO = Path(__file__).resolve().parent.parent


class Journal:
    """A toy kind whose steps write `target` into a directory once (idempotent, like real steps),
    logging every time a step starts and ends."""

    name = "journal"

    def __init__(self, root: Path, *, fail: frozenset[str] = frozenset(), wait_for: Path | None = None,
                 delay_s: float = 0.0, gate: int = 0) -> None:
        self.root = root
        self.fail = set(fail)
        self.wait_for = wait_for
        self.delay_s = delay_s
        self.gate = gate
        self.started: list[str] = []
        self.finished = False

    def concurrency(self, op: Operation) -> int:
        return int(op.params.get("concurrency", 2))

    def max_failures(self, op: Operation, ran: list[Step]) -> int:
        return self.gate

    async def begin(self, op: Operation) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def run_step(self, op: Operation, step: Step, control: Control) -> Outcome:
        self.started.append(step.target)
        with (self.root / "log").open("a") as log:
            log.write(f"start {step.target}\n")
        if step.target in self.fail:
            return failed(f"{step.target} is broken")
        if step.detail.get("claimed_by") and self.wait_for is not None and not self.wait_for.exists():
            return waiting("release")
        await control.sleep(self.delay_s)
        (self.root / step.target).write_text(str(step.batch))
        return done(wrote=step.target)

    async def stragglers(self, op: Operation) -> list[PlannedStep]:
        return []

    async def finish(self, op: Operation) -> str | None:
        self.finished = True
        return None

    async def stopped(self, op: Operation) -> None:
        (self.root / "stopped").write_text(op.state)


def plan(n: int, per_batch: int = 3, claimed: tuple[int, ...] = ()) -> list[PlannedStep]:
    return [PlannedStep(batch=i // per_batch + 1, action="write", target=f"t{i:02d}",
                        detail={"claimed_by": "ann"} if i in claimed else {}) for i in range(n)]


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(tmp_path / "state.sqlite") as led:
        yield led


def test_batches_run_in_order_and_the_plan_is_recorded(ledger: Ledger, tmp_path: Path) -> None:
    steps = plan(7)
    assert describe_plan(steps)[0] == "  batch 1: write 3: t00, t01, t02"
    op = ledger.operations.start("vdi", "journal", {"concurrency": 2}, steps, created_by="test")
    kind = Journal(tmp_path / "out")
    final = asyncio.run(OperationRunner(ledger, {"journal": kind}).run(op.id))
    assert final.state == "done" and kind.finished
    assert kind.started == [f"t{i:02d}" for i in range(7)]  # batch by batch, in plan order
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("t")) == kind.started
    doc = operation_doc(ledger, final)
    assert doc["progress"]["done"] == 7 and doc["executor"] is None
    assert progress_line(doc).startswith("journal #1 of vdi: done, 7/7 steps done")
    with pytest.raises(LedgerError):
        ledger.operations.set_state(op.id, "running")  # done is final


def test_one_open_operation_per_pool(ledger: Ledger) -> None:
    first = ledger.operations.start("vdi", "journal", {}, plan(2), created_by="test")
    with pytest.raises(OperationBusy, match="operation 1"):
        ledger.operations.start("vdi", "journal", {}, plan(2), created_by="test")
    ledger.operations.start("workers", "journal", {}, plan(2), created_by="test")  # another pool: fine
    ledger.operations.set_state(first.id, "cancelled", "operator")
    ledger.operations.start("vdi", "journal", {}, plan(2), created_by="test")


def test_health_gate_pauses_with_the_reason_and_resume_retries(ledger: Ledger, tmp_path: Path) -> None:
    op = ledger.operations.start("vdi", "journal", {}, plan(6), created_by="test")
    kind = Journal(tmp_path / "out", fail=frozenset({"t01"}))
    paused = asyncio.run(OperationRunner(ledger, {"journal": kind}).run(op.id))
    assert paused.state == "paused"
    assert "health gate: 1 of 3 step(s) failed" in (paused.reason or "") and "t01 is broken" in (paused.reason or "")
    assert "t03" not in kind.started  # the next batch never started
    kind.fail.clear()  # the image was fixed
    ledger.operations.set_state(op.id, "running", "resumed by test")
    final = asyncio.run(OperationRunner(ledger, {"journal": kind}).run(op.id))
    assert final.state == "done" and (tmp_path / "out" / "t01").exists()


def test_waiting_steps_are_asked_again_while_later_batches_run(ledger: Ledger, tmp_path: Path) -> None:
    released = tmp_path / "released"
    op = ledger.operations.start("vdi", "journal", {}, plan(6, claimed=(0,)), created_by="test")
    kind = Journal(tmp_path / "out", wait_for=released)

    async def main() -> Operation:
        task = asyncio.create_task(OperationRunner(ledger, {"journal": kind}, poll_s=0.02).run(op.id))
        deadline = time.monotonic() + 10
        while not (tmp_path / "out" / "t05").exists():  # every other step done; t00 still waits
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert [s.state for s in ledger.operations.steps(op.id) if s.target == "t00"] == ["waiting"]
        assert not task.done()
        released.write_text("ann logged off")
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(main()).state == "done"
    assert (tmp_path / "out" / "t00").exists()


def test_pause_and_cancel_from_another_connection(ledger: Ledger, tmp_path: Path) -> None:
    op = ledger.operations.start("vdi", "journal", {"concurrency": 1}, plan(9), created_by="test")
    kind = Journal(tmp_path / "out", delay_s=0.05)

    async def main() -> Operation:
        task = asyncio.create_task(OperationRunner(ledger, {"journal": kind}, poll_s=0.01).run(op.id))
        while len(kind.started) < 2:
            await asyncio.sleep(0.005)
        with Ledger(ledger.path) as other:  # `forkscale rollout pause` in another process
            other.operations.set_state(op.id, "paused", "operator")
        return await asyncio.wait_for(task, 10)

    paused = asyncio.run(main())
    assert paused.state == "paused" and paused.reason == "operator"
    left = [s for s in ledger.operations.steps(op.id) if s.state == "pending"]
    assert len(left) >= 6  # nothing new started once paused; the interrupted step is pending again
    runner = OperationRunner(ledger, {"journal": kind})
    cancelled = asyncio.run(runner.stop(op.id, "cancelled", "operator gave up"))
    assert cancelled.state == "cancelled" and (tmp_path / "out" / "stopped").read_text() == "cancelled"
    assert asyncio.run(runner.run(op.id)).state == "cancelled"  # nothing runs a cancelled operation


def test_one_executor_at_a_time_and_a_dead_one_is_replaced(ledger: Ledger, tmp_path: Path) -> None:
    op = ledger.operations.start("vdi", "journal", {}, plan(2), created_by="test")
    assert ledger.operations.claim(op.id, "otherhost:4242:abc", ttl_s=60)
    with pytest.raises(Busy, match="otherhost:4242:abc"):
        asyncio.run(OperationRunner(ledger, {"journal": Journal(tmp_path / "a")}).run(op.id))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    assert ledger.operations.claim(op.id, f"{socket.gethostname()}:{dead.pid}:x", ttl_s=60,
                                   take_over="otherhost:4242:abc")
    final = asyncio.run(OperationRunner(ledger, {"journal": Journal(tmp_path / "b")}).run(op.id))
    assert final.state == "done"  # a holder on this machine whose pid is gone is taken over at once


CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from forkscale.ledger import Ledger
    from forkscale.workloads.operations import OperationRunner
    from tests.test_operations import Journal
    with Ledger({state!r}) as ledger:
        op = ledger.operations.open("vdi")
        print("running", flush=True)
        asyncio.run(OperationRunner(ledger, {{"journal": Journal(Path({out!r}), delay_s=0.02)}}).run(op.id))
""")


def test_kill_9_at_random_moments_then_rerun_finishes_without_redoing_done_steps(tmp_path: Path) -> None:
    state, out = tmp_path / "state.sqlite", tmp_path / "out"
    with Ledger(state) as ledger:
        op = ledger.operations.start("vdi", "journal", {"concurrency": 3}, plan(30), created_by="test")
    rng = random.Random(14)
    script = CHILD.format(repo=str(REPO), state=str(state), out=str(out))
    for _ in range(6):
        with Ledger(state) as ledger:
            done_before = {s.target for s in ledger.operations.steps(op.id, ["done"])}
        log_before = (out / "log").read_text().splitlines() if (out / "log").exists() else []
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        assert child.stdout is not None and child.stdout.readline().strip() == "running"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        started_after = [line.split()[1] for line in (out / "log").read_text().splitlines()[len(log_before):]] \
            if (out / "log").exists() else []
        assert not done_before & set(started_after), "a step marked done ran again"
    with Ledger(state) as ledger:
        final = asyncio.run(OperationRunner(ledger, {"journal": Journal(out)}).run(op.id))
        assert final.state == "done"
        assert {p.name for p in out.iterdir() if p.name.startswith("t")} == {f"t{i:02d}" for i in range(30)}
        assert json.dumps(operation_doc(ledger, final)["progress"]).count('"done": 30') == 1
