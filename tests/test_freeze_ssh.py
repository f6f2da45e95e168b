"""The SSH freeze path against a REAL OpenSSH server (tests/fixtures/sshd.py) and the twin.

The "source guest" reachable over SSH is this machine's sshd. `ssh.guest_script` points at a
stand-in for guest/linux/forkscale-guest that records each call and, for `freeze`, does what the
real script ends with: `vmware-rpctool "instantclone.freeze"`, here the twin's stand-in
(forkscale/sim/rpctool.py), which freezes the VM it names over the twin's guest RPC and blocks as
the frozen source; for each instant clone it forks a continuation that reports the clone's guest
ready, like the real script's resume part. The controller only sees vCenter: it waits for
`runtime.instantCloneFrozen` through the property collector before cloning.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from pyVmomi import vim

from forkscale.ledger import Ledger
from tests.fixtures import sshd as sshd_plugin
from tests.fixtures.sshd import SshServer, generate_ed25519_keypair
from tests.spine_helpers import cli, write_spec

sshd = sshd_plugin.sshd
pytestmark = pytest.mark.sshd
RPCTOOL = Path(__file__).resolve().parents[1] / "forkscale" / "sim" / "rpctool.py"


class Guest:
    """The stand-in guest script on the sshd side, and what it recorded."""

    def __init__(self, tmp_path: Path, twin, vm: str) -> None:
        self.dir = tmp_path / "guest"
        self.dir.mkdir()
        self.record = self.dir / "record"
        self.whoami = self.dir / "whoami"  # which twin VM this "guest" is (the backdoor knows, in a real VM)
        self.whoami.write_text(vm)
        pw = self.dir / "twin-password"
        pw.write_text(twin.password)
        os.chmod(pw, 0o600)
        py, tool = shlex.quote(sys.executable), shlex.quote(str(RPCTOOL))
        ready = f'{py} {tool} "info-set guestinfo.forkscale.status ready"'
        self.script = self.dir / "forkscale-guest"
        self.script.write_text(f"""#!/bin/sh
echo "$1 vm=$(cat {shlex.quote(str(self.whoami))}) pid=$$" >> {shlex.quote(str(self.record))}
case "$1" in
  prepare) exit 0 ;;
  freeze)
    export FORKSCALE_TWIN_URL={shlex.quote(twin.url)} FORKSCALE_TWIN_CA={shlex.quote(twin.ca_file)}
    export FORKSCALE_TWIN_USER={shlex.quote(twin.user)} FORKSCALE_TWIN_PASSWORD_FILE={shlex.quote(str(pw))}
    export FORKSCALE_TWIN_VM="$(cat {shlex.quote(str(self.whoami))})"
    export FORKSCALE_TWIN_CONTINUE={shlex.quote(ready)}
    export FORKSCALE_TWIN_FREEZE_TIMEOUT=60 FORKSCALE_TWIN_RETRY=2
    exec {py} {tool} instantclone.freeze ;;
  *) exit 2 ;;
