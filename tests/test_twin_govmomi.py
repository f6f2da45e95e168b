"""govmomi (Go) against the twin: a client written against the published API works unchanged.

`tests/govmomi/main.go` is built once per session in GOPATH mode against Debian's
golang-github-vmware-govmomi-dev (installed with golang-go by scripts/setup-test-deps.sh), then
run against a fresh twin with TLS verified against the twin's CA. It exercises what a Go
client decodes strictly: typed morefs in anyType slots (task results), enums in property
changes, typed faults in task errors and SOAP faults, paging, property.Wait, PerformanceManager
counters by name, and events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "govmomi"
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src/github.com/vmware/govmomi"


@pytest.fixture(scope="session")
def twincheck(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (scripts/setup-test-deps.sh installs golang-go)")
    if not GOVMOMI.is_dir():
        pytest.skip(f"govmomi sources not found at {GOVMOMI} (scripts/setup-test-deps.sh installs "
                    "golang-github-vmware-govmomi-dev)")
    out = tmp_path_factory.mktemp("govmomi") / "twincheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": "", "CGO_ENABLED": "0"}
    if not env.get("GOCACHE") and not os.environ.get("HOME"):
        env["GOCACHE"] = str(out.parent / "cache")
    build = subprocess.run([go, "build", "-o", str(out), "main.go"], cwd=HERE, env=env, capture_output=True,
                           text=True, timeout=600)
    assert build.returncode == 0, f"go build failed:\n{build.stdout}\n{build.stderr}"
    return out


def test_govmomi_client_works_against_the_twin(twin, twincheck):
    run = subprocess.run([str(twincheck), "-url", twin.url, "-ca", twin.ca_file, "-user", twin.user],
                         env={**os.environ, "TWIN_PASSWORD": twin.password}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"twincheck failed:\n{run.stdout}\n{run.stderr}"
    out = json.loads(run.stdout)
    assert out["apiType"] == "VirtualCenter" and out["apiVersion"].startswith("8.0")
    assert out["sessionActive"] is True
    assert out["vms"] == ["src-linux", "src-win"] and out["hosts"] == 4
    assert out["sourcePowerState"] == "poweredOn"
    assert out["pages"] == -(-out["pagedObjects"] // 3) and out["pagedObjects"] > 10
    kind, moid = out["instantClone"].split(":")
    assert kind == "VirtualMachine" and moid.startswith("vm-")
    assert out["clonePowerState"] == "poweredOn"  # an enum decoded from a property change
    assert out["cloneGuestinfo"] == "from-go"
    assert out["cloneChain"] == out["sourceChain"] + 1
    assert out["cloneSharedMB"] > 0
    assert out["linkedClone"].startswith("vm-")
    assert out["taskFault"] == "*types.DuplicateName"
    assert out["soapFault"] == "types.ManagedObjectNotFound"
    perf = out["hostPerf"]
    assert perf["mem.shared.average"] > perf["mem.sharedcommon.average"] > 0
    assert out["clonedEvents"] == ["gov-linked-1", "gov-ic-1"]
    stats = twin.admin("stats")
    assert stats["methods"]["InstantClone_Task"] == 2 and stats["methods"]["ContinueRetrievePropertiesEx"] >= 1
