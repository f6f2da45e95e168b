"""What every VirtualMachine shows besides its own disks and NICs: the devices every VM has (IDE,
PS/2, SIO and PCI controllers, keyboard, mouse, video card, VMCI), its capability, tools and boot
options, its storage usage per datastore, and the guest's IP configuration and stack as VMware
Tools report them (from the address the guest took, its prefix, gateway and DNS in guestinfo).

The static parts are built once and shared by every VM (data objects the twin never mutates).
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Interface
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim

if TYPE_CHECKING:
    from .vm import VM

D = vim.vm.device
PCI_KEY, IDE_KEYS, PS2_KEY, SIO_KEY = 100, (200, 201), 300, 400
VIDEO_KEY, KEYBOARD_KEY, MOUSE_KEY, VMCI_KEY = 500, 600, 700, 12000
TOOLS_VERSION = 12352


def _info(label: str, summary: str | None = None) -> Any:
    return vim.Description(label=label, summary=summary or label)


STATIC_DEVICES: tuple[Any, ...] = (
    D.VirtualIDEController(key=IDE_KEYS[0], busNumber=0, device=[], deviceInfo=_info("IDE 0")),
    D.VirtualIDEController(key=IDE_KEYS[1], busNumber=1, device=[], deviceInfo=_info("IDE 1")),
    D.VirtualPS2Controller(key=PS2_KEY, busNumber=0, device=[KEYBOARD_KEY, MOUSE_KEY],
                           deviceInfo=_info("PS2 controller 0")),
    D.VirtualSIOController(key=SIO_KEY, busNumber=0, device=[], deviceInfo=_info("SIO controller 0")),
    D.VirtualKeyboard(key=KEYBOARD_KEY, controllerKey=PS2_KEY, unitNumber=0, deviceInfo=_info("Keyboard")),
    D.VirtualPointingDevice(key=MOUSE_KEY, controllerKey=PS2_KEY, unitNumber=1,
                            deviceInfo=_info("Pointing device", "Pointing device; Device"),
                            backing=D.VirtualPointingDevice.DeviceBackingInfo(
                                deviceName="", useAutoDetect=False, hostPointingDevice="autodetect")),
    D.VirtualVideoCard(key=VIDEO_KEY, controllerKey=PCI_KEY, unitNumber=0, videoRamSizeInKB=4096, numDisplays=1,
                       useAutoDetect=False, enable3DSupport=False, use3dRenderer="automatic",
                       graphicsMemorySizeInKB=262144, deviceInfo=_info("Video card ", "Video card")),
    D.VirtualVMCIDevice(key=VMCI_KEY, controllerKey=PCI_KEY, unitNumber=17, id=-1,
                        allowUnrestrictedCommunication=False, filterEnable=True,
                        deviceInfo=_info("VMCI device", "Device on the virtual machine PCI bus that provides support "
                                         "for the virtual machine communication interface")),
)
STATIC_KEYS = frozenset(d.key for d in STATIC_DEVICES) | {PCI_KEY}


def pci_controller(children: list[int]) -> Any:
    return D.VirtualPCIController(key=PCI_KEY, busNumber=0, device=[VIDEO_KEY, VMCI_KEY, *children],
                                  deviceInfo=_info("PCI controller 0"))


def _capability() -> Any:
    flags = {p.name: True for p in vim.vm.Capability._GetPropertyList()
             if p.type is bool and not p.flags & VmomiSupport.F_OPTIONAL}
    flags.update(recordReplaySupported=False, vmNpivWwnSupported=False, npivWwnOnNonRdmVmSupported=False,
                 vmNpivWwnDisableSupported=False, vmNpivWwnUpdateSupported=False, hostBasedReplicationSupported=True,
                 lockSnapshotsSupported=False, disableSnapshotsSupported=False, s1AcpiManagementSupported=True)
    return vim.vm.Capability(perVmEvcSupported=True, secureBootSupported=True, virtualMmuUsageIgnored=True,
                             virtualExecUsageIgnored=True, diskOnlySnapshotOnSuspendedVMSupported=True,
                             toolsSyncTimeAllowSupported=True, sevSupported=False, pmemFailoverSupported=False,
                             requireSgxAttestationSupported=False, changeModeDisksSupported=True,
                             vendorDeviceGroupSupported=True, **flags)


CAPABILITY = _capability()
BOOT_OPTIONS = vim.vm.BootOptions(bootDelay=0, enterBIOSSetup=False, efiSecureBootEnabled=False, bootRetryEnabled=False,
                                  bootRetryDelay=10000, networkBootProtocol="ipv4", bootOrder=[])


def tools_config(vm: VM) -> Any:
    kind = "guestToolsTypeMSI" if vm.guest_id.startswith("win") else "guestToolsTypeOpenVMTools"
    return vim.vm.ToolsConfigInfo(
        toolsVersion=TOOLS_VERSION, toolsInstallType=kind, afterPowerOn=True, afterResume=True,
        beforeGuestStandby=True, beforeGuestShutdown=True, beforeGuestReboot=True, toolsUpgradePolicy="manual",
        syncTimeWithHostAllowed=True, syncTimeWithHost=False,
        lastInstallInfo=vim.vm.ToolsConfigInfo.ToolsLastInstallInfo(counter=0))


def storage(vm: VM) -> Any:
    """Bytes each datastore holds for the VM: its disk files (`committed`), what thin disks may
    still grow (`uncommitted`), and what only this VM uses (`unshared`), as layoutEx counts them."""
    now = vm.world.sim_seconds()
    usage: dict[str, list[int]] = {}
    refs: dict[str, Any] = {}
    for d in vm.disks:
        for i, f in enumerate(d.top.chain()):
            size = f.size(now)
            row = usage.setdefault(f.datastore.moid, [0, 0, 0])
            refs[f.datastore.moid] = f.datastore.ref
            row[0] += size
            if i == 0:
                row[1] += max(0, d.capacity_kb * 1024 - sum(x.size(now) for x in d.top.chain()))
                row[2] += size
    refs.setdefault(vm.home.moid, vm.home.ref)
    usage.setdefault(vm.home.moid, [0, 0, 0])
    return vim.vm.StorageInfo(timestamp=datetime.now(tz=UTC), perDatastoreUsage=[
        vim.vm.StorageInfo.UsageOnDatastore(datastore=refs[m], committed=c, uncommitted=u, unshared=s)
        for m, (c, u, s) in usage.items()])


def _prefix(vm: VM) -> int:
    raw = vm.extra.get("guestinfo.forkscale.prefix", "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= 32 else 24


def ip_config(vm: VM, ip: str) -> Any:
    """NetIpConfigInfo of the NIC that holds `ip` (static, preferred), as Tools report it."""
    return vim.net.IpConfigInfo(ipAddress=[vim.net.IpConfigInfo.IpAddress(
        ipAddress=ip, prefixLength=_prefix(vm), origin="manual", state="preferred")])


def ip_stack(vm: VM, ip: str, device: int) -> list[Any]:
    """GuestStackInfo: the guest's DNS settings and routes (its subnet, and the gateway if any)."""
    extra = vm.extra
    gateway = extra.get("guestinfo.forkscale.gateway") or None
    dns = [d for d in (extra.get("guestinfo.forkscale.dns") or "").split(",") if d]
    net = IPv4Interface(f"{ip}/{_prefix(vm)}").network
    route = vim.net.IpRouteConfigInfo.IpRoute
    gw = vim.net.IpRouteConfigInfo.Gateway
    routes = [route(network=str(net.network_address), prefixLength=net.prefixlen, gateway=gw(device=str(device)))]
    if gateway:
        routes.insert(0, route(network="0.0.0.0", prefixLength=0, gateway=gw(ipAddress=gateway, device=str(device))))
    return [vim.vm.GuestInfo.StackInfo(
        dnsConfig=vim.net.DnsConfigInfo(dhcp=False, hostName=vm.guest.hostname or vm.name, domainName="",
                                        ipAddress=dns, searchDomain=[]),
        ipRouteConfig=vim.net.IpRouteConfigInfo(ipRoute=routes))]
