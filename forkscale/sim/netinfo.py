"""A distributed switch and its port groups as vCenter shows them: the switch's configuration
(every cluster host a member, two uplinks, MTU 1500), summary and capability, and each port
group's default port settings (VLAN 0, no promiscuous mode, route by originating port) and ports.

A port group has at least 128 ports and grows by 8 as adapters connect (earlyBinding, autoExpand);
its port keys are unique on the switch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

from .product import DVS_PRODUCT

if TYPE_CHECKING:
    from .inventory import DVPortgroup, DVSwitch

VS = vim.dvs.VmwareDistributedVirtualSwitch
UPLINKS = ["uplink1", "uplink2"]
MIN_PORTS, KEY_STRIDE = 128, 100_000
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def _off(inherited: bool = False) -> Any:
    return vim.BoolPolicy(inherited=inherited, value=False)


def port_setting(inherited: bool = False) -> Any:
    """VMwareDVSPortSetting: the switch's defaults (inherited=False) or a port group's (inherited)."""
    teaming = VS.UplinkPortTeamingPolicy(
        inherited=inherited, policy=vim.StringPolicy(inherited=inherited, value="loadbalance_srcid"),
        reversePolicy=vim.BoolPolicy(inherited=inherited, value=True),
        notifySwitches=vim.BoolPolicy(inherited=inherited, value=True), rollingOrder=_off(inherited),
        failureCriteria=VS.FailureCriteria(
            inherited=inherited, checkSpeed=vim.StringPolicy(inherited=inherited, value="minimum"),
            speed=vim.IntPolicy(inherited=inherited, value=10), checkDuplex=_off(inherited),
            fullDuplex=_off(inherited), checkErrorPercent=_off(inherited),
            percentage=vim.IntPolicy(inherited=inherited, value=0), checkBeacon=_off(inherited)),
        uplinkPortOrder=VS.UplinkPortOrderPolicy(inherited=inherited, activeUplinkPort=list(UPLINKS),
                                                 standbyUplinkPort=[]))
    shaping = vim.dvs.DistributedVirtualPort.TrafficShapingPolicy(inherited=inherited, enabled=_off(inherited))
    return VS.VmwarePortConfigPolicy(
        blocked=_off(inherited), vmDirectPathGen2Allowed=_off(inherited), inShapingPolicy=shaping,
        outShapingPolicy=shaping, vlan=VS.VlanIdSpec(inherited=inherited, vlanId=0),
        uplinkTeamingPolicy=teaming, lacpPolicy=VS.UplinkLacpPolicy(
            inherited=inherited, enable=_off(inherited), mode=vim.StringPolicy(inherited=inherited, value="passive")),
        securityPolicy=VS.SecurityPolicy(inherited=inherited, allowPromiscuous=_off(inherited),
                                         macChanges=_off(inherited), forgedTransmits=_off(inherited)),
        ipfixEnabled=_off(inherited), txUplink=_off(inherited), networkResourcePoolKey=vim.StringPolicy(
            inherited=inherited, value="-1"), filterPolicy=vim.dvs.DistributedVirtualPort.FilterPolicy(
            inherited=inherited), macManagementPolicy=vim.dvs.VmwareDistributedVirtualSwitch.MacManagementPolicy(
            inherited=inherited, allowPromiscuous=False, macChanges=False, forgedTransmits=False))


def num_ports(pg: DVPortgroup) -> int:
    from .inventory import vms

    used = sum(1 for v in vms(pg.world) for n in v.nics if n.network is pg)
    return max(MIN_PORTS, -(-used // 8) * 8)


def port_keys(pg: DVPortgroup) -> list[str]:
    base = pg.switch.portgroups.index(pg) * KEY_STRIDE if pg in pg.switch.portgroups else 0
    return [str(base + i) for i in range(num_ports(pg))]


def portgroup_config(pg: DVPortgroup) -> Any:
    return vim.dvs.DistributedVirtualPortgroup.ConfigInfo(
        key=pg.moid, name=pg.name, numPorts=num_ports(pg), distributedVirtualSwitch=pg.switch.ref,
        type="earlyBinding", autoExpand=True, configVersion="1", defaultPortConfig=port_setting(inherited=False),
        uplink=False, description="", backingType="standard", transportZoneName=None,
        policy=vim.dvs.VmwareDistributedVirtualSwitch.VMwarePortgroupPolicy(
            blockOverrideAllowed=True, shapingOverrideAllowed=False, vendorConfigOverrideAllowed=False,
            livePortMovingAllowed=False, portConfigResetAtDisconnect=True, vlanOverrideAllowed=False,
            uplinkTeamingOverrideAllowed=False, securityPolicyOverrideAllowed=False,
            ipfixOverrideAllowed=False, macManagementOverrideAllowed=False))


def _members(switch: DVSwitch) -> list[Any]:
    from .inventory import Host

    hosts = [h for h in switch.world.instances(Host) if any(pg in h.networks for pg in switch.portgroups)]
    member = vim.dvs.HostMember
    return [member(status="up", productInfo=DVS_PRODUCT, config=member.ConfigInfo(
        host=h.ref, maxProxySwitchPorts=4096, backing=member.PnicBacking(pnicSpec=[
            member.PnicSpec(pnicDevice="vmnic1", uplinkPortKey=str(900 + i))]))) for i, h in enumerate(hosts)]


def switch_config(switch: DVSwitch) -> Any:
    ports = sum(num_ports(pg) for pg in switch.portgroups)
    return VS.ConfigInfo(
        uuid=switch.uuid, name=switch.name, numStandalonePorts=0, numPorts=ports, maxPorts=60000,
        uplinkPortPolicy=vim.DistributedVirtualSwitch.NameArrayUplinkPortPolicy(uplinkPortName=list(UPLINKS)),
        uplinkPortgroup=[], defaultPortConfig=port_setting(inherited=False), host=_members(switch),
        productInfo=DVS_PRODUCT, configVersion="1", contact=vim.DistributedVirtualSwitch.ContactInfo(name="", contact=""),
        createTime=CREATED, networkResourceManagementEnabled=True, defaultProxySwitchMaxNumPorts=4096,
        networkResourceControlVersion="version3", maxMtu=1500, description="",
        linkDiscoveryProtocolConfig=vim.host.LinkDiscoveryProtocolConfig(protocol="cdp", operation="listen"),
        lacpApiVersion="multipleLag", multicastFilteringMode="legacyFiltering",
        policy=vim.DistributedVirtualSwitch.SwitchPolicy(autoPreInstallAllowed=False, autoUpgradeAllowed=False,
                                                         partialUpgradeAllowed=True))


def switch_summary(switch: DVSwitch) -> Any:
    from .inventory import vms

    members = _members(switch)
    on_switch = [v for v in vms(switch.world) if any(n.network in switch.portgroups for n in v.nics)]
    return vim.DistributedVirtualSwitch.Summary(
        name=switch.name, uuid=switch.uuid, numPorts=sum(num_ports(pg) for pg in switch.portgroups),
        productInfo=DVS_PRODUCT, hostMember=[m.config.host for m in members], host=[m.config.host for m in members],
        vm=[v.ref for v in on_switch], portgroupName=[pg.name for pg in switch.portgroups], description="",
        contact=vim.DistributedVirtualSwitch.ContactInfo(name="", contact=""), numHosts=len(members))


CAPABILITY = vim.DistributedVirtualSwitch.Capability(
    dvsOperationSupported=True, dvPortGroupOperationSupported=True, dvPortOperationSupported=True,
    compatibleHostComponentProductInfo=[vim.dvs.HostProductSpec(productLineId="embeddedEsx", version="8.0.3")],
    featuresSupported=VS.FeatureCapability(
        networkResourceManagementSupported=True, vmDirectPathGen2Supported=True, nicTeamingPolicy=[
            "loadbalance_ip", "loadbalance_srcmac", "loadbalance_srcid", "failover_explicit", "loadbalance_loadbased"],
        networkResourcePoolHighShareValue=100, healthCheckCapability=VS.VmwareHealthCheckFeatureCapability(
            vlanMtuSupported=True, teamingSupported=True), multicastSnoopingSupported=True))
