"""The in-guest script guest/linux/forkscale-guest, run for real under dash, bash and busybox sh.

Every run gets a sandbox root (FORKSCALE_ROOT: etc/, var/, a fake sys/class/net, dev/urandom)
per clone and a stand-in vmware-rpctool (a small sh script written into tmp_path) that serves
`info-get` from one file per guestinfo key and records every `info-set`. Runs use
FORKSCALE_DRY_SYSTEM=1 unless a test says otherwise; the commands that would change the live
machine (ip, modprobe, hostname, hwclock, systemctl, ...) are also present on PATH as recording
stubs, so a DRY run that executed one of them is caught, and the non-dry tests check the
command sequence the script would run on a real clone.

PATH holds only a curated set of harmless tools (host binaries, or busybox applets for the
"busybox-userland" variant, which mimics an Alpine-like guest), so nothing can touch the machine
the tests run on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "guest" / "linux" / "forkscale-guest"
UNIT = REPO / "guest" / "linux" / "forkscale-guest.service"
PS1 = REPO / "guest" / "windows" / "forkscale-guest.ps1"

GI = "guestinfo.forkscale"
SOURCE_MID = "0123456789abcdef0123456789abcdef"
SOURCE_MAC = "00:50:56:00:00:01"

# Harmless tools the script (and the stand-ins) may use. Deliberately absent: anything that
# changes the machine (those are recording stubs), logger, sync.
SAFE_TOOLS = [
    "awk", "sed", "cmp", "tr", "cut", "grep", "dd", "cat", "mkdir", "rm", "mv", "cp", "chmod",
    "ls", "readlink", "head", "tail", "sleep", "date", "timeout", "md5sum", "sha256sum", "sort",
    "env", "touch", "wc", "true", "false", "id", "uname", "basename", "dirname", "od",
]
# Commands that change the live machine: recording stubs in tests.
SYSTEM_COMMANDS = [
    "ip", "modprobe", "hostname", "hwclock", "systemctl", "networkctl", "nmcli", "netplan",
    "ifup", "ifdown",
]

RPCTOOL_SH = r"""#!/bin/sh
# Stand-in vmware-rpctool. guestinfo lives in $RPC_DIR, one file per key; info-set writes the
# file and appends "key=value" to $RPC_DIR/set.log. instantclone.freeze models VMFork with
# fork(): for every clone directory in $RPC_CLONES a child copies the source's disk
# ($FORKSCALE_ROOT) into <clone>/root, switches to <clone>/guestinfo and continues the calling
# script as that clone ($RPC_SHELL $RPC_SCRIPT freeze; inside a clone the call returns at once).
# The source never returns from the call: once its clones are done it writes freeze.done and
# stays blocked until the test kills it.
case $1 in
    "info-get "*)
        k=${1#info-get }
        if [ -f "$RPC_DIR/$k" ]; then cat "$RPC_DIR/$k"; exit 0; fi
        echo "No value found" >&2
        exit 1 ;;
    "info-set "*)
        r=${1#info-set }
        k=${r%% *}
        v=${r#"$k"}
        v=${v# }
        printf '%s\n' "$v" >"$RPC_DIR/$k" || exit 1
        printf '%s=%s\n' "$k" "$v" >>"$RPC_DIR/set.log"
        exit 0 ;;
    instantclone.freeze)
        echo freeze >>"$RPC_DIR/calls.log"
        [ "${RPC_RESUMED:-0}" = 1 ] && exit 0
        [ -n "${RPC_CLONES:-}" ] || exit "${RPC_FREEZE_RC:-3}"
        for c in $RPC_CLONES; do
            (
                mkdir -p "$c/root" && cp -a "$FORKSCALE_ROOT/." "$c/root/" || exit 90
                FORKSCALE_ROOT=$c/root RPC_DIR=$c/guestinfo RPC_RESUMED=1
                export FORKSCALE_ROOT RPC_DIR RPC_RESUMED
                exec $RPC_SHELL "$RPC_SCRIPT" freeze
            ) >"$c/stdout" 2>"$c/stderr" &
        done
        wait
        : >"$RPC_DIR/freeze.done"
        while :; do sleep 1; done ;;
esac
echo "unknown command: $1" >&2
exit 64
"""

STUB_SH = r"""#!/bin/sh
# Recording stand-in for a command that changes the live machine.
name=${0##*/}
mid=$(cat "$FORKSCALE_ROOT/etc/machine-id" 2>/dev/null)
printf '%s %s | machine-id=%s\n' "$name" "$*" "$mid" >>"$STUB_LOG"
case $name in
    hwclock) exit "${STUB_HWCLOCK_RC:-0}" ;;
    modprobe)
        # loading the driver again makes the NIC show the MAC vSphere gave the clone
        if [ "$1" != -r ] && [ -n "${STUB_NEW_MAC:-}" ]; then
            printf '%s\n' "$STUB_NEW_MAC" >"$FORKSCALE_ROOT/sys/class/net/${STUB_NIC:-ens192}/address"
        fi ;;
    ip)
        case "$*" in
            *"addr show"*)
                if [ -n "${STUB_ADDR:-}" ]; then
                    printf '2: %s    inet %s brd 10.0.0.255 scope global %s\\       valid_lft forever\n' \
                        "${STUB_NIC:-ens192}" "$STUB_ADDR" "${STUB_NIC:-ens192}"
                fi ;;
        esac ;;
