"""Decision reasons are data: the metric label is the decision's code, never parsed from its sentence.

The controller runs in-process against the twin with every policy sentence reworded on the way
out of the policy runner; `forkscale_policy_decisions_total{reason}` must still say `min` for the
first round (raised to the policy's min) and `cooldown` for the rounds after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

from forkscale.commands.session import open_engine
from forkscale.observe.telemetry import Telemetry
from forkscale.policy import Decision, runner, strategies
from forkscale.spec import load_spec
from forkscale.workloads import controller as controller_module
from forkscale.workloads.controller import Controller
from tests.serve_helpers import base_pool, write_pool_spec

LABEL = re.compile(r'forkscale_policy_decisions_total\{direction="(\w+)",pool="desk",reason="([\w-]+)"\} (\S+)')


@dataclasses.dataclass(frozen=True)
class Reworded(Decision):
    """Every decision sentence, wherever it is written (strategies, runner, controller), reworded."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", f"Entscheidung: {self.reason[::-1]}")


def test_rewording_every_sentence_leaves_the_metric_labels_unchanged(twin, tmp_path, monkeypatch):
    for module in (strategies, runner, controller_module):
        monkeypatch.setattr(module, "Decision", Reworded)
    twin.admin("freeze", vm="src-linux")
    policy = {"strategy": "headroom", "headroom": 1, "min": 2, "max": 4, "cooldown_up_s": 60, "evaluate_every_s": 0.05}
    spec = load_spec(write_pool_spec(tmp_path, twin, base_pool("desk", policy=policy)))
    telemetry = Telemetry()
    seen: list[str] = []
    codes: list[str] = []

    async def scenario() -> dict[tuple[str, str], float]:
        async with open_engine(spec, telemetry=telemetry) as engine:
            controller = Controller(engine, telemetry=telemetry)
            run = asyncio.create_task(controller.run())
            try:
                for _ in range(400):
                    labels = {(m[1], m[2]): float(m[3]) for m in LABEL.finditer(telemetry.render().decode())}
                    if labels.get(("none", "cooldown"), 0) >= 2:
                        seen.extend(a["reason"] for a in controller.status("desk")["actions"])
                        seen.append(controller.status("desk")["last_decision"]["reason"])
                        codes.extend(a["code"] for a in controller.status("desk")["actions"])
                        return labels
                    await asyncio.sleep(0.05)
                raise AssertionError(f"no cooldown decision recorded: {labels}")
            finally:
                controller.stop()
                await run

    labels = asyncio.run(scenario())
    assert labels[("up", "min")] == 1
    assert set(reason for _, reason in labels) == {"min", "cooldown"}
    assert codes == ["min"]  # status and the API carry the code next to the sentence
    assert seen and all(s.startswith("Entscheidung: ") for s in seen)  # the sentences were reworded
