"""A source that thaws mid-run (a power cycle) stops instant clones from it at once, and any clone
made from it after the thaw is removed: it is a copy of a running machine, with its IP on the
network. The clones still to make step down to linked clones, and the pool converges."""

from __future__ import annotations

import time
from datetime import datetime

from tests.spine_helpers import cli_process, write_spec

POOL = "quickstart"
COUNT = 60


def clones(twin) -> dict[str, dict]:
    """The pool's clones as the twin holds them: guest IP, and when an instant clone was made."""
    from forkscale.sim.vm import VM

    def read(t) -> dict[str, dict]:
        made = {}
        for _, r in t.events.items.forward(0):
            ev = r.event
            if getattr(ev, "eventTypeId", "") == "com.vmware.vc.VmInstantClonedEvent" and ev.vm is not None:
                made[ev.vm.vm._moId] = ev.createdTime  # by moref: a name is used again by the clone's next rung
        return {vm.name: {"ip": vm.guest.ip, "instant_at": made.get(vm.moid)} for vm in t.world.instances(VM)
                if vm.extra.get("forkscale.pool") == POOL and not vm.extra.get("forkscale.source")}

    return twin.call(read)


def source_ip(twin) -> str:
    from forkscale.sim.vm import VM

    return twin.call(lambda t: next(vm.guest.ip for vm in t.world.instances(VM) if vm.name == "src-linux"))


def test_a_source_thawed_mid_run_leaves_no_clone_made_after_the_thaw(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    # slow enough that the thaw lands mid-run, with clone tasks in flight
    spec = write_spec(tmp_path, twin, count=COUNT, extra_pool={
        "budgets": {"vcenter": 8, "per_host": 8, "per_datastore": 8, "rate_per_s": 40}})
    proc = cli_process("-v", "scale", POOL, str(COUNT), "-f", str(spec))
    deadline = time.monotonic() + 120
    while len(clones(twin)) < 15:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    twin.admin("lose_frozen", vm="src-linux")  # a power cycle: running again, not frozen
    thawed = datetime.now().astimezone()
    out, err = proc.communicate(timeout=240)
    assert "Traceback" not in err, err[-4000:]
    assert proc.returncode == 0, err[-4000:]
    assert f"{POOL}: {COUNT}/{COUNT} ready" in out
    assert "instant->linked:SourceThawed" in out

    vms = clones(twin)
    assert len(vms) == COUNT
    late = sorted(name for name, v in vms.items() if v["instant_at"] is not None and v["instant_at"] > thawed)
    assert late == [], f"instant clones made after the thaw survived: {late}"
    running_copies = sorted(name for name, v in vms.items() if v["ip"] == source_ip(twin))
    assert running_copies == []
    assert "thawed" in err