esac
""")
        self.script.chmod(0o755)

    def lines(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def stop(self) -> None:
        """End the blocked freeze call(s) this test started (by pid), if still running."""
        for line in self.lines():
            if line.startswith("freeze "):
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(line.rsplit("pid=", 1)[1]), signal.SIGTERM)


@pytest.fixture
def guest_factory(tmp_path, twin):
    made: list[Guest] = []

    def make(vm: str) -> Guest:
        g = Guest(tmp_path, twin, vm)
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop()


def ssh_spec(tmp_path: Path, twin, server: SshServer, guest: Guest, *, known_hosts: Path | None = None,
             **pool) -> Path:
    ssh = {"host": server.host, "port": server.port, "user": server.user, "key_file": str(server.client_key),
           "known_hosts": str(known_hosts or server.known_hosts), "guest_script": str(guest.script)}
    return write_spec(tmp_path, twin, freeze="ssh", count=3, extra_pool={"ssh": ssh, **pool})


def vm_state(si) -> dict[str, dict]:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        return {vm.name: {"frozen": vm.runtime.instantCloneFrozen, "host": vm.runtime.host.name,
                          "extra": {o.key: o.value for o in vm.config.extraConfig}} for vm in view.view}
    finally:
        view.DestroyView()


def clones(si) -> dict[str, dict]:
    return {n: v for n, v in vm_state(si).items() if "forkscale.id" in v["extra"]}


def test_ssh_freeze_runs_the_guest_script_detached_then_clones_from_the_frozen_source(
        twin, si, tmp_path, sshd, guest_factory):
    guest = guest_factory("src-linux")
    spec = ssh_spec(tmp_path, twin, sshd, guest)
    assert vm_state(si)["src-linux"]["frozen"] is False

    assert cli("scale", "quickstart", "3", "-f", str(spec)) == 0

    steps = guest.lines()
    assert [s.split()[0] for s in steps] == ["prepare", "freeze"]  # `<script> prepare && <script> freeze`
    assert all("vm=src-linux" in s for s in steps)
    pid = int(steps[1].rsplit("pid=", 1)[1])
    assert os.path.exists(f"/proc/{pid}")  # the freeze call still blocks in the "source": it was detached
    assert vm_state(si)["src-linux"]["frozen"] is True
    made = clones(si)
    assert len(made) == 3
    assert all(v["extra"]["guestinfo.forkscale.status"] == "ready" for v in made.values())
    with Ledger(tmp_path / "state.sqlite") as ledger:
        recs = ledger.clones("quickstart", states=["ready"])
        assert {r.kind for r in recs} == {"instant"} and all(r.fallback_reason is None for r in recs)
    assert twin.admin("stats")["methods"].get("StartProgramInGuest", 0) == 0  # the freeze went over ssh


def test_a_changed_host_key_is_refused_and_nothing_is_cloned(twin, si, tmp_path, sshd, guest_factory, capsys):
    guest = guest_factory("src-linux")
    other = generate_ed25519_keypair(tmp_path / "impostor", "other-host")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{sshd.known_hosts_name} {' '.join(other.split()[:2])}\n")
    spec = ssh_spec(tmp_path, twin, sshd, guest, known_hosts=known_hosts)

    assert cli("scale", "quickstart", "3", "-f", str(spec)) == 1
    err = capsys.readouterr().err
    assert "error: pool quickstart: cannot start the freeze of src-linux over ssh" in err
    assert "has CHANGED" in err and "refusing to connect" in err
    assert "Traceback" not in err
    assert guest.lines() == []  # the guest script never ran
    assert vm_state(si)["src-linux"]["frozen"] is False
    assert clones(si) == {}
    stats = twin.admin("stats")["methods"]
    assert stats.get("InstantClone_Task", 0) == 0 and stats.get("CloneVM_Task", 0) == 0
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert ledger.clones("quickstart") == []


def play_dhcp(twin, vm_name: str, ip: str, guest: Guest, stop: threading.Event) -> threading.Thread:
    """Act as the replica's guest getting an address: once the VM exists and runs, it reports `ip`."""

    def give(t) -> bool:
        vm = next((mo for mo in t.world.of_kind(vim.VirtualMachine) if getattr(mo, "name", None) == vm_name), None)
        if vm is None or vm.power_state != "poweredOn":
            return False
        vm.guest.ip = ip
        vm.changed()
        return True

    def run() -> None:
        while not stop.is_set():
            if twin.call(give):
                guest.whoami.write_text(vm_name)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_per_host_sources_are_frozen_over_ssh_at_their_own_guest_address(
        twin, si, tmp_path, sshd, guest_factory, capsys):
    replica = "src-linux-quickstart-src-esx-02-g1"
    guest = guest_factory("nobody-yet")
    spec = ssh_spec(tmp_path, twin, sshd, guest,
                    placement={"datastores": ["ds-ssd"], "folder": "forkscale", "hosts": ["esx-02"]})
    stop = threading.Event()
    dhcp = play_dhcp(twin, replica, sshd.host, guest, stop)
    try:
        assert cli("prepare", "-f", str(spec)) == 0
    finally:
        stop.set()
        dhcp.join(timeout=5)
    assert [s.split()[:2] for s in guest.lines()] == [["prepare", f"vm={replica}"], ["freeze", f"vm={replica}"]]
    state = vm_state(si)
    assert state[replica]["frozen"] is True and state[replica]["host"] == "esx-02"
    assert state["src-linux"]["frozen"] is False

    assert cli("scale", "quickstart", "2", "-f", str(spec)) == 0
    made = clones(si)
    assert len(made) == 2 and {v["host"] for v in made.values()} == {"esx-02"}
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert {(r.source, r.kind) for r in ledger.clones("quickstart", states=["ready"])} == {(replica, "instant")}


def test_a_per_host_source_without_a_guest_address_fails_clearly_and_is_removed(
        twin, si, tmp_path, sshd, guest_factory, capsys):
    guest = guest_factory("nobody")
    spec = ssh_spec(tmp_path, twin, sshd, guest, guest_ready={"timeout_s": 0.5, "required": True},
                    placement={"datastores": ["ds-ssd"], "folder": "forkscale", "hosts": ["esx-03"]})
    capsys.readouterr()
    assert cli("prepare", "-f", str(spec)) == 1
    err = capsys.readouterr().err
    assert "guest.ipAddress" in err and "freeze: guestops" in err
    assert guest.lines() == []
    assert "src-linux-quickstart-src-esx-03-g1" not in vm_state(si)  # the half-made source was removed
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert [(r.vm_name, r.state) for r in ledger.sources("quickstart")] == [("src-linux-quickstart-src-esx-03-g1", "gone")]
