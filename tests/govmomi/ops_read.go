package main

import (
	"context"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Every managed object type the twin serves, read with ALL its properties (pathSet empty, as
// `govc object.collect` and the mo.* decoders do), then the fields govc's *.info commands, the
// Ansible *_info modules and the Terraform data sources use.
func readOps() []op {
	return []op{
		{"read.vm", opReadVM},
		{"read.vm_guest_net", opReadGuestNet},
		{"read.vm_devices", opReadDevices},
		{"read.host", opReadHost},
		{"read.cluster", opReadCluster},
		{"read.resource_pool", opReadPool},
		{"read.datastore", opReadDatastore},
		{"read.network", opReadNetwork},
		{"read.dvportgroup", opReadPortgroup},
		{"read.dvswitch", opReadSwitch},
		{"read.folder", opReadFolder},
		{"read.datacenter", opReadDatacenter},
	}
}

const gib = int64(1) << 30

func opReadVM(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	var v mo.VirtualMachine
	if err := e.pc().RetrieveOne(ctx, src.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"name": v.Name}
	sc := v.Summary.Config
	ck.equal("summary.config.name", sc.Name, srcName)
	ck.equal("summary.config.memorySizeMB", sc.MemorySizeMB, int32(4096))
	ck.equal("summary.config.numCpu", sc.NumCpu, int32(2))
	ck.equal("summary.config.guestId", sc.GuestId, "ubuntu64Guest")
	ck.equal("summary.config.vmPathName", sc.VmPathName, "["+dsName+"] "+srcName+"/"+srcName+".vmx")
	ck.that(sc.Uuid != "" && v.Config != nil && sc.Uuid == v.Config.Uuid, "summary.config.uuid %q vs config.uuid", sc.Uuid)
	ck.equal("summary.config.numEthernetCards", sc.NumEthernetCards, int32(1))
	ck.equal("summary.config.numVirtualDisks", sc.NumVirtualDisks, int32(1))
	ck.equal("summary.runtime.powerState", v.Summary.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
	ck.that(v.Summary.Storage != nil && v.Summary.Storage.Committed > 0, "summary.storage.committed is not set")
	ck.that(v.Runtime.BootTime != nil, "runtime.bootTime unset on a running VM")
	if h, err := e.host("esx-01"); ck.ok(err, "host") {
		ck.that(v.Runtime.Host != nil && *v.Runtime.Host == h.Reference(), "runtime.host %v", v.Runtime.Host)
	}
	if v.Guest != nil {
		d["toolsRunningStatus"] = v.Guest.ToolsRunningStatus
		ck.equal("guest.toolsRunningStatus", v.Guest.ToolsRunningStatus, string(types.VirtualMachineToolsRunningStatusGuestToolsRunning))
		ck.equal("guest.guestFullName", v.Guest.GuestFullName, "Ubuntu Linux (64-bit)")
	} else {
		ck.that(false, "guest is unset")
	}
	ck.equal("guestHeartbeatStatus", v.GuestHeartbeatStatus, types.ManagedEntityStatusGreen)
	if v.Config != nil {
		ck.that(strings.HasPrefix(v.Config.Version, "vmx-"), "config.version %q", v.Config.Version)
		ck.equal("config.files.vmPathName", v.Config.Files.VmPathName, sc.VmPathName)
		devices := object.VirtualDeviceList(v.Config.Hardware.Device)
		ck.equal("disks", len(devices.SelectByType((*types.VirtualDisk)(nil))), 1)
		ck.equal("ethernet cards", len(devices.SelectByType((*types.VirtualEthernetCard)(nil))), 1)
	} else {
		ck.that(false, "config is unset")
	}
	if p, err := e.rootPool(); ck.ok(err, "pool") {
		ck.that(v.ResourcePool != nil && *v.ResourcePool == p.Reference(), "resourcePool %v", v.ResourcePool)
	}
	if fs, err := e.folders(); ck.ok(err, "folders") {
		ck.that(v.Parent != nil && *v.Parent == fs.VmFolder.Reference(), "parent %v", v.Parent)
	}
	if ds, err := e.datastore(dsName); ck.ok(err, "datastore") {
		ck.equal("datastore", v.Datastore, []types.ManagedObjectReference{ds.Reference()})
	}
	ck.equal("network count", len(v.Network), 1)
	ck.that(v.Snapshot != nil && len(v.Snapshot.RootSnapshotList) == 1 && v.Snapshot.RootSnapshotList[0].Name == baseSnap,
		"snapshot tree %+v", v.Snapshot)
	ck.that(v.LayoutEx != nil && len(v.LayoutEx.File) > 0, "layoutEx has no files")
	ck.that(v.EnvironmentBrowser.Value != "", "environmentBrowser unset (Terraform reads guest OS and hardware options through it)")
	ck.that(v.Storage != nil && len(v.Storage.PerDatastoreUsage) == 1, "storage.perDatastoreUsage %+v", v.Storage)
	return ck.done(d)
}

// opReadGuestNet: what `govc vm.ip -a`, Terraform's wait_for_guest_net and Ansible's
// vmware_guest_info read: guest.ipAddress, guest.net[].ipConfig, guest.hostName.
func opReadGuestNet(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.identityClone()
	if err != nil {
		return nil, err
	}
	var v mo.VirtualMachine
	if err := e.pc().RetrieveOne(ctx, vm.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{}
	if !ck.that(v.Guest != nil, "guest unset") || !ck.that(v.Config != nil, "config unset") {
		return ck.done(d)
	}
	d["ipAddress"], d["hostName"] = v.Guest.IpAddress, v.Guest.HostName
	ck.equal("guest.ipAddress", v.Guest.IpAddress, identIP)
	ck.equal("guest.hostName", v.Guest.HostName, identHost)
	nics := object.VirtualDeviceList(v.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
	mac := ""
	if len(nics) == 1 {
		mac = nics[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().MacAddress
	}
	if ck.equal("guest.net count", len(v.Guest.Net), 1) {
		n := v.Guest.Net[0]
		ck.equal("guest.net[0].macAddress", n.MacAddress, mac)
		ck.equal("guest.net[0].ipAddress", n.IpAddress, []string{identIP})
		ck.that(n.Network != "", "guest.net[0].network is empty")
		ck.equal("guest.net[0].deviceConfigId", n.DeviceConfigId, int32(4000))
		if ck.that(n.IpConfig != nil, "guest.net[0].ipConfig unset") && ck.equal("ipConfig.ipAddress count", len(n.IpConfig.IpAddress), 1) {
			a := n.IpConfig.IpAddress[0]
			d["ipConfig"] = map[string]interface{}{"ip": a.IpAddress, "prefix": a.PrefixLength, "state": a.State}
			ck.equal("ipConfig.ipAddress[0].ipAddress", a.IpAddress, identIP)
			ck.that(a.PrefixLength > 0 && a.PrefixLength <= 32, "ipConfig prefixLength %d", a.PrefixLength)
			ck.equal("ipConfig.ipAddress[0].state", a.State, string(types.NetIpConfigInfoIpAddressStatusPreferred))
		}
	}
	ck.that(len(v.Guest.IpStack) > 0, "guest.ipStack is empty (no routes/DNS for the guest)")
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second) // it waits for ipConfig, which may never come
	defer cancel()
	netIP, err := vm.WaitForNetIP(wctx, true)
	if wctx.Err() != nil {
		err = errorf("no IPv4 address in guest.net[].ipConfig within 5 s")
	}
	if ck.ok(err, "WaitForNetIP") {
		d["netIP"] = netIP
		ck.equal("WaitForNetIP", netIP, map[string][]string{mac: {identIP}})
	}
	return ck.done(d)
}

// opReadDevices: `govc device.ls` — the devices every real VM has besides its disks and NICs.
func opReadDevices(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	devices, err := src.Device(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	names := []string{}
	for _, dev := range devices {
		names = append(names, devices.Name(dev))
	}
	for _, kind := range []struct {
		label string
		typ   types.BaseVirtualDevice
		n     int
	}{{"IDE controllers", (*types.VirtualIDEController)(nil), 2}, {"video card", (*types.VirtualMachineVideoCard)(nil), 1},
		{"keyboard", (*types.VirtualKeyboard)(nil), 1}, {"SCSI controller", (*types.ParaVirtualSCSIController)(nil), 1},
		{"disk", (*types.VirtualDisk)(nil), 1}, {"ethernet card", (*types.VirtualVmxnet3)(nil), 1}} {
		ck.equal(kind.label, len(devices.SelectByType(kind.typ)), kind.n)
	}
	disk := devices.SelectByType((*types.VirtualDisk)(nil))
	file := ""
	if len(disk) == 1 {
		if b, ok := disk[0].GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			file = b.GetVirtualDeviceFileBackingInfo().FileName
		}
		ck.equal("disk capacity", disk[0].(*types.VirtualDisk).CapacityInBytes, 40*gib)
	}
	ck.that(strings.HasPrefix(file, "["+dsName+"] "+srcName+"/"), "disk file %q", file)
	return ck.done(map[string]interface{}{"devices": names, "disk": file})
}

func opReadHost(ctx context.Context, e *env) (interface{}, error) {
	h, err := e.host("esx-01")
	if err != nil {
		return nil, err
	}
	var v mo.HostSystem
	if err := e.pc().RetrieveOne(ctx, h.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"name": v.Name}
	if hw := v.Summary.Hardware; ck.that(hw != nil, "summary.hardware unset") {
		d["cpuModel"], d["numCpuCores"], d["memorySize"] = hw.CpuModel, hw.NumCpuCores, hw.MemorySize
		ck.equal("summary.hardware.numCpuCores", hw.NumCpuCores, int16(32))
		ck.equal("summary.hardware.memorySize", hw.MemorySize, 128*gib)
		ck.that(hw.Vendor != "" && hw.Model != "" && hw.CpuModel != "" && hw.CpuMhz > 0, "summary.hardware %+v", *hw)
	}
	if p := v.Summary.Config.Product; ck.that(p != nil, "summary.config.product unset (govc host.info, Ansible vmware_host_facts read the ESXi version here)") {
		d["product"] = p.FullName
		ck.equal("summary.config.product.name", p.Name, "VMware ESXi")
		ck.equal("summary.config.product.apiType", p.ApiType, "HostAgent")
		ck.that(strings.HasPrefix(p.Version, "8.0"), "summary.config.product.version %q", p.Version)
	}
	if ck.that(v.Config != nil, "config unset") {
		ck.equal("config.product.name", v.Config.Product.Name, "VMware ESXi")
		ck.that(v.Config.Network != nil && len(v.Config.Network.Vnic) > 0, "config.network.vnic empty (no management address)")
	}
	if rt := v.Summary.Runtime; ck.that(rt != nil, "summary.runtime unset") {
		ck.equal("summary.runtime.connectionState", rt.ConnectionState, types.HostSystemConnectionStateConnected)
		ck.that(!rt.InMaintenanceMode, "summary.runtime.inMaintenanceMode")
		ck.that(rt.BootTime != nil, "summary.runtime.bootTime unset")
	}
	ck.that(v.Summary.QuickStats.OverallMemoryUsage > 0, "summary.quickStats.overallMemoryUsage is 0 with running VMs")
	ck.that(v.Summary.QuickStats.Uptime > 0, "summary.quickStats.uptime is 0")
	if v.Hardware != nil {
		ck.equal("hardware.cpuInfo.numCpuCores", v.Hardware.CpuInfo.NumCpuCores, int16(32))
		ck.that(v.Hardware.SystemInfo.Uuid != "", "hardware.systemInfo.uuid empty")
	} else {
		ck.that(false, "hardware unset")
	}
	if c, err := e.cluster(); ck.ok(err, "cluster") {
		ck.that(v.Parent != nil && *v.Parent == c.Reference(), "parent %v", v.Parent)
	}
	if src, err := e.vm(srcName); ck.ok(err, "src") {
		ck.that(refIn(v.Vm, src.Reference()), "vm list lacks src-linux")
	}
	ck.equal("datastore count", len(v.Datastore), 2)
	ck.that(len(v.Network) >= 3, "network list %v", v.Network)
	ck.that(v.DatastoreBrowser.Value != "", "datastoreBrowser unset")
	ck.that(v.ConfigManager.NetworkSystem != nil && v.ConfigManager.DatastoreSystem != nil, "configManager lacks networkSystem/datastoreSystem")
	if v.Config != nil { // govmomi's ManagementIPs dereferences config without a check
		ips, err := h.ManagementIPs(ctx)
		if ck.ok(err, "ManagementIPs") {
			d["managementIPs"] = len(ips)
			ck.that(len(ips) > 0, "no management IP")
		}
	}
	return ck.done(d)
}

func opReadCluster(ctx context.Context, e *env) (interface{}, error) {
	cl, err := e.cluster()
	if err != nil {
		return nil, err
	}
	var v mo.ClusterComputeResource
	if err := e.pc().RetrieveOne(ctx, cl.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"name": v.Name}
	if s, ok := v.Summary.(*types.ClusterComputeResourceSummary); ck.that(ok, "summary is %T, not a ClusterComputeResourceSummary", v.Summary) {
		d["numHosts"], d["totalMemory"] = s.NumHosts, s.TotalMemory
		ck.equal("summary.numHosts", s.NumHosts, int32(4))
		ck.equal("summary.numEffectiveHosts", s.NumEffectiveHosts, int32(4))
		ck.equal("summary.totalMemory", s.TotalMemory, 4*128*gib)
		ck.equal("summary.numCpuCores", s.NumCpuCores, int16(128))
		ck.that(s.EffectiveCpu > 0 && s.EffectiveMemory > 0, "summary.effectiveCpu/effectiveMemory are 0 on a healthy cluster (%d MHz, %d MB)", s.EffectiveCpu, s.EffectiveMemory)
	}
	if cfg, ok := v.ConfigurationEx.(*types.ClusterConfigInfoEx); ck.that(ok, "configurationEx is %T, not a ClusterConfigInfoEx", v.ConfigurationEx) {
		ck.that(cfg.DrsConfig.Enabled != nil, "configurationEx.drsConfig.enabled unset")
		ck.that(cfg.DasConfig.Enabled != nil, "configurationEx.dasConfig.enabled unset")
		if cfg.DrsConfig.Enabled != nil {
			d["drs"] = *cfg.DrsConfig.Enabled
		}
	}
	ck.equal("host count", len(v.Host), 4)
	if p, err := e.rootPool(); ck.ok(err, "pool") {
		ck.that(v.ResourcePool != nil && *v.ResourcePool == p.Reference(), "resourcePool %v", v.ResourcePool)
	}
	ck.equal("datastore count", len(v.Datastore), 2)
	ck.that(len(v.Network) >= 3, "network %v", v.Network)
	ck.that(v.EnvironmentBrowser != nil, "environmentBrowser unset")
	ck.equal("overallStatus", v.OverallStatus, types.ManagedEntityStatusGreen)
	return ck.done(d)
}

func opReadPool(ctx context.Context, e *env) (interface{}, error) {
	p, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	var v mo.ResourcePool
	if err := e.pc().RetrieveOne(ctx, p.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"name": v.Name}
	ck.equal("name", v.Name, "Resources")
	if cl, err := e.cluster(); ck.ok(err, "cluster") {
		ck.equal("owner", v.Owner, cl.Reference())
		ck.that(v.Parent != nil && *v.Parent == cl.Reference(), "parent %v", v.Parent)
	}
	if src, err := e.vm(srcName); ck.ok(err, "src") {
		ck.that(refIn(v.Vm, src.Reference()), "vm list lacks src-linux")
	}
	for label, a := range map[string]types.ResourceAllocationInfo{"cpu": v.Config.CpuAllocation, "memory": v.Config.MemoryAllocation} {
		if ck.that(a.Shares != nil, "config.%sAllocation.shares unset", label) {
			d[label+"Shares"] = map[string]interface{}{"level": a.Shares.Level, "shares": a.Shares.Shares}
			ck.equal("config."+label+"Allocation.shares.level", a.Shares.Level, types.SharesLevelNormal)
		}
		ck.that(a.Reservation != nil && a.Limit != nil && a.ExpandableReservation != nil,
			"config.%sAllocation reservation/limit/expandableReservation unset", label)
	}
	ck.that(v.Runtime.Cpu.MaxUsage > 0 && v.Runtime.Memory.MaxUsage > 0, "runtime.cpu/memory.maxUsage are 0")
	ck.equal("runtime.overallStatus", v.Runtime.OverallStatus, types.ManagedEntityStatusGreen)
	if s, ok := v.Summary.(*types.ResourcePoolSummary); ck.that(ok, "summary is %T", v.Summary) {
		ck.equal("summary.name", s.Name, "Resources")
	}
	return ck.done(d)
}

func opReadDatastore(ctx context.Context, e *env) (interface{}, error) {
	ds, err := e.datastore(dsName)
	if err != nil {
		return nil, err
	}
	var v mo.Datastore
	if err := e.pc().RetrieveOne(ctx, ds.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"capacity": v.Summary.Capacity, "freeSpace": v.Summary.FreeSpace, "type": v.Summary.Type}
	if ck.that(v.Info != nil, "info unset (govc datastore.info prints info.name, info.url)") {
		info := v.Info.GetDatastoreInfo()
		d["infoName"] = info.Name
		ck.equal("info.name", info.Name, dsName)
		ck.that(info.Url != "" && info.FreeSpace > 0 && info.MaxFileSize > 0, "info url/freeSpace/maxFileSize %q %d %d", info.Url, info.FreeSpace, info.MaxFileSize)
		if vi, ok := v.Info.(*types.VmfsDatastoreInfo); ck.that(ok, "info is %T, not a VmfsDatastoreInfo for a VMFS datastore", v.Info) {
			ck.that(vi.Vmfs != nil && vi.Vmfs.Name == dsName && vi.Vmfs.Capacity == v.Summary.Capacity, "info.vmfs %+v", vi.Vmfs)
		}
	}
	ck.equal("summary.name", v.Summary.Name, dsName)
	ck.equal("summary.capacity", v.Summary.Capacity, 4096*gib)
	ck.that(v.Summary.FreeSpace > 0 && v.Summary.FreeSpace < v.Summary.Capacity, "summary.freeSpace %d", v.Summary.FreeSpace)
	ck.equal("summary.type", v.Summary.Type, "VMFS")
	ck.that(v.Summary.Accessible && v.Summary.Url != "", "summary accessible/url")
	ck.equal("host mounts", len(v.Host), 4)
	if src, err := e.vm(srcName); ck.ok(err, "src") {
		ck.that(refIn(v.Vm, src.Reference()), "vm list lacks src-linux")
	}
	ck.equal("browser type", v.Browser.Type, "HostDatastoreBrowser")
	ck.that(v.Capability.DirectoryHierarchySupported, "capability.directoryHierarchySupported false")
	return ck.done(d)
}

func opReadNetwork(ctx context.Context, e *env) (interface{}, error) {
	r, err := e.ref("Network", netName)
	if err != nil {
		return nil, err
	}
	var v mo.Network
	if err := e.pc().RetrieveOne(ctx, r, nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	name := ""
	if ck.that(v.Summary != nil, "summary unset") {
		s := v.Summary.GetNetworkSummary()
		name = s.Name
		ck.that(s.Name == netName && s.Accessible, "summary %+v", *s)
		ck.that(s.Network != nil && *s.Network == r, "summary.network %v", s.Network)
	}
	ck.equal("host count", len(v.Host), 4)
	if src, err := e.vm(srcName); ck.ok(err, "src") {
		ck.that(refIn(v.Vm, src.Reference()), "vm list lacks src-linux")
	}
	if fs, err := e.folders(); ck.ok(err, "folders") {
		ck.that(v.Parent != nil && *v.Parent == fs.NetworkFolder.Reference(), "parent %v", v.Parent)
	}
	return ck.done(map[string]interface{}{"summaryName": name, "hosts": len(v.Host)})
}

func opReadPortgroup(ctx context.Context, e *env) (interface{}, error) {
	r, err := e.ref("DistributedVirtualPortgroup", dvpgName)
	if err != nil {
		return nil, err
	}
	var v mo.DistributedVirtualPortgroup
	if err := e.pc().RetrieveOne(ctx, r, nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"key": v.Key, "type": v.Config.Type, "numPorts": v.Config.NumPorts}
	ck.equal("key", v.Key, r.Value)
	ck.equal("config.name", v.Config.Name, dvpgName)
	ck.equal("config.type", v.Config.Type, string(types.DistributedVirtualPortgroupPortgroupTypeEarlyBinding))
	ck.that(v.Config.NumPorts > 0, "config.numPorts %d", v.Config.NumPorts)
	if sw, err := e.ref("VmwareDistributedVirtualSwitch", dvsName); ck.ok(err, "dvs") {
		ck.that(v.Config.DistributedVirtualSwitch != nil && *v.Config.DistributedVirtualSwitch == sw, "config.distributedVirtualSwitch %v", v.Config.DistributedVirtualSwitch)
	}
	if ps, ok := v.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting); ck.that(ok, "config.defaultPortConfig is %T, not a VMwareDVSPortSetting", v.Config.DefaultPortConfig) {
		vlan, ok := ps.Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec)
		if ck.that(ok, "defaultPortConfig.vlan is %T", ps.Vlan) {
			d["vlan"] = vlan.VlanId
		}
		ck.that(ps.SecurityPolicy != nil && ps.UplinkTeamingPolicy != nil, "defaultPortConfig lacks securityPolicy/uplinkTeamingPolicy")
	}
	ck.equal("host count", len(v.Host), 4)
	if w, err := e.vm(srcWinName); ck.ok(err, "src-win") {
		ck.that(refIn(v.Vm, w.Reference()), "vm list lacks src-win")
	}
	ck.that(len(v.PortKeys) > 0, "portKeys empty")
	return ck.done(d)
}

func opReadSwitch(ctx context.Context, e *env) (interface{}, error) {
	r, err := e.ref("VmwareDistributedVirtualSwitch", dvsName)
	if err != nil {
		return nil, err
	}
	var v mo.VmwareDistributedVirtualSwitch
	if err := e.pc().RetrieveOne(ctx, r, nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{"uuid": v.Uuid}
	ck.that(v.Uuid != "", "uuid empty")
	ck.equal("summary.name", v.Summary.Name, dvsName)
	ck.equal("summary.uuid", v.Summary.Uuid, v.Uuid)
	ck.that(contains(v.Summary.PortgroupName, dvpgName), "summary.portgroupName %v", v.Summary.PortgroupName)
	ck.that(v.Summary.ProductInfo != nil && v.Summary.ProductInfo.Version != "", "summary.productInfo unset")
	if pg, err := e.ref("DistributedVirtualPortgroup", dvpgName); ck.ok(err, "dvpg") {
		ck.that(refIn(v.Portgroup, pg), "portgroup lacks dvpg-vdi")
	}
	if cfg, ok := v.Config.(*types.VMwareDVSConfigInfo); ck.that(ok, "config is %T, not a VMwareDVSConfigInfo", v.Config) {
		d["maxMtu"], d["members"] = cfg.MaxMtu, len(cfg.Host)
		ck.equal("config.name", cfg.Name, dvsName)
		ck.equal("config.uuid", cfg.Uuid, v.Uuid)
		ck.that(cfg.MaxMtu >= 1500, "config.maxMtu %d", cfg.MaxMtu)
		ck.equal("config.host members", len(cfg.Host), 4)
		ck.that(cfg.DefaultPortConfig != nil && cfg.UplinkPortPolicy != nil, "config lacks defaultPortConfig/uplinkPortPolicy")
	}
	return ck.done(d)
}

func opReadFolder(ctx context.Context, e *env) (interface{}, error) {
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	c, _ := e.client()
	ck := &checks{}
	var vf, root mo.Folder
	if err := e.pc().RetrieveOne(ctx, fs.VmFolder.Reference(), nil, &vf); err != nil {
		return nil, err
	}
	if err := e.pc().RetrieveOne(ctx, c.ServiceContent.RootFolder, nil, &root); err != nil {
		return nil, err
	}
	children, err := e.names(ctx, vf.ChildEntity)
	ck.ok(err, "child names")
	ck.equal("vm folder name", vf.Name, "vm")
	ck.that(contains(vf.ChildType, "VirtualMachine") && contains(vf.ChildType, "Folder"), "vm folder childType %v", vf.ChildType)
	for _, n := range []string{srcName, srcWinName, folderName} {
		ck.that(contains(children, n), "vm folder children %v lack %s", children, n)
	}
	if dc, err := e.dc(); ck.ok(err, "dc") {
		ck.that(vf.Parent != nil && *vf.Parent == dc.Reference(), "vm folder parent %v", vf.Parent)
		ck.equal("root childEntity", root.ChildEntity, []types.ManagedObjectReference{dc.Reference()})
	}
	ck.equal("root childType", root.ChildType, []string{"Folder", "Datacenter"})
	ck.that(root.Parent == nil, "root folder has a parent %v", root.Parent)
	return ck.done(map[string]interface{}{"children": children, "rootName": root.Name})
}

func opReadDatacenter(ctx context.Context, e *env) (interface{}, error) {
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	var v mo.Datacenter
	if err := e.pc().RetrieveOne(ctx, dc.Reference(), nil, &v); err != nil {
		return nil, err
	}
	ck := &checks{}
	ck.equal("name", v.Name, dcName)
	ck.that(v.VmFolder.Value != "" && v.HostFolder.Value != "" && v.DatastoreFolder.Value != "" && v.NetworkFolder.Value != "", "a datacenter folder is unset")
	dsNames, err := e.names(ctx, v.Datastore)
	ck.ok(err, "datastore names")
	ck.equal("datastore", dsNames, []string{dsHddName, dsName})
	netNames, err := e.names(ctx, v.Network)
	ck.ok(err, "network names")
	for _, n := range []string{netName, isoNetName, dvpgName} { // a real vCenter adds the DVS uplink port group
		ck.that(contains(netNames, n), "network %v lacks %s", netNames, n)
	}
	c, _ := e.client()
	ck.that(v.Parent != nil && *v.Parent == c.ServiceContent.RootFolder, "parent %v", v.Parent)
	return ck.done(map[string]interface{}{"datastores": dsNames, "networks": netNames})
}
