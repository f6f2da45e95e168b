"""What a HostSystem shows besides its hardware: its configuration (ESXi product, networking with
a management vmk0, mounted datastores), capabilities, configManager objects and datastore browser.

Everything here is built once per host (a host's configuration does not change in the twin);
only what moves with the world (mounted volumes' free space, the VMs' port groups) is read live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim

from .mo import Manager
from .product import ESXI_ABOUT

if TYPE_CHECKING:
    from .inventory import Host
    from .world import World

MGMT_NET, MGMT_PREFIX, MGMT_GATEWAY, DNS_SERVER, DOMAIN = "192.168.100", 24, "192.168.100.1", "192.168.100.2", "twin.local"
UPLINKS = ("vmnic0", "vmnic1")

# The host-side manager objects of configManager: property name -> (moid prefix, kind).
CONFIG_MANAGERS: dict[str, tuple[str, type]] = {
    "networkSystem": ("networkSystem", vim.host.NetworkSystem),
    "datastoreSystem": ("datastoreSystem", vim.host.DatastoreSystem),
    "storageSystem": ("storageSystem", vim.host.StorageSystem),
    "advancedOption": ("EsxHostAdvSettings", vim.option.OptionManager),
    "memoryManager": ("memoryManagerSystem", vim.host.MemoryManagerSystem),
    "cpuScheduler": ("cpuSchedulerSystem", vim.host.CpuSchedulerSystem),
    "virtualNicManager": ("virtualNicManager", vim.host.VirtualNicManager),
    "vmotionSystem": ("vmotionSystem", vim.host.VMotionSystem),
    "dateTimeSystem": ("dateTimeSystem", vim.host.DateTimeSystem),
    "serviceSystem": ("serviceSystem", vim.host.ServiceSystem),
}


def index(host: Host) -> int:
    return int(host.moid.rpartition("-")[2] or 0)


def mgmt_ip(host: Host) -> str:
    return f"{MGMT_NET}.{10 + index(host)}"


def pnic_mac(host: Host, n: int) -> str:
    i = index(host)
    return f"3c:fd:fe:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:{n:02x}"


def _vnic(host: Host) -> Any:
    ip = vim.host.IpConfig(dhcp=False, ipAddress=mgmt_ip(host), subnetMask="255.255.255.0")
    return vim.host.VirtualNic(device="vmk0", key="key-vim.host.VirtualNic-vmk0", portgroup="Management Network",
                               spec=vim.host.VirtualNic.Specification(ip=ip, mac=pnic_mac(host, 0), mtu=1500,
                                                                      portgroup="Management Network",
                                                                      tsoEnabled=True, netStackInstanceKey="defaultTcpipStack"))


def _portgroup(name: str, vlan: int = 0) -> Any:
    policy = vim.host.NetworkPolicy(security=vim.host.NetworkPolicy.SecurityPolicy(
        allowPromiscuous=False, macChanges=False, forgedTransmits=False))
    return vim.host.PortGroup(key=f"key-vim.host.PortGroup-{name}", vswitch="key-vim.host.VirtualSwitch-vSwitch0",
                              computedPolicy=policy,
                              spec=vim.host.PortGroup.Specification(name=name, vlanId=vlan, vswitchName="vSwitch0",
                                                                    policy=vim.host.NetworkPolicy()))


def network_info(host: Host) -> Any:
    from .inventory import DVPortgroup

    standard = [n.name for n in host.networks if not isinstance(n, DVPortgroup)]
    pnics = [vim.host.PhysicalNic(
        key=f"key-vim.host.PhysicalNic-{dev}", device=dev, pci=f"0000:1{i}:00.0", driver="ixgben", mac=pnic_mac(host, i),
        wakeOnLanSupported=False, linkSpeed=vim.host.PhysicalNic.LinkSpeedDuplex(speedMb=10000, duplex=True),
        spec=vim.host.PhysicalNic.Specification(linkSpeed=vim.host.PhysicalNic.LinkSpeedDuplex(speedMb=10000, duplex=True)))
        for i, dev in enumerate(UPLINKS)]
    vswitch = vim.host.VirtualSwitch(
        name="vSwitch0", key="key-vim.host.VirtualSwitch-vSwitch0", numPorts=2560, numPortsAvailable=2520, mtu=1500,
        pnic=[p.key for p in pnics], portgroup=[f"key-vim.host.PortGroup-{n}" for n in ["Management Network", *standard]],
        spec=vim.host.VirtualSwitch.Specification(numPorts=2560, mtu=1500,
                                                  bridge=vim.host.VirtualSwitch.BondBridge(nicDevice=list(UPLINKS))))
    return vim.host.NetworkInfo(
        vswitch=[vswitch], portgroup=[_portgroup("Management Network"), *(_portgroup(n) for n in standard)],
        pnic=pnics, vnic=[_vnic(host)], ipV6Enabled=False, atBootIpV6Enabled=False,
        dnsConfig=vim.host.DnsConfig(dhcp=False, hostName=host.name, domainName=DOMAIN, address=[DNS_SERVER],
                                     searchDomain=[DOMAIN]),
        ipRouteConfig=vim.host.IpRouteConfig(defaultGateway=MGMT_GATEWAY, gatewayDevice="vmk0"))


def vnic_manager_info(host: Host) -> Any:
    net_config = vim.host.VirtualNicManager.NetConfig
    key = "management.key-vim.host.VirtualNic-vmk0"
    vnic = _vnic(host)
    vnic.key = key
    return vim.host.VirtualNicManagerInfo(netConfig=[
        net_config(nicType="management", multiSelectAllowed=True, candidateVnic=[vnic], selectedVnic=[key]),
        net_config(nicType="vmotion", multiSelectAllowed=True, candidateVnic=[], selectedVnic=[])])


def file_system_volumes(host: Host) -> Any:
    from .storage import vmfs_volume

    mounts = [vim.host.FileSystemMountInfo(
        mountInfo=vim.host.MountInfo(path=ds.mount_path(), accessMode="readWrite", mounted=True,
                                     accessible=True), volume=vmfs_volume(ds)) for ds in host.datastores]
    return vim.host.FileSystemVolumeInfo(volumeTypeList=["VMFS", "NFS", "NFS41", "vsan", "VVOL", "OTHER"],
                                         mountInfo=mounts)


DATASTORE_CAPABILITIES = vim.host.DatastoreSystem.Capabilities(
    nfsMountCreationRequired=True, nfsMountCreationSupported=True, localDatastoreSupported=False,
    vmfsExtentExpansionSupported=True)
DATETIME = vim.host.DateTimeInfo(timeZone=vim.host.DateTimeSystem.TimeZone(key="UTC", name="UTC", description="UTC",
                                                                           gmtOffset=0),
                                 ntpConfig=vim.host.NtpConfig(server=["pool.ntp.org"]))
SERVICES = vim.host.ServiceInfo(service=[
    vim.host.Service(key="TSM-SSH", label="SSH", required=False, uninstallable=False, running=False, policy="off"),
    vim.host.Service(key="ntpd", label="NTP Daemon", required=False, uninstallable=False, running=True, policy="on"),
    vim.host.Service(key="vpxa", label="VMware vCenter Agent", required=True, uninstallable=False, running=True,
                     policy="on")])
HYPERTHREAD = vim.host.CpuSchedulerSystem.HyperThreadScheduleInfo(available=True, active=True, config=True)
NET_CAPABILITIES = vim.host.NetCapabilities(
    canSetPhysicalNicLinkSpeed=True, supportsNicTeaming=True, supportsVlan=True, usesServiceConsoleNic=False,
    supportsNetworkHints=True, vswitchConfigSupported=True, vnicConfigSupported=True, ipRouteConfigSupported=True,
    dnsConfigSupported=True, dhcpOnVnicSupported=True, ipV6Supported=True)


def _capability_flags() -> dict[str, Any]:
    """Every required boolean of HostCapability true (what an ESXi 8 host supports), but FT and record/replay."""
    flags: dict[str, Any] = {}
    for p in vim.host.Capability._GetPropertyList():
        if p.type is bool and not p.flags & VmomiSupport.F_OPTIONAL:
            flags[p.name] = p.name not in ("recordReplaySupported", "ftSupported", "smpFtSupported",
                                           "backgroundSnapshotsSupported", "tpmSupported", "standbySupported")
    return flags


CAPABILITY = vim.host.Capability(
    maxSupportedVMs=1024, maxRunningVMs=1024, maxSupportedVcpus=4096, maxRegisteredVMs=4096, maxHostRunningVms=1024,
    maxHostSupportedVcpus=4096, supportedVmfsMajorVersion=[6], vmotionAcrossNetworkSupported=True,
    maxNumDisksSVMotion=248, maxVirtualDiskDescVersionSupported=8, **_capability_flags())


def config(host: Host) -> Any:
    """HostConfigInfo: the host's static configuration (built once, see Host.p_config)."""
    resources = system_resources(host)
    return vim.host.ConfigInfo(
        host=host.ref, product=ESXI_ABOUT, hyperThread=HYPERTHREAD, network=network_info(host),
        virtualNicManagerInfo=vnic_manager_info(host), capabilities=NET_CAPABILITIES,
        datastoreCapabilities=DATASTORE_CAPABILITIES, fileSystemVolume=file_system_volumes(host),
        service=SERVICES, systemResources=resources, dateTimeInfo=DATETIME, adminDisabled=False,
        lockdownMode="lockdownDisabled", option=[], optionDef=[],
        vmotion=vim.host.VMotionInfo(netConfig=vim.host.VMotionSystem.NetConfig(candidateVnic=[])),
        offloadCapabilities=vim.host.NetOffloadCapabilities(csumOffload=True, tcpSegmentation=True,
                                                            zeroCopyXmit=True))