esac
exit 0
"""

STATIC = {
    "id": "clone-1",
    "pool": "web",
    "hostname": "web-01.example.com",
    "ip": "10.0.0.5",
    "prefix": "24",
    "gateway": "10.0.0.1",
    "dns": "10.0.0.2,10.0.0.3",
    "mac": "00:50:56:AA:BB:01",
}
DHCP = {"id": "clone-2", "pool": "web", "hostname": "web-02", "mac": "00:50:56:aa:bb:02"}


# ------------------------------------------------------------------------------------------
# shells and tool directories
# ------------------------------------------------------------------------------------------

SHELLS = ["dash", "bash", "busybox", "busybox-userland"]


@dataclass(frozen=True)
class Shell:
    name: str
    argv: tuple[str, ...]
    toolbin: Path


def _link_tools(bindir: Path, resolve) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in SAFE_TOOLS:
        target = resolve(tool)
        if target:
            (bindir / tool).symlink_to(target)


@pytest.fixture(scope="session")
def toolbins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("toolbins")
    keygen = shutil.which("ssh-keygen")
    if not keygen:
        pytest.skip("ssh-keygen (openssh-client) is not installed: run scripts/setup-test-deps.sh")
    host = base / "host"
    _link_tools(host, shutil.which)
    (host / "ssh-keygen").symlink_to(keygen)
    nokeygen = base / "host-nokeygen"
    _link_tools(nokeygen, shutil.which)
    bins = {"host": host, "host-nokeygen": nokeygen}
    busybox = shutil.which("busybox")
    if busybox:
        applets = set(subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split())
        bb = base / "busybox"
        _link_tools(bb, lambda t: busybox if t in applets else None)
        (bb / "ssh-keygen").symlink_to(keygen)
        bins["busybox"] = bb
    return bins


def make_shell(name: str, toolbins: dict[str, Path]) -> Shell:
    if name in ("dash", "bash"):
        exe = shutil.which(name)
        if not exe:
            pytest.skip(f"{name} is not installed: run scripts/setup-test-deps.sh")
        return Shell(name, (exe,), toolbins["host"])
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox is not installed: run scripts/setup-test-deps.sh")
    bins = toolbins["busybox"] if name == "busybox-userland" else toolbins["host"]
    return Shell(name, (busybox, "sh"), bins)


@pytest.fixture(scope="session")
def source_key(tmp_path_factory) -> Path:
    """One ed25519 host key, the 'source VM's' key that every sandbox starts with."""
    d = tmp_path_factory.mktemp("source-key")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@tmpl", "-f", str(d / "ssh_host_ed25519_key")],
        check=True, stdin=subprocess.DEVNULL,
    )
    return d


# ------------------------------------------------------------------------------------------
# sandbox roots, guestinfo, runs
# ------------------------------------------------------------------------------------------

SOURCE_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "127.0.1.1\ttmpl.example.com tmpl\n"
    "\n"
    "# The following lines are desirable for IPv6 capable hosts\n"
    "::1     localhost ip6-localhost ip6-loopback\n"
)
NETPLAN_CLOUD_INIT = """network:
  version: 2
  renderer: networkd
  ethernets:
    ens192:
      dhcp4: true
      match:
        macaddress: 00:50:56:00:00:01
      set-name: ens192
"""
NETPLAN_OTHER = """network:
  version: 2
  ethernets:
    ens224:
      dhcp4: true
"""
IFUPDOWN_INTERFACES = """# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug ens192
iface ens192 inet dhcp
    hostname tmpl
"""


