"""`serve` runs every pool's running operation in the background, next to the pool's policy loop.

Each round of a pool's loop pokes this: a running operation of the pool (started over the API, by
a command whose process died, or resumed from any process) that nothing here executes gets a task.
Another live process executing it is left alone (`Busy`) and looked at again next round. At
shutdown the tasks are cancelled: a step cancelled mid-way stays `running` in the ledger and is
run again (idempotently) by whoever resumes the operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from forkscale.core.errors import ForkscaleError
from forkscale.workloads.operations.runner import Busy, OperationRunner

log = logging.getLogger("forkscale.operations")


class Background:
    def __init__(self, runner: OperationRunner, on_error: Callable[[str, str], None]) -> None:
        self.runner = runner
        self.on_error = on_error
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def poke(self, pool: str) -> None:
        """Start executing the pool's running operation if it is due and nothing here executes it."""
        op = self.runner.ledger.operations.open(pool)
        if op is None or op.state != "running" or op.id in self.tasks:
            return
        self.tasks[op.id] = asyncio.create_task(self._run(op.id, pool), name=f"operation:{op.id}:{pool}")

    def running(self, pool: str) -> bool:
        op = self.runner.ledger.operations.open(pool)
        return op is not None and op.id in self.tasks

    async def _run(self, op_id: int, pool: str) -> None:
        try:
            final = await self.runner.run(op_id, wait_schedule=False)
            if final.state == "paused" and final.reason:
                self.on_error(pool, f"{final.kind} #{final.id} paused: {final.reason}")
        except Busy as exc:
            log.debug("%s", exc)
        except asyncio.CancelledError:
            raise
        except ForkscaleError as exc:
            self.on_error(pool, f"operation {op_id} stopped: {exc}")
        except Exception as exc:  # keep serve up; the next round tries again
            log.exception("pool %s: operation %d failed", pool, op_id)
            self.on_error(pool, f"operation {op_id} stopped: {type(exc).__name__}: {exc}")
        finally:
            self.tasks.pop(op_id, None)

    def drop(self, pool: str) -> None:
        """Stop executing the pool's operation here (another replica owns the pool now)."""
        for op_id, task in list(self.tasks.items()):
            if task.get_name().endswith(f":{pool}"):
                task.cancel()
                self.tasks.pop(op_id, None)

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
