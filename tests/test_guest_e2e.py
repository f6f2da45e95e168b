"""End to end: the real guest/linux/forkscale-guest freezes a twin VM and resumes as 4 instant clones.

The script runs for real (dash if installed, else sh) in a sandbox: FORKSCALE_ROOT is the
source's filesystem (etc/, var/, a fake sys/class/net, dev/urandom), FORKSCALE_DRY_SYSTEM=1, and
PATH holds only harmless tools plus recording stubs for the commands that change a live machine
(the test asserts none of them ran). FORKSCALE_RPCTOOL is the twin's `vmware-rpctool` stand-in:
the source's `instantclone.freeze` blocks, and for each instant clone the stand-in forks a child
that replays the script as that clone, with FORKSCALE_ROOT=<clones>/<clone name> (a copy of the
source's root, via FORKSCALE_ROOT_PER_CLONE) — see forkscale/sim/rpctool.py.

The controller side is stock pyVmomi: per-clone guestinfo in `InstantCloneSpec.config`, a manual
MAC per clone, and one property collector waiting for every clone's `status=ready`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyVim.task import WaitForTask, WaitForTasks

from tests.test_twin_guest import (
    RPCTOOL,
    chain_names,
    extra,
    find_vm,
    instant_clone_spec,
    kill_group,
    options,
    rpctool_env,
    wait_frozen,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "guest" / "linux" / "forkscale-guest"
GI = "guestinfo.forkscale"
N = 4
SOURCE_MID = "0123456789abcdef0123456789abcdef"
SAFE_TOOLS = ["awk", "sed", "cmp", "tr", "cut", "grep", "dd", "cat", "mkdir", "rm", "mv", "cp", "chmod", "ls",
              "readlink", "head", "tail", "sleep", "date", "timeout", "md5sum", "sha256sum", "sort", "env", "touch",
              "wc", "true", "false", "id", "uname", "basename", "dirname", "od", "ssh-keygen"]
SYSTEM_COMMANDS = ["ip", "modprobe", "hostname", "hwclock", "systemctl", "networkctl", "nmcli", "netplan", "ifup",
                   "ifdown", "chronyc"]
NO_OPS = ["sync", "logger"]  # harmless, but not for the test to run for real

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="guest/linux/forkscale-guest is not there yet")


def make_bin(d: Path, stub_log: Path) -> Path:
    d.mkdir()
    for tool in SAFE_TOOLS:
        found = shutil.which(tool)
        if found:
            (d / tool).symlink_to(found)
    for cmd in SYSTEM_COMMANDS:
        stub = d / cmd
        stub.write_text(f'#!/bin/sh\necho "{cmd} $*" >>{shlex.quote(str(stub_log))}\nexit 0\n')
        stub.chmod(0o755)
    for cmd in NO_OPS:
        (d / cmd).write_text("#!/bin/sh\nexit 0\n")
        (d / cmd).chmod(0o755)
    tool = d / "vmware-rpctool"
    tool.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(RPCTOOL))} "$@"\n')
    tool.chmod(0o755)
    return d


def make_source_root(root: Path) -> Path:
    """The source VM's filesystem: systemd-networkd, one vmxnet3 NIC, an ed25519 host key."""
    for d in ("etc/ssh", "etc/systemd/network", "dev", "run/systemd/system", "var/lib/dbus", "var/lib/systemd"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("tmpl\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\ttmpl.example.test tmpl\n")
    (root / "etc/machine-id").write_text(SOURCE_MID + "\n")
    (root / "var/lib/dbus/machine-id").write_text(SOURCE_MID + "\n")
    (root / "var/lib/systemd/random-seed").write_bytes(b"\0" * 512)
    (root / "dev/urandom").write_bytes(b"")
    (root / "etc/systemd/network/20-wired.network").write_text("[Match]\nName=ens192\n\n[Network]\nDHCP=yes\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@tmpl",
                    "-f", str(root / "etc/ssh/ssh_host_ed25519_key")], check=True, stdin=subprocess.DEVNULL)
    sysfs = root / "sys"
    pci = sysfs / "devices/pci0000:00/0000:0b:00.0"
    pci.mkdir(parents=True)
    (sysfs / "bus/pci/drivers/vmxnet3").mkdir(parents=True)
    (pci / "driver").symlink_to("../../../bus/pci/drivers/vmxnet3")
    (sysfs / "module/vmxnet3").mkdir(parents=True)
    (sysfs / "module/vmxnet3/refcnt").write_text("1\n")
    net = sysfs / "class/net/ens192"
    net.mkdir(parents=True)
    (net / "device").symlink_to("../../../devices/pci0000:00/0000:0b:00.0")
    (net / "type").write_text("1\n")
    (net / "address").write_text("00:50:56:80:00:01\n")
    return root


def guestinfo(i: int) -> dict[str, str]:
    values = {"id": f"web-{i}.ledger-{100 + i}", "pool": "web", "hostname": f"web-{i}.example.test",
              "ip": f"10.20.0.{11 + i}", "gateway": "10.20.0.1", "dns": "10.20.0.2,10.20.0.3",
              "mac": f"00:50:56:0a:00:{i + 1:02x}"}
    if i == N - 1:
        values["netmask"] = "255.255.255.0"  # one clone gives a netmask instead of a prefix
    else:
        values["prefix"] = "24"
    return values


def read_identity(root: Path) -> dict[str, str]:
    text = (root / "var/lib/forkscale-guest/identity").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen (openssh-client)")