def add_nic(root: Path, name: str, mac: str, driver: str = "vmxnet3", pci: str = "0000:0b:00.0") -> None:
    sys = root / "sys"
    dev = sys / "devices" / "pci0000:00" / pci
    dev.mkdir(parents=True, exist_ok=True)
    (sys / "bus" / "pci" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    if not (dev / "driver").is_symlink():
        (dev / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
    (sys / "module" / driver).mkdir(parents=True, exist_ok=True)
    (sys / "module" / driver / "refcnt").write_text("1\n")
    net = sys / "class" / "net" / name
    net.mkdir(parents=True)
    (net / "device").symlink_to(f"../../../devices/pci0000:00/{pci}")
    (net / "type").write_text("1\n")
    (net / "address").write_text(mac + "\n")


def make_root(base: Path, flavour: str | None, key_dir: Path | None, *, hostname: str = "tmpl") -> Path:
    """A source VM's filesystem as the script sees it."""
    root = base
    for d in ("etc/ssh", "dev", "run/systemd/system", "var/lib/dbus", "var/lib/systemd", "var/lib/dhcp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(SOURCE_HOSTS.replace("tmpl", hostname) if hostname != "tmpl" else SOURCE_HOSTS)
    (root / "etc/machine-id").write_text(SOURCE_MID + "\n")
    (root / "var/lib/dbus/machine-id").write_text(SOURCE_MID + "\n")
    (root / "var/lib/systemd/random-seed").write_bytes(b"\0" * 512)
    (root / "var/lib/dhcp/dhclient.ens192.leases").write_text("lease { fixed-address 10.9.9.9; }\n")
    (root / "dev/urandom").write_bytes(b"")
    if key_dir is not None:
        for f in key_dir.iterdir():
            shutil.copy2(f, root / "etc/ssh" / f.name)
    # lo and a bridge come first in sorted order and must be skipped
    lo = root / "sys/class/net/lo"
    lo.mkdir(parents=True)
    (lo / "type").write_text("772\n")
    (lo / "address").write_text("00:00:00:00:00:00\n")
    br = root / "sys/class/net/br0"
    br.mkdir(parents=True)
    (br / "type").write_text("1\n")
    (br / "address").write_text("02:42:ac:11:00:01\n")
    add_nic(root, "ens192", SOURCE_MAC)
    etc = root / "etc"
    if flavour in ("networkd", "networkmanager", "netplan", "ifupdown"):
        (etc / "systemd/network").mkdir(parents=True)  # present on nearly every systemd distro
    if flavour == "networkd":
        (etc / "systemd/network/20-wired.network").write_text("[Match]\nName=ens192\n\n[Network]\nDHCP=yes\n")
    elif flavour == "networkmanager":
        (etc / "NetworkManager/system-connections").mkdir(parents=True)
        (etc / "NetworkManager/NetworkManager.conf").write_text("[main]\nplugins=keyfile\n")
    elif flavour == "netplan":
        (etc / "netplan").mkdir()
        (etc / "netplan/50-cloud-init.yaml").write_text(NETPLAN_CLOUD_INIT)
        (etc / "netplan/60-other.yaml").write_text(NETPLAN_OTHER)
    elif flavour == "ifupdown":
        (etc / "network/interfaces.d").mkdir(parents=True)
        (etc / "network/interfaces").write_text(IFUPDOWN_INTERFACES)
        (etc / "network/interfaces.d/60-ens192-v6").write_text("iface ens192 inet6 auto\n")
        (etc / "network/interfaces.d/70-ens224").write_text("auto ens224\niface ens224 inet dhcp\n")
    return root


def write_guestinfo(d: Path, values: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for k, v in values.items():
        (d / f"{GI}.{k}").write_text(v + "\n")
    return d


def tree(root: Path, skip: tuple[str, ...] = ("dev/urandom", "var/lib/systemd/random-seed")) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("sys/") or rel in skip:
            continue
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    gi: Path
    stub_log: Path

    def get(self, key: str) -> str | None:
        f = self.gi / f"{GI}.{key}"
        return f.read_text().rstrip("\n") if f.exists() else None

    @property
    def status(self) -> str | None:
        return self.get("status")

    @property
    def sets(self) -> list[str]:
        f = self.gi / "set.log"
        return f.read_text().splitlines() if f.exists() else []

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(command line, machine-id at the time) of every stubbed system command."""
        if not self.stub_log.exists():
            return []
        return [tuple(line.split(" | machine-id=", 1)) for line in self.stub_log.read_text().splitlines()]

    @property
    def dry_runs(self) -> list[str]:
        return re.findall(r"dry-run: (.*)", self.stderr)


@dataclass
class Guest:
    shell: Shell
    tmp: Path
    rpctool: Path
    stubs: Path
    source_key: Path
    toolbins: dict[str, Path]
    _n: int = field(default=0)

    def root(self, flavour: str | None = "networkd", name: str | None = None, keys: bool = True, **kw) -> Path:
        self._n += 1
        return make_root(self.tmp / (name or f"root{self._n}"), flavour, self.source_key if keys else None, **kw)

    def guestinfo(self, values: dict[str, str], name: str | None = None) -> Path:
        self._n += 1
        return write_guestinfo(self.tmp / (name or f"gi{self._n}"), values)

    def env(self, root: Path, gi: Path, *, dry: bool = True, toolbin: Path | None = None, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.stubs}:{toolbin or self.shell.toolbin}",
            "HOME": str(self.tmp),
            "LC_ALL": "C",
            "FORKSCALE_ROOT": str(root),
            "FORKSCALE_RPCTOOL": str(self.rpctool),
            "FORKSCALE_DRY_SYSTEM": "1" if dry else "0",
            "FORKSCALE_SYSLOG": "0",
            "FORKSCALE_STEP_TIMEOUT": "5",
            "FORKSCALE_GUESTINFO_WAIT": "0",
            "RPC_DIR": str(gi),
            "STUB_LOG": str(self.tmp / f"stub-{gi.name}.log"),
        }
        env.update(extra)
        return env

    def run(self, cmd: str, root: Path, gi: Path, *, dry: bool = True, toolbin: Path | None = None, **extra: str) -> Result:
        env = self.env(root, gi, dry=dry, toolbin=toolbin, **extra)
        p = subprocess.run([*self.shell.argv, str(SCRIPT), cmd], env=env, capture_output=True, text=True, timeout=60)
        r = Result(p.returncode, p.stdout, p.stderr, gi, Path(env["STUB_LOG"]))
        if dry:
            assert r.calls == [], f"FORKSCALE_DRY_SYSTEM=1 but system commands ran: {r.calls}"
        return r


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def make_guest(tmp_path, toolbins, source_key):
    rpctool = _write_exe(tmp_path / "vmware-rpctool", RPCTOOL_SH)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    stub = _write_exe(tmp_path / "stub", STUB_SH)
    for c in SYSTEM_COMMANDS:
        (stubs / c).symlink_to(stub)

    def make(shell_name: str) -> Guest:
        return Guest(make_shell(shell_name, toolbins), tmp_path, rpctool, stubs, source_key, toolbins)

    return make


@pytest.fixture(params=SHELLS)
def guest(request, make_guest) -> Guest:
    return make_guest(request.param)


@pytest.fixture
def dash_guest(make_guest) -> Guest:
    return make_guest("dash")


# ------------------------------------------------------------------------------------------
# parsers for the files the script writes
# ------------------------------------------------------------------------------------------

def parse_ini(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd/NetworkManager style: sections of key=value, keys may repeat."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        k, _, v = line.partition("=")
        out.setdefault(section, []).append((k, v))
    return out


def ini_get(ini: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in ini.get(section, []) if k == key]


def host_lines(text: str) -> list[list[str]]:
    return [line.split("#", 1)[0].split() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def assert_machine_id(value: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", value), value
    assert value[12] == "4" and value[16] in "89ab", f"not a v4-style id: {value}"


def assert_host_key_pair(root: Path, kind: str = "ed25519") -> str:
    priv = root / f"etc/ssh/ssh_host_{kind}_key"
    pub = root / f"etc/ssh/ssh_host_{kind}_key.pub"
    assert priv.stat().st_mode & 0o777 == 0o600
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(priv)], capture_output=True, text=True, check=True).stdout
    assert derived.split()[:2] == pub.read_text().split()[:2], "public key does not belong to the private key"
    return pub.read_text().split()[1]


def source_pub(guest: Guest) -> str:
    return (guest.source_key / "ssh_host_ed25519_key.pub").read_text().split()[1]


# ------------------------------------------------------------------------------------------
# static checks
# ------------------------------------------------------------------------------------------

def test_shellcheck_posix_sh():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed: run scripts/setup-test-deps.sh")
    p = subprocess.run(["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("shell_name", ["dash", "bash", "busybox"])
def test_parses_under_every_shell(shell_name, toolbins):
    shell = make_shell(shell_name, toolbins)
    p = subprocess.run([*shell.argv, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*shell.argv, str(SCRIPT), "help"], capture_output=True, text=True)
    assert p.returncode == 0 and "prepare|freeze|resume|status" in p.stdout


def test_unit_file_runs_prepare_then_freeze_once():
    text = UNIT.read_text()
    ini = parse_ini(text)
    assert ini_get(ini, "Service", "Type") == ["oneshot"]
    starts = ini_get(ini, "Service", "ExecStart")
    assert [s.split()[-1] for s in starts] == ["prepare", "freeze"]
    assert ini_get(ini, "Service", "TimeoutStartSec") == ["infinity"]
    after = " ".join(ini_get(ini, "Unit", "After"))
    assert "network-online.target" in after and "vmtoolsd.service" in after
    # a clone that reboots must not freeze itself
    assert "!/var/lib/forkscale-guest/identity" in ini_get(ini, "Unit", "ConditionPathExists")
    assert ini_get(ini, "Install", "WantedBy") == ["multi-user.target"]


# ------------------------------------------------------------------------------------------
# resume: one clone
# ------------------------------------------------------------------------------------------

def test_resume_static_networkd(guest):
    root = guest.root("networkd")
    gi = guest.guestinfo(STATIC)
    r = guest.run("resume", root, gi)
    assert r.rc == 0, r.stderr
    assert r.status == "ready"
    assert r.sets[0] == f"{GI}.status=resuming" and r.sets[-1] == f"{GI}.status=ready"

    # identity
    mid = (root / "etc/machine-id").read_text().strip()
    assert_machine_id(mid)
    assert mid != SOURCE_MID
    assert r.get("machine_id") == mid
    assert (root / "var/lib/dbus/machine-id").read_text().strip() == mid
    assert not (root / "var/lib/dhcp/dhclient.ens192.leases").exists(), "the source's DHCP lease survived"
    pub = assert_host_key_pair(root)
    assert pub != source_pub(guest)
    assert r.get("ssh_host_key") == "ssh-ed25519 " + pub
    assert (root / "dev/urandom").stat().st_size >= 512
    assert (root / "var/lib/systemd/random-seed").read_bytes() != b"\0" * 512

    # hostname
    assert (root / "etc/hostname").read_text() == "web-01\n"
    lines = host_lines((root / "etc/hosts").read_text())
    assert ["10.0.0.5", "web-01.example.com", "web-01"] in lines
    assert ["127.0.0.1", "localhost"] in lines
    assert not any("tmpl" in w for line in lines for w in line), lines

    # network: our file sorts before the source's and matches the clone's MAC
    files = sorted(p.name for p in (root / "etc/systemd/network").iterdir())
    assert files == ["00-forkscale-ens192.network", "20-wired.network"]
    ini = parse_ini((root / "etc/systemd/network/00-forkscale-ens192.network").read_text())
    assert ini_get(ini, "Match", "MACAddress") == ["00:50:56:aa:bb:01"]
    assert ini_get(ini, "Network", "DHCP") == ["no"]
    assert ini_get(ini, "Network", "Address") == ["10.0.0.5/24"]
    assert ini_get(ini, "Network", "Gateway") == ["10.0.0.1"]
    assert ini_get(ini, "Network", "DNS") == ["10.0.0.2", "10.0.0.3"]

    # what would have run on a live clone, in order
    runs = r.dry_runs
    want = [
        "hwclock --hctosys",
        "hostname web-01",
        "systemctl stop systemd-networkd.socket systemd-networkd.service",
        "modprobe -r vmxnet3",
        "modprobe vmxnet3",
        "ip link set dev ens192 up",
        "systemctl start systemd-networkd.socket systemd-networkd.service",
    ]
    assert [c for c in runs if c in want] == want, runs

    state = dict(line.split("=", 1) for line in (root / "var/lib/forkscale-guest/identity").read_text().splitlines())
    assert state["id"] == "clone-1" and state["pool"] == "web" and state["machine_id"] == mid


@pytest.mark.parametrize("mode", ["static", "dhcp"])
@pytest.mark.parametrize("flavour", ["networkd", "networkmanager", "netplan", "ifupdown"])
def test_network_config_per_flavour(make_guest, flavour, mode):
    guest = make_guest("dash" if mode == "dhcp" else "busybox-userland")
    root = guest.root(flavour)
    values = STATIC if mode == "static" else DHCP
    r = guest.run("resume", root, guest.guestinfo(values))
    assert r.rc == 0, r.stderr
    assert r.status == "ready"
    assert f"network configuration: {flavour}" in r.stderr
    static = mode == "static"
    mac = values["mac"].lower()
    etc = root / "etc"

    if flavour == "networkd":
        ini = parse_ini((etc / "systemd/network/00-forkscale-ens192.network").read_text())
        assert ini_get(ini, "Match", "MACAddress") == [mac]
        if static:
            assert ini_get(ini, "Network", "Address") == ["10.0.0.5/24"]
        else:
            assert ini_get(ini, "Network", "DHCP") == ["yes"]
            assert ini_get(ini, "Network", "Address") == []

    elif flavour == "networkmanager":
        f = etc / "NetworkManager/system-connections/forkscale-ens192.nmconnection"
        assert f.stat().st_mode & 0o777 == 0o600, "NetworkManager ignores keyfiles that are not 0600"
        ini = parse_ini(f.read_text())
        assert ini_get(ini, "connection", "type") == ["ethernet"]
        assert ini_get(ini, "connection", "interface-name") == ["ens192"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            ini_get(ini, "connection", "uuid")[0])
        assert ini_get(ini, "ethernet", "mac-address") == [mac.upper()]
        if static:
            assert ini_get(ini, "ipv4", "method") == ["manual"]
            assert ini_get(ini, "ipv4", "address1") == ["10.0.0.5/24,10.0.0.1"]
            assert ini_get(ini, "ipv4", "dns") == ["10.0.0.2;10.0.0.3;"]
        else:
            assert ini_get(ini, "ipv4", "method") == ["auto"]
        assert "nmcli --wait 5 connection up id forkscale-ens192" in r.dry_runs

    elif flavour == "netplan":
        yaml = pytest.importorskip("yaml")
        ours = etc / "netplan/90-forkscale.yaml"
        assert ours.stat().st_mode & 0o777 == 0o600
        doc = yaml.safe_load(ours.read_text())
        eth = doc["network"]["ethernets"]["ens192"]
        assert doc["network"]["renderer"] == "networkd", "the source's renderer must be kept"
        assert eth["match"] == {"macaddress": mac} and eth["set-name"] == "ens192"
        if static:
            assert eth["dhcp4"] is False
            assert eth["addresses"] == ["10.0.0.5/24"]
            assert eth["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.0.1"}]
            assert eth["nameservers"] == {"addresses": ["10.0.0.2", "10.0.0.3"]}
        else:
            assert eth["dhcp4"] is True and "addresses" not in eth
        # the cloud-init file also configured ens192 and would be merged with ours
        assert sorted(p.name for p in (etc / "netplan").iterdir()) == [
            "50-cloud-init.yaml.forkscale-disabled", "60-other.yaml", "90-forkscale.yaml"]
        assert "netplan apply" in r.dry_runs

    elif flavour == "ifupdown":
        text = (etc / "network/interfaces").read_text()
        assert "allow-hotplug ens192" not in text and "iface ens192 inet dhcp\n    hostname tmpl" not in text
        assert "iface lo inet loopback" in text and "source /etc/network/interfaces.d/*" in text
        block = text[text.index("# BEGIN forkscale-guest"):]
        assert block.rstrip().endswith("# END forkscale-guest")
        words = [line.split() for line in block.splitlines() if not line.startswith("#")]
        assert ["auto", "ens192"] in words
        if static:
            assert ["iface", "ens192", "inet", "static"] in words
            assert ["address", "10.0.0.5"] in words and ["netmask", "255.255.255.0"] in words
            assert ["gateway", "10.0.0.1"] in words
            assert ["dns-nameservers", "10.0.0.2", "10.0.0.3"] in words
            resolv = (etc / "resolv.conf").read_text()
            assert "nameserver 10.0.0.2\nnameserver 10.0.0.3\n" in resolv and "search example.com" in resolv
        else:
            assert ["iface", "ens192", "inet", "dhcp"] in words
        assert sorted(p.name for p in (etc / "network/interfaces.d").iterdir()) == ["70-ens224"]
        assert (etc / "network/forkscale-disabled/60-ens192-v6").exists()
        assert "ifup ens192" in r.dry_runs

    # no other flavour's files were written
    assert not (etc / "systemd/network/00-forkscale-ens192.network").exists() or flavour == "networkd"
    assert not (etc / "netplan/90-forkscale.yaml").exists() or flavour == "netplan"


def test_dhcp_hosts_line(dash_guest):
    guest = dash_guest
    root = guest.root("networkd")
    r = guest.run("resume", root, guest.guestinfo(DHCP))
    assert r.rc == 0, r.stderr
    lines = host_lines((root / "etc/hosts").read_text())
    assert ["127.0.1.1", "web-02"] in lines
    assert sum(1 for line in lines if "web-02" in line) == 1


def test_netmask_instead_of_prefix(dash_guest):
    values = {k: v for k, v in STATIC.items() if k != "prefix"} | {"netmask": "255.255.240.0"}
    root = dash_guest.root("ifupdown")
    r = dash_guest.run("resume", root, dash_guest.guestinfo(values))
    assert r.rc == 0, r.stderr
    text = (root / "etc/network/interfaces").read_text()
    assert "netmask 255.255.240.0" in text
    state = (root / "var/lib/forkscale-guest/identity").read_text()
    assert "prefix=20\n" in state


def test_nic_selected_by_name_and_by_mac(dash_guest):
    # two NICs; guestinfo nic picks the second
    root = dash_guest.root("networkd")
    add_nic(root, "ens224", "00:50:56:00:00:02", pci="0000:13:00.0")
    r = dash_guest.run("resume", root, dash_guest.guestinfo(STATIC | {"nic": "ens224"}))
    assert r.rc == 0, r.stderr
    assert (root / "etc/systemd/network/00-forkscale-ens224.network").exists()
    assert "ip link set dev ens224 up" in r.dry_runs

    # the clone's MAC is already visible on ens224: that NIC wins over the first one
    root2 = dash_guest.root("networkd")
    add_nic(root2, "ens224", STATIC["mac"].lower(), pci="0000:13:00.0")
    r = dash_guest.run("resume", root2, dash_guest.guestinfo(STATIC))
    assert r.rc == 0, r.stderr
    assert sorted(p.name for p in (root2 / "etc/systemd/network").glob("00-*")) == ["00-forkscale-ens224.network"]


def test_template_named_localhost_keeps_localhost(dash_guest):
    root = dash_guest.root("networkd", hostname="localhost")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    r = dash_guest.run("resume", root, dash_guest.guestinfo(DHCP))
    assert r.rc == 0, r.stderr
    lines = host_lines((root / "etc/hosts").read_text())
    assert lines == [["127.0.0.1", "localhost"], ["::1", "localhost", "ip6-localhost"], ["127.0.1.1", "web-02"]]


def test_default_host_key_types_when_source_has_none(dash_guest):
    root = dash_guest.root("networkd", keys=False)
    r = dash_guest.run("resume", root, dash_guest.guestinfo(DHCP))
    assert r.rc == 0, r.stderr
    for kind in ("rsa", "ecdsa", "ed25519"):
        assert_host_key_pair(root, kind)


def test_no_ssh_server_means_no_host_keys_and_no_ssh_keygen_needed(dash_guest, toolbins):
    root = dash_guest.root("networkd", keys=False)
    shutil.rmtree(root / "etc/ssh")
    r = dash_guest.run("resume", root, dash_guest.guestinfo(DHCP), toolbin=toolbins["host-nokeygen"])
    assert r.rc == 0, r.stderr
    assert r.status == "ready"
    assert not (root / "etc/ssh").exists()


# ------------------------------------------------------------------------------------------
# many clones, idempotency
# ------------------------------------------------------------------------------------------

def test_clones_of_one_source_get_distinct_identities(guest):
    source = guest.root("networkd", name="source")
    roots, results = [], []
    for i in (1, 2):
        root = guest.tmp / f"clone{i}"
        shutil.copytree(source, root, symlinks=True)
        gi = guest.guestinfo({"id": f"c{i}", "pool": "web", "hostname": f"web-{i:02d}",
                              "mac": f"00:50:56:aa:bb:{i:02x}"}, name=f"gi-c{i}")
        results.append(guest.run("resume", root, gi))
        roots.append(root)
    assert [r.status for r in results] == ["ready"] * 2, [r.stderr for r in results]
    mids = [(root / "etc/machine-id").read_text().strip() for root in roots]
    assert len(set(mids)) == 2 and SOURCE_MID not in mids
    keys = [assert_host_key_pair(root) for root in roots]
    assert len(set(keys)) == 2 and source_pub(guest) not in keys
    seeds = [(root / "var/lib/systemd/random-seed").read_bytes() for root in roots]
    assert len(set(seeds)) == 2
    stirred = [(root / "dev/urandom").read_bytes() for root in roots]
    assert len(set(stirred)) == 2
    assert [(root / "etc/hostname").read_text() for root in roots] == ["web-01\n", "web-02\n"]
    assert (source / "etc/machine-id").read_text().strip() == SOURCE_MID


def test_resume_twice_is_a_no_op_for_the_same_id(guest):
    """Decision: identity (machine-id, SSH host keys) is made once per guestinfo.forkscale.id;
    re-running resume for the same id rewrites nothing. A new id means a new clone: new identity."""
    root = guest.root("netplan")
    gi = guest.guestinfo(STATIC)
    r1 = guest.run("resume", root, gi)
    assert r1.rc == 0, r1.stderr
    before = tree(root)
    mtimes = {p: (root / p).stat().st_mtime_ns for p in before}
    r2 = guest.run("resume", root, gi)
    assert r2.rc == 0, r2.stderr
    assert r2.status == "ready"
    assert tree(root) == before
    assert {p: (root / p).stat().st_mtime_ns for p in before} == mtimes, "a re-run rewrote files"
    assert "machine-id already regenerated for id clone-1" in r2.stderr
    assert r2.get("machine_id") == before["etc/machine-id"].decode().strip()

    # the same disk under a new id (a new clone): new identity, same network shape
    (gi / f"{GI}.id").write_text("clone-9\n")
    r3 = guest.run("resume", root, gi)
    assert r3.rc == 0, r3.stderr
    after = tree(root)
    assert after["etc/machine-id"] != before["etc/machine-id"]
    assert after["etc/ssh/ssh_host_ed25519_key"] != before["etc/ssh/ssh_host_ed25519_key"]
    assert after["etc/hostname"] == before["etc/hostname"]
    assert after["etc/hosts"] == before["etc/hosts"]


def test_machine_id_regenerated_again_if_it_was_lost(dash_guest):
    root = dash_guest.root("networkd")
    gi = dash_guest.guestinfo(DHCP)
    assert dash_guest.run("resume", root, gi).rc == 0
    (root / "etc/machine-id").write_text("")
    r = dash_guest.run("resume", root, gi)
    assert r.rc == 0, r.stderr
    assert_machine_id((root / "etc/machine-id").read_text().strip())


# ------------------------------------------------------------------------------------------
# failures are reported, never a silent half-configured clone
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "values, want",
    [
        ({k: v for k, v in STATIC.items() if k != "hostname"}, f"error:guestinfo:missing {GI}.hostname"),
        ({k: v for k, v in STATIC.items() if k != "id"}, f"error:guestinfo:missing {GI}.id"),
        (STATIC | {"ip": "10.0.0.300"}, "error:guestinfo:invalid ip '10.0.0.300'"),
        ({k: v for k, v in STATIC.items() if k != "prefix"}, "error:guestinfo:static ip 10.0.0.5 needs"),
        ({k: v for k, v in STATIC.items() if k != "prefix"} | {"netmask": "255.0.255.0"},
         "error:guestinfo:invalid netmask '255.0.255.0'"),
        (STATIC | {"hostname": "bad_name;rm"}, "error:guestinfo:invalid hostname"),
        (STATIC | {"dns": "10.0.0.2,evil\nline"}, "error:guestinfo:invalid dns server"),
        (STATIC | {"mac": "00:50:56:zz:00:01"}, "error:guestinfo:invalid mac"),
    ],
    ids=["no-hostname", "no-id", "bad-ip", "no-prefix", "bad-netmask", "bad-hostname", "bad-dns", "bad-mac"],
)
def test_bad_guestinfo_is_reported_before_anything_changes(dash_guest, values, want):
    root = dash_guest.root("networkd")
    before = tree(root)
    r = dash_guest.run("resume", root, dash_guest.guestinfo(values))
    assert r.rc == 1
    assert r.status is not None and r.status.startswith(want), r.status
    assert "\n" not in r.status
    assert tree(root) == before


@pytest.mark.parametrize("shell_name", ["dash", "bash", "busybox"])
def test_missing_ssh_keygen_is_an_error(make_guest, shell_name):
    guest = make_guest(shell_name)
    root = guest.root("networkd")
    before = tree(root)
    r = guest.run("resume", root, guest.guestinfo(STATIC), toolbin=guest.toolbins["host-nokeygen"])
    assert r.rc == 1
    assert r.status == "error:ssh-keys:ssh-keygen not found"
    # found in the pre-flight: the clone was not half changed
    assert tree(root) == before


def test_no_network_system_is_an_error(dash_guest):
    root = dash_guest.root(None)
    r = dash_guest.run("resume", root, dash_guest.guestinfo(STATIC))
    assert r.rc == 1
    assert r.status.startswith("error:network:no supported network configuration system")


def test_missing_rpctool_exits_2(dash_guest):
    root = dash_guest.root("networkd")
    r = dash_guest.run("resume", root, dash_guest.guestinfo(STATIC), FORKSCALE_RPCTOOL="/nonexistent/rpctool")
    assert r.rc == 2
    assert "not found" in r.stderr


# ------------------------------------------------------------------------------------------
# the live path (FORKSCALE_DRY_SYSTEM=0) against recording stubs
# ------------------------------------------------------------------------------------------

def test_live_sequence_machine_id_before_nic_comes_back(guest):
    root = guest.root("networkd")
    r = guest.run("resume", root, guest.guestinfo(STATIC), dry=False,
                  STUB_NEW_MAC="00:50:56:aa:bb:01", STUB_ADDR="10.0.0.5/24")
    assert r.rc == 0, r.stderr
    assert r.status == "ready"
    new_mid = (root / "etc/machine-id").read_text().strip()
    calls = r.calls
    cmds = [c for c, _ in calls]
    assert cmds[:2] == ["hwclock --hctosys", "systemctl try-restart ssh.service sshd.service"]
    i_stop = cmds.index("systemctl stop systemd-networkd.socket systemd-networkd.service")
    i_rm = cmds.index("modprobe -r vmxnet3")
    i_load = cmds.index("modprobe vmxnet3")
    i_up = cmds.index("ip link set dev ens192 up")
    i_start = cmds.index("systemctl start systemd-networkd.socket systemd-networkd.service")
    assert cmds.index("hostname web-01") < i_stop < i_rm < i_load < i_up < i_start
    # the NIC (and so any DHCP) only came back once the new machine-id was in place
    assert calls[i_load][1] == new_mid != SOURCE_MID
    assert cmds[-1] == "ip -o -4 addr show dev ens192"


def test_live_pci_rebind_when_driver_is_builtin(dash_guest):
    root = dash_guest.root("networkd")
    (root / "sys/module/vmxnet3/refcnt").unlink()
    drv = root / "sys/bus/pci/drivers/vmxnet3"
    r = dash_guest.run("resume", root, dash_guest.guestinfo(DHCP), dry=False,
                       STUB_ADDR="10.0.0.77/24", FORKSCALE_STEP_TIMEOUT="1")
    # no stub changes the MAC on a PCI rebind here, so the clone's MAC never shows up
    assert r.rc == 1
    assert r.status == "error:nic:no NIC with MAC 00:50:56:aa:bb:02 after 1s"
    assert (drv / "unbind").read_text() == "0000:0b:00.0\n"
    assert (drv / "bind").read_text() == "0000:0b:00.0\n"


def test_live_failing_clock_is_reported(dash_guest):
    root = dash_guest.root("networkd")
    before = tree(root)
    r = dash_guest.run("resume", root, dash_guest.guestinfo(STATIC), dry=False, STUB_HWCLOCK_RC="1")
    assert r.rc == 1
    assert r.status == "error:clock:hwclock --hctosys failed"
    assert tree(root) == before


def test_live_no_address_is_reported(dash_guest):
    root = dash_guest.root("networkd")
    r = dash_guest.run("resume", root, dash_guest.guestinfo(STATIC), dry=False,
                       STUB_NEW_MAC="00:50:56:aa:bb:01", FORKSCALE_STEP_TIMEOUT="1")
    assert r.rc == 1
    assert r.status == "error:verify:no IPv4 address 10.0.0.5 on ens192 after 1s"


# ------------------------------------------------------------------------------------------
# prepare, status
# ------------------------------------------------------------------------------------------

def test_prepare_takes_the_nic_down(guest):
    root = guest.root("networkmanager")
    gi = guest.guestinfo({})
    before = tree(root)
    r = guest.run("prepare", root, gi)
    assert r.rc == 0, r.stderr
    assert r.dry_runs == ["nmcli device disconnect ens192", "ip addr flush dev ens192", "ip link set dev ens192 down"]
    assert r.status == "prepared"
    assert tree(root) == before


def test_prepare_fails_in_the_source_without_ssh_keygen(dash_guest, toolbins):
    root = dash_guest.root("networkd")
    r = dash_guest.run("prepare", root, dash_guest.guestinfo({}), toolbin=toolbins["host-nokeygen"])
    assert r.rc == 1
    assert r.status == "error:prepare:ssh-keygen not found (needed in every clone)"
    assert r.dry_runs == [], "the NIC must stay up when the source cannot be frozen"


@pytest.mark.parametrize("shell_name", ["dash", "busybox-userland"])
def test_status_changes_nothing(make_guest, shell_name):
    guest = make_guest(shell_name)
    root = guest.root("ifupdown")
    gi = guest.guestinfo(STATIC)
    before = tree(root)
    r = guest.run("status", root, gi)
    assert r.rc == 0, r.stderr
    assert "network:        ifupdown" in r.stdout
    assert "regenerate the machine-id" in r.stdout
    assert "static 10.0.0.5/24 gw 10.0.0.1" in r.stdout
    assert tree(root) == before
    assert r.sets == []


# ------------------------------------------------------------------------------------------
# freeze: the call returns once in every clone (fork), never in the source
# ------------------------------------------------------------------------------------------

def test_freeze_continues_as_n_clones(guest):
    source = guest.root("networkd", name="source")
    gi_source = guest.guestinfo({}, name="gi-source")
    clones = []
    for i in (1, 2):
        c = guest.tmp / f"vm-clone{i}"
        write_guestinfo(c / "guestinfo", {"id": f"fork-{i}", "pool": "web", "hostname": f"web-{i:02d}",
                                          "ip": f"10.0.0.{10 + i}", "prefix": "24", "mac": f"00:50:56:aa:cc:{i:02x}"})
        clones.append(c)
    env = guest.env(source, gi_source, RPC_CLONES=" ".join(map(str, clones)),
                    RPC_SHELL=" ".join(guest.shell.argv), RPC_SCRIPT=str(SCRIPT))
    proc = subprocess.Popen([*guest.shell.argv, str(SCRIPT), "freeze"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (gi_source / "freeze.done").exists():
            assert proc.poll() is None, f"the source returned from freeze: {proc.communicate()}"
            assert time.monotonic() < deadline, "clones did not finish"
            time.sleep(0.02)
        time.sleep(0.1)
        assert proc.poll() is None, "the source must stay blocked in instantclone.freeze"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()

    # the source: frozen, untouched
    assert (gi_source / f"{GI}.status").read_text() == "frozen\n"
    assert (source / "etc/machine-id").read_text().strip() == SOURCE_MID
    assert not (source / "var/lib/forkscale-guest").exists()
    assert (gi_source / "calls.log").read_text().split() == ["freeze"]

    mids, keys = [], []
    for i, c in enumerate(clones, 1):
        gi = c / "guestinfo"
        err = (c / "stderr").read_text()
        assert (gi / f"{GI}.status").read_text() == "ready\n", err
        assert "resumed as a clone" in err
        statuses = [line.split("=", 1)[1] for line in (gi / "set.log").read_text().splitlines()
                    if line.startswith(f"{GI}.status=")]
        assert statuses == ["frozen", "resuming", "ready"]
        root = c / "root"
        assert (root / "etc/hostname").read_text() == f"web-{i:02d}\n"
        ini = parse_ini((root / "etc/systemd/network/00-forkscale-ens192.network").read_text())
        assert ini_get(ini, "Network", "Address") == [f"10.0.0.{10 + i}/24"]
        mid = (root / "etc/machine-id").read_text().strip()
        assert (gi / f"{GI}.machine_id").read_text().strip() == mid
        mids.append(mid)
        keys.append(assert_host_key_pair(root))
    assert len(set(mids)) == 2 and SOURCE_MID not in mids
    assert len(set(keys)) == 2 and source_pub(guest) not in keys


def test_failed_freeze_restores_the_source(dash_guest):
    root = dash_guest.root("networkd")
    gi = dash_guest.guestinfo({})
    r = dash_guest.run("freeze", root, gi, RPC_FREEZE_RC="5")
    assert r.rc == 1
    assert r.status == "error:freeze:instantclone.freeze exited 5"
    assert r.dry_runs == ["ip link set dev ens192 up", "networkctl reconfigure ens192"]
    assert (root / "etc/machine-id").read_text().strip() == SOURCE_MID


# ------------------------------------------------------------------------------------------
# Windows: cannot run here (no PowerShell); check what can be checked statically
# ------------------------------------------------------------------------------------------

def _ps_structure_errors(text: str) -> list[str]:
    """Bracket balance outside strings, comments and here-strings; a cheap guard for typos."""
    errors: list[str] = []
    stack: list[tuple[str, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    i, line, n = 0, 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        if text.startswith("<#", i):
            j = text.find("#>", i)
            if j < 0:
                return [f"line {line}: unterminated block comment"]
            line += text.count("\n", i, j)
            i = j + 2
            continue
        if ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith(('@"\n', "@'\n", '@"\r\n', "@'\r\n"), i):
            q = text[i + 1]
            j = text.find("\n" + q + "@", i)
            if j < 0:
                return [f"line {line}: unterminated here-string"]
            line += text.count("\n", i, j + 1)
            i = j + 3
            continue
        if ch in "'\"":
            j = i + 1
            while j < n:
                if ch == '"' and text[j] == "`":
                    j += 2
                    continue
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:  # doubled quote escapes itself
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                return [f"line {line}: unterminated string"]
            line += text.count("\n", i, j)
            i = j + 1
            continue
        if ch == "`":
            i += 2
            continue
        if ch in "([{":
            stack.append((ch, line))
        elif ch in ")]}":
            if not stack or stack[-1][0] != pairs[ch]:
                errors.append(f"line {line}: unbalanced {ch!r}")
            else:
                stack.pop()
        i += 1
    errors.extend(f"line {ln}: unclosed {ch!r}" for ch, ln in stack)
    return errors


def test_powershell_script_structure_and_contract():
    text = PS1.read_text(encoding="utf-8")
    assert _ps_structure_errors(text) == []
    assert _ps_structure_errors("function f { if ($x) { 'a' }") != []  # the checker can fail
    for needle in ('"info-get guestinfo.forkscale.$Key"', "info-set guestinfo.forkscale.$Key $Value",
                   "'ready'", "error:", "instantclone.freeze", "rpctool.exe"):
        assert needle in text, needle
    assert "Set-StrictMode -Version Latest" in text
    assert not re.search(r"guestinfo\.forkscale\.(password|domain_password)", text, re.I)