def system_resources(host: Host) -> Any:
    alloc = vim.ResourceAllocationInfo(reservation=0, expandableReservation=True, limit=-1,
                                       shares=vim.SharesInfo(shares=1000, level="normal"))
    return vim.host.SystemResourceInfo(key="host/system", config=vim.ResourceConfigSpec(
        entity=host.ref, cpuAllocation=alloc, memoryAllocation=alloc))


def summary_config(host: Host) -> Any:
    return vim.host.Summary.ConfigSummary(name=host.name, port=443, vmotionEnabled=True, faultToleranceEnabled=False,
                                          product=ESXI_ABOUT, sslThumbprint=_thumbprint(host))


def _thumbprint(host: Host) -> str:
    seed = f"{host.moid:>20}".encode().hex()[:40].upper()
    return ":".join(seed[i:i + 2] for i in range(0, 40, 2))


def licensable_resource(host: Host) -> Any:
    from pyVmomi import vmodl

    return vim.LicenseManager.LicensableResourceInfo(resource=[
        vmodl.KeyAnyValue(key="numCpuPackages", value=2), vmodl.KeyAnyValue(key="numCpuCores", value=host.cpu_cores)])


def attach_managers(world: World, host: Host) -> dict[str, Any]:
    """Create the host's configManager objects and datastore browser; the configManager itself."""
    from .browser import DatastoreBrowser

    suffix = host.moid.rpartition("-")[2]
    refs: dict[str, Any] = {}
    for prop, (prefix, kind) in CONFIG_MANAGERS.items():
        refs[prop] = world.add(Manager(world, f"{prefix}-{suffix}", kind, **_manager_props(host, prop))).ref
    host.browser = world.add(DatastoreBrowser(world, f"datastoreBrowser-host-{suffix}", host.datastores))
    return refs


def _manager_props(host: Host, prop: str) -> dict[str, Any]:
    if prop == "datastoreSystem":
        return {"capabilities": DATASTORE_CAPABILITIES, "datastore": [d.ref for d in host.datastores]}
    if prop == "storageSystem":
        return {"fileSystemVolumeInfo": file_system_volumes(host)}
    if prop == "virtualNicManager":
        return {"info": vnic_manager_info(host)}
    if prop == "dateTimeSystem":
        return {"dateTimeInfo": DATETIME}
    if prop == "serviceSystem":
        return {"serviceInfo": SERVICES}
    if prop == "networkSystem":
        return {"networkInfo": network_info(host), "capabilities": NET_CAPABILITIES,
                "dnsConfig": network_info(host).dnsConfig, "ipRouteConfig": network_info(host).ipRouteConfig}
    if prop == "cpuScheduler":
        return {"hyperthreadInfo": HYPERTHREAD}
    if prop == "advancedOption":
        return {"setting": [], "supportedOption": []}
    return {}