def test_real_guest_script_freezes_and_resumes_as_four_clones(si, twin, tmp_path):
    src = find_vm(si, "src-linux")
    chain_before = chain_names(src)
    stub_log = tmp_path / "system-commands.log"
    stub_log.write_text("")
    bindir = make_bin(tmp_path / "bin", stub_log)
    source_root = make_source_root(tmp_path / "source-root")
    source_key = (source_root / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    clones_dir = tmp_path / "clones"
    clones_dir.mkdir()
    env = rpctool_env(twin, "src-linux", PATH=str(bindir), FORKSCALE_ROOT=source_root,
                      FORKSCALE_ROOT_PER_CLONE=clones_dir, FORKSCALE_RPCTOOL=bindir / "vmware-rpctool",
                      FORKSCALE_DRY_SYSTEM="1", FORKSCALE_SYSLOG="0", FORKSCALE_GUESTINFO_WAIT="10",
                      FORKSCALE_STEP_TIMEOUT="30")
    shell = shutil.which("dash") or shutil.which("sh") or "/bin/sh"
    log_path = tmp_path / "guest.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen([shell, str(SCRIPT), "freeze"], env=env, cwd=tmp_path, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # the source: status=frozen, then frozen for real
        wait_frozen(si, src, timeout=30)
        assert extra(src)[f"{GI}.status"] == "frozen"
        assert src.guest.toolsRunningStatus == "guestToolsNotRunning"

        # the controller: N instant clones, each with its identity in guestinfo and a manual MAC
        specs = {f"web-{i}": guestinfo(i) for i in range(N)}
        tasks = [src.InstantClone_Task(instant_clone_spec(name, {f"{GI}.{k}": v for k, v in gi.items()}, mac=gi["mac"]))
                 for name, gi in specs.items()]
        WaitForTasks(tasks, si=si)
        clones = {t.info.result.name: t.info.result for t in tasks}

        def settled(values):
            status = {moid: options(v).get(f"{GI}.status", "") for moid, v in values.items()}
            if any(s.startswith("error:") for s in status.values()):
                raise AssertionError(f"a clone failed: {status}\n{log_path.read_text()}")
            return all(s == "ready" for s in status.values())

        try:
            final = wait_until(si, list(clones.values()), "config.extraConfig", settled, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- guest log ---\n{log_path.read_text()}") from None

        machine_ids, host_keys, ips, hostnames = set(), set(), set(), set()
        for name, clone in clones.items():
            gi = specs[name]
            reported = options(final[clone._moId])
            root = clones_dir / name
            short = gi["hostname"].split(".")[0]
            # machine-id: new, 32 hex, the one reported to vSphere
            mid = (root / "etc/machine-id").read_text().strip()
            assert re.fullmatch(r"[0-9a-f]{32}", mid) and mid != SOURCE_MID
            assert (root / "var/lib/dbus/machine-id").read_text().strip() == mid
            assert reported[f"{GI}.machine_id"] == mid
            machine_ids.add(mid)
            # SSH host keys: regenerated (ed25519, as the source had), the public key reported
            pub = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
            assert pub != source_key and pub.split()[2] == f"root@{short}"
            assert reported[f"{GI}.ssh_host_key"] == " ".join(pub.split()[:2])
            host_keys.add(pub.split()[1])
            # hostname and hosts
            assert (root / "etc/hostname").read_text() == f"{short}\n"
            hosts = (root / "etc/hosts").read_text()
            assert f"{gi['ip']}\t{gi['hostname']} {short} # forkscale-guest" in hosts
            assert "tmpl" not in hosts
            hostnames.add(short)
            # network config: systemd-networkd, matching the clone's MAC, static address from guestinfo
            network = (root / "etc/systemd/network/00-forkscale-ens192.network").read_text()
            assert f"MACAddress={gi['mac']}" in network
            assert f"Address={gi['ip']}/24" in network
            assert f"Gateway={gi['gateway']}" in network
            assert [line for line in network.splitlines() if line.startswith("DNS=")] == ["DNS=10.20.0.2", "DNS=10.20.0.3"]
            assert "DHCP=no" in network
            ident = read_identity(root)
            assert (ident["id"], ident["pool"], ident["ip"], ident["mac"], ident["machine_id"]) == (
                gi["id"], "web", gi["ip"], gi["mac"], mid)
            ips.add(ident["ip"])
            # vSphere's side: the manual MAC is on the NIC, the guest agent is up
            assert clone.guest.net[0].macAddress == gi["mac"]
            assert clone.guest.toolsRunningStatus == "guestToolsRunning"
        assert len(machine_ids) == len(host_keys) == len(ips) == len(hostnames) == N

        # the source is untouched and still frozen, with exactly one more delta; its call still blocks
        assert (source_root / "etc/machine-id").read_text() == SOURCE_MID + "\n"
        assert (source_root / "etc/hostname").read_text() == "tmpl\n"
        assert (source_root / "etc/ssh/ssh_host_ed25519_key.pub").read_text() == source_key
        assert not (source_root / "var/lib/forkscale-guest").exists()
        assert src.runtime.instantCloneFrozen is True
        assert len(chain_names(src)) == len(chain_before) + 1
        assert proc.poll() is None
        # dry-system: nothing that changes a live machine was run
        assert stub_log.read_text() == ""

        # a power cycle loses the freeze: the source's call fails and the script reports it
        WaitForTask(src.ResetVM_Task(), si=si)
        assert proc.wait(timeout=20) != 0
        assert extra(src)[f"{GI}.status"].startswith("error:")
    finally:
        kill_group(proc)
        log.close()
    assert os.path.getsize(log_path) > 0
