"""Transient faults are retried wherever they occur, reads included, with the same Permanent /
Temporary mapping as tasks (forkscale.vsphere.faults) and a bounded number of attempts: the twin's
`fail_next` on every method the controller reads with, through `forkscale scale` and `forkscale
status` (and the driver calls that use the rest), ends converged, with no traceback."""

from __future__ import annotations

import asyncio

import pytest

from forkscale.commands.session import open_driver
from forkscale.spec import load_spec
from forkscale.vsphere.retry import READ_ATTEMPTS
from tests.spine_helpers import cli_process, pool_vms, write_spec

#: What `scale` calls besides its clone tasks (measured with the twin's per-method counts), and what
#: `status` calls: each one's next two calls fail with a SystemError.
SCALE_READS = ["RetrieveServiceContent", "Login", "CreatePropertyCollector", "CreateFilter", "CreateContainerView",
               "RetrievePropertiesEx", "DestroyView", "WaitForUpdatesEx", "CheckInstantClone_Task"]
STATUS_READS = ["RetrieveServiceContent", "Login", "CreatePropertyCollector", "CreateFilter", "CreateContainerView",
                "RetrievePropertiesEx", "DestroyView", "WaitForUpdatesEx"]
FAULTS = 2
#: RetrievePropertiesEx calls `status` makes (the inventory's views in parallel, the chain depths, the watcher).
STATUS_READS_OF_RPE = 8
#: Called once in these commands: one fault, which is all the command can meet.
ONCE = {("scale", "CheckInstantClone_Task"), ("status", "WaitForUpdatesEx")}


def run(*args: str) -> tuple[int, str, str]:
    proc = cli_process(*args)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def injected(twin) -> int:
    return int(twin.admin("stats")["faults_injected"])


@pytest.mark.parametrize("method", SCALE_READS)
def test_scale_rides_through_transient_faults_on(method, twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=5)
    before = injected(twin)
    faults = 1 if ("scale", method) in ONCE else FAULTS
    twin.admin("fail_next", method=method, fault="SystemError", count=faults)
    code, out, err = run("scale", "quickstart", "5", "-f", str(spec))
    assert injected(twin) - before == faults, f"{method} was not called {faults} times"
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert "quickstart: 5/5 ready" in out
    assert len(pool_vms(si)) == 5


@pytest.mark.parametrize("method", STATUS_READS)
def test_status_rides_through_transient_faults_on(method, twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=3)
    code, _, err = run("scale", "quickstart", "3", "-f", str(spec))
    assert code == 0, err[-3000:]
    before = injected(twin)
    faults = 1 if ("status", method) in ONCE else FAULTS
    twin.admin("fail_next", method=method, fault="SystemError", count=faults)
    code, out, err = run("status", "-f", str(spec))
    assert injected(twin) - before == faults, f"{method} was not called {faults} times"
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert "ready=3" in out and out.count(" ready ") == 3


def test_a_fault_that_persists_past_the_retries_is_one_line_exit_1(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=3)
    twin.admin("fail_next", method="RetrievePropertiesEx", fault="SystemError", count=100)
    code, _, err = run("status", "-f", str(spec))
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "SystemError: injected SystemError for RetrievePropertiesEx" in lines[0], err
    # every read gave up after READ_ATTEMPTS (the inventory's views are read in parallel)
    assert READ_ATTEMPTS <= int(twin.admin("stats")["faults_injected"]) <= STATUS_READS_OF_RPE * READ_ATTEMPTS


def test_a_permanent_fault_on_a_read_is_not_retried(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=3)
    twin.admin("fail_next", method="RetrievePropertiesEx", fault="InvalidArgument", count=100)
    code, _, err = run("status", "-f", str(spec))
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "InvalidArgument" in lines[0], err
    assert 1 <= int(twin.admin("stats")["faults_injected"]) <= STATUS_READS_OF_RPE  # no read sent twice


@pytest.mark.parametrize("method", ["FindChild", "ContinueRetrievePropertiesEx", "QueryPerf"])
def test_the_other_reads_are_retried_too(method, twin, si, tmp_path):
    """FindChild (is this clone ours? after a lost answer), paging (inventories past a page) and
    QueryPerf (host P-Share for the exporter), through the driver calls that use them."""
    twin.admin("freeze", vm="src-linux")
    spec_path = write_spec(tmp_path, twin, count=12)
    code, _, err = run("scale", "quickstart", "12", "-f", str(spec_path))
    assert code == 0, err[-3000:]
    spec = load_spec(spec_path)

    async def go() -> object:
        async with open_driver(spec.vcenter) as driver:
            folder = (await driver.inventory()).folders["forkscale"]
            before = injected(twin)
            twin.admin("fail_next", method=method, fault="SystemError", count=FAULTS)
            if method == "FindChild":
                found = await driver.tagged_child(folder, "quickstart-007")
                answer: object = found[1:] if found else None
            else:
                read = await driver.read_fleet(page_size=5)
                answer = (len([v for v in read.vms if v.pool_tag == "quickstart"]), bool(read.host_memory))
            assert injected(twin) - before == FAULTS
            return answer

    expected = {"FindChild": ("quickstart", "7"), "ContinueRetrievePropertiesEx": (12, True), "QueryPerf": (12, True)}
    assert asyncio.run(go()) == expected[method]
