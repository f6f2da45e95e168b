package main

import (
	"context"
	"strings"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func opReconfigureAnnotation(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-annotate", false)
	if err != nil {
		return nil, err
	}
	before, err := readVM(ctx, e, vm, "config.changeVersion")
	if err != nil {
		return nil, err
	}
	note := "owned by gocli\nsecond line"
	t, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{Annotation: note})
	ck := &checks{}
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "ReconfigVM_Task")
	v, err := readVM(ctx, e, vm, "config", "summary.config")
	if ck.ok(err, "read") && ck.that(v.Config != nil, "config unset") {
		ck.equal("config.annotation", v.Config.Annotation, note)
		ck.equal("summary.config.annotation", v.Summary.Config.Annotation, note)
		ck.that(before.Config != nil && v.Config.ChangeVersion != before.Config.ChangeVersion, "config.changeVersion did not change")
	}
	evs, _ := e.eventTypes(ctx, vm.Reference())
	ck.that(contains(evs, "VmReconfiguredEvent"), "no VmReconfiguredEvent in %v", evs)
	return ck.done(map[string]interface{}{"annotation": note, "events": evs})
}

func nicOf(ctx context.Context, vm *object.VirtualMachine) (types.BaseVirtualDevice, error) {
	devices, err := vm.Device(ctx)
	if err != nil {
		return nil, err
	}
	nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
	if len(nics) != 1 {
		return nil, errorf("%d NICs", len(nics))
	}
	return nics[0], nil
}

// opReconfigureNIC: `govc vm.network.change` to a standard port group, then to a DVS port group.
func opReconfigureNIC(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-nic", false)
	if err != nil {
		return nil, err
	}
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{}
	for _, target := range []string{isoNetName, dvpgName} {
		nic, err := nicOf(ctx, vm)
		if !ck.ok(err, "NIC") {
			break
		}
		mac := nic.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().MacAddress
		n, err := f.Network(ctx, target)
		if !ck.ok(err, "Network("+target+")") {
			break
		}
		backing, err := n.EthernetCardBackingInfo(ctx)
		if !ck.ok(err, "backing "+target) {
			break
		}
		nic.GetVirtualDevice().Backing = backing
		ck.ok(vm.EditDevice(ctx, nic), "EditDevice -> "+target)
		after, err := nicOf(ctx, vm)
		if !ck.ok(err, "NIC after") {
			break
		}
		card := after.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
		ck.equal("MAC kept", card.MacAddress, mac)
		switch b := card.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			d[target] = b.DeviceName
			ck.equal("backing deviceName", b.DeviceName, target)
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			d[target] = b.Port.PortgroupKey
			ck.equal("backing portgroupKey", b.Port.PortgroupKey, n.Reference().Value)
		default:
			ck.that(false, "backing %T", card.Backing)
		}
		v, err := readVM(ctx, e, vm, "network")
		if ck.ok(err, "read network") {
			ck.equal("vm.network after -> "+target, v.Network, []types.ManagedObjectReference{n.Reference()})
		}
	}
	return ck.done(d)
}

func opRelocateHost(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-vmotion", true)
	if err != nil {
		return nil, err
	}
	h, err := e.host("esx-02")
	if err != nil {
		return nil, err
	}
	p, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	hr, pr := h.Reference(), p.Reference()
	ck := &checks{}
	t, err := vm.Relocate(ctx, types.VirtualMachineRelocateSpec{Host: &hr, Pool: &pr}, types.VirtualMachineMovePriorityDefaultPriority)
	_, err = e.waitTask(ctx, t, err)
	if !ck.ok(err, "RelocateVM_Task(host esx-02)") {
		return ck.done(map[string]interface{}{"fault": faultName(err)})
	}
	v, err := readVM(ctx, e, vm, "runtime")
	if ck.ok(err, "read") {
		ck.that(v.Runtime.Host != nil && *v.Runtime.Host == hr, "runtime.host %v, want esx-02", v.Runtime.Host)
		ck.equal("powerState after vMotion", v.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
	}
	var hm mo.HostSystem
	if ck.ok(e.pc().RetrieveOne(ctx, hr, []string{"vm"}, &hm), "read esx-02") {
		ck.that(refIn(hm.Vm, vm.Reference()), "esx-02's vm list lacks the moved VM")
	}
	evs, _ := e.eventTypes(ctx, vm.Reference())
	ck.that(contains(evs, "VmMigratedEvent"), "no VmMigratedEvent in %v", evs)
	return ck.done(map[string]interface{}{"events": evs})
}

func opRelocateDatastore(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-svmotion", false)
	if err != nil {
		return nil, err
	}
	ds, err := e.datastore(dsHddName)
	if err != nil {
		return nil, err
	}
	dr := ds.Reference()
	ck := &checks{}
	t, err := vm.Relocate(ctx, types.VirtualMachineRelocateSpec{Datastore: &dr}, types.VirtualMachineMovePriorityDefaultPriority)
	_, err = e.waitTask(ctx, t, err)
	if !ck.ok(err, "RelocateVM_Task(datastore ds-hdd)") {
		return ck.done(map[string]interface{}{"fault": faultName(err)})
	}
	v, err := readVM(ctx, e, vm, "summary.config", "config", "datastore")
	chain := []string{}
	if ck.ok(err, "read") {
		ck.that(strings.HasPrefix(v.Summary.Config.VmPathName, "["+dsHddName+"] "), "vmPathName %q", v.Summary.Config.VmPathName)
		ck.equal("vm.datastore", v.Datastore, []types.ManagedObjectReference{dr})
		if d := firstDisk(v); d != nil {
			chain = diskChain(d)
		}
		ck.that(len(chain) == 1 && strings.HasPrefix(chain[0], "["+dsHddName+"] "), "disk chain after the move %v (a move to another datastore copies and consolidates)", chain)
	}
	return ck.done(map[string]interface{}{"chain": chain})
}

func opRename(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-rename-a", false)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := vm.Rename(ctx, "gov-rename-b")
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "Rename_Task")
	v, err := readVM(ctx, e, vm, "name", "summary.config.name", "config.name")
	if ck.ok(err, "read") {
		ck.equal("name", v.Name, "gov-rename-b")
		ck.equal("summary.config.name", v.Summary.Config.Name, "gov-rename-b")
		ck.that(v.Config != nil && v.Config.Name == "gov-rename-b", "config.name not renamed")
	}
	if fs, err := e.folders(); ck.ok(err, "folders") {
		si := object.NewSearchIndex(e.c)
		r, err := si.FindChild(ctx, fs.VmFolder, "gov-rename-b")
		ck.ok(err, "FindChild(new name)")
		ck.equal("FindChild(new name)", refOf(r), refString(vm.Reference()))
		old, err := si.FindChild(ctx, fs.VmFolder, "gov-rename-a")
		ck.ok(err, "FindChild(old name)")
		ck.that(old == nil, "the old name still finds %v", old)
	}
	return ck.done(map[string]interface{}{"name": v.Name})
}

func opMoveIntoFolder(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-move", false)
	if err != nil {
		return nil, err
	}
	target, err := e.ref("Folder", folderName)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := object.NewFolder(e.c, target).MoveInto(ctx, []types.ManagedObjectReference{vm.Reference()})
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "MoveIntoFolder_Task")
	v, err := readVM(ctx, e, vm, "parent")
	if ck.ok(err, "read") {
		ck.that(v.Parent != nil && *v.Parent == target, "parent %v", v.Parent)
	}
	path, err := find.InventoryPath(ctx, e.c, vm.Reference())
	ck.ok(err, "InventoryPath")
	ck.equal("inventory path", path, "/"+dcName+"/vm/"+folderName+"/gov-move")
	if fs, err := e.folders(); ck.ok(err, "folders") {
		var f mo.Folder
		if ck.ok(e.pc().RetrieveOne(ctx, fs.VmFolder.Reference(), []string{"childEntity"}, &f), "vm folder") {
			ck.that(!refIn(f.ChildEntity, vm.Reference()), "the vm folder still lists the moved VM")
		}
	}
	return ck.done(map[string]interface{}{"path": path})
}

func opUnregisterRegister(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-reregister", false)
	if err != nil {
		return nil, err
	}
	before, err := readVM(ctx, e, vm, "summary.config.vmPathName")
	if err != nil {
		return nil, err
	}
	vmx := before.Summary.Config.VmPathName
	ck := &checks{}
	if !ck.ok(vm.Unregister(ctx), "UnregisterVM") {
		return ck.done(map[string]interface{}{"fault": ""})
	}
	_, err = readVM(ctx, e, vm, "name")
	ck.equal("reading an unregistered VM", faultName(err), "ManagedObjectNotFound")
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	pool, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	h, err := e.host("esx-01")
	if err != nil {
		return nil, err
	}
	t, err := fs.VmFolder.RegisterVM(ctx, vmx, "gov-reregister", false, pool, h)
	info, err := e.waitTask(ctx, t, err)
	d := map[string]interface{}{"vmx": vmx}
	if !ck.ok(err, "RegisterVM_Task") {
		return ck.done(d)
	}
	ref, _ := info.Result.(types.ManagedObjectReference)
	v, err := readVM(ctx, e, object.NewVirtualMachine(e.c, ref), "name", "summary")
	if ck.ok(err, "read registered VM") {
		ck.equal("name", v.Name, "gov-reregister")
		ck.equal("vmPathName", v.Summary.Config.VmPathName, vmx)
		ck.equal("powerState", v.Summary.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOff)
	}
	d["registered"] = refString(ref)
	return ck.done(d)
}

func opDestroy(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-destroy", true)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := vm.Destroy(ctx)
	_, err = e.waitTask(ctx, t, err)
	ck.equal("destroying a running VM", faultName(err), "InvalidPowerState")
	ck.ok(e.powerOff(ctx, vm), "PowerOff")
	t, err = vm.Destroy(ctx)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "Destroy_Task")
	_, err = readVM(ctx, e, vm, "name")
	ck.equal("reading a destroyed VM", faultName(err), "ManagedObjectNotFound")
	evs, err := event.NewManager(e.c).QueryEvents(ctx, types.EventFilterSpec{EventTypeId: []string{"VmRemovedEvent"}})
	removed := []string{}
	if ck.ok(err, "QueryEvents(VmRemovedEvent)") {
		for _, ev := range evs {
			if x := ev.GetEvent().Vm; x != nil {
				removed = append(removed, x.Name)
			}
		}
		ck.that(contains(removed, "gov-destroy"), "no VmRemovedEvent for gov-destroy in %v", removed)
	}
	return ck.done(map[string]interface{}{"removed": removed})
}

// opCreateVM: `govc vm.create` / Terraform's bare VM: a config spec with a controller, a new
// thin disk and a NIC.
func opCreateVM(ctx context.Context, e *env) (interface{}, error) {
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	pool, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	nr, err := e.ref("Network", netName)
	if err != nil {
		return nil, err
	}
	spec := types.VirtualMachineConfigSpec{
		Name: "gov-created", GuestId: "otherLinux64Guest", MemoryMB: 1024, NumCPUs: 1,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[" + dsName + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd,
				Device: &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
					SharedBus: types.VirtualSCSISharingNoSharing, VirtualController: types.VirtualController{
						BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: -100}}}}},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd,
				FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
				Device: &types.VirtualDisk{CapacityInKB: 1 << 20, VirtualDevice: types.VirtualDevice{Key: -101,
					ControllerKey: -100, UnitNumber: types.NewInt32(0),
					Backing: &types.VirtualDiskFlatVer2BackingInfo{DiskMode: string(types.VirtualDiskModePersistent),
						ThinProvisioned: types.NewBool(true)}}}},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd,
				Device: &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{
					AddressType: string(types.VirtualEthernetCardMacTypeGenerated),
					VirtualDevice: types.VirtualDevice{Key: -102, Backing: &types.VirtualEthernetCardNetworkBackingInfo{
						VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: netName}, Network: &nr}}}}}},
		},
	}
	t, err := fs.VmFolder.CreateVM(ctx, spec, pool, nil)
	info, err := e.waitTask(ctx, t, err)
	if err != nil {
		return map[string]interface{}{"fault": faultName(err)}, err
	}
	ck := &checks{}
	ref, _ := info.Result.(types.ManagedObjectReference)
	vm := object.NewVirtualMachine(e.c, ref)
	v, err := readVM(ctx, e, vm, "summary", "config")
	d := map[string]interface{}{"vm": refString(ref)}
	if ck.ok(err, "read") && ck.that(v.Config != nil, "config unset") {
		sc := v.Summary.Config
		ck.equal("name", sc.Name, "gov-created")
		ck.equal("memorySizeMB", sc.MemorySizeMB, int32(1024))
		ck.equal("numCpu", sc.NumCpu, int32(1))
		ck.equal("guestId", sc.GuestId, "otherLinux64Guest")
		ck.equal("vmPathName", sc.VmPathName, "["+dsName+"] gov-created/gov-created.vmx")
		devices := object.VirtualDeviceList(v.Config.Hardware.Device)
		disks := devices.SelectByType((*types.VirtualDisk)(nil))
		if ck.equal("disks", len(disks), 1) {
			chain := diskChain(disks[0])
			d["disk"] = chain
			ck.equal("disk file", chain, []string{"[" + dsName + "] gov-created/gov-created.vmdk"})
			ck.equal("disk capacity KB", disks[0].(*types.VirtualDisk).CapacityInKB, int64(1<<20))
		}
		nics := devices.SelectByType((*types.VirtualEthernetCard)(nil))
		if ck.equal("NICs", len(nics), 1) {
			mac := nics[0].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard().MacAddress
			d["mac"] = mac
			ck.that(strings.HasPrefix(mac, "00:50:56:"), "generated MAC %q is not a vCenter one", mac)
		}
		ck.equal("powerState", v.Summary.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOff)
	}
	ck.ok(e.powerOn(ctx, vm), "PowerOn the new VM")
	return ck.done(d)
}

// opTemplate: mark as template, deploy a VM from it (Terraform's and Ansible's clone-from-template),
// and turn it back into a VM.
func opTemplate(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-template", false)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	if !ck.ok(vm.MarkAsTemplate(ctx), "MarkAsTemplate") {
		return ck.done(nil)
	}
	v, err := readVM(ctx, e, vm, "config.template", "summary.config.template", "resourcePool")
	if ck.ok(err, "read template") {
		ck.that(v.Config != nil && v.Config.Template && v.Summary.Config.Template, "template flags not set")
		ck.that(v.ResourcePool == nil, "a template has a resource pool")
	}
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	pool, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	pr := pool.Reference()
	t, err := vm.Clone(ctx, fs.VmFolder, "gov-from-template", types.VirtualMachineCloneSpec{Location: types.VirtualMachineRelocateSpec{Pool: &pr}, PowerOn: true})
	info, err := e.waitTask(ctx, t, err)
	deployed := ""
	if ck.ok(err, "clone from template") {
		ref, _ := info.Result.(types.ManagedObjectReference)
		deployed = refString(ref)
		dv, err := readVM(ctx, e, object.NewVirtualMachine(e.c, ref), "runtime.powerState", "config.template")
		if ck.ok(err, "read deployed") {
			ck.equal("deployed powerState", dv.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
			ck.that(dv.Config != nil && !dv.Config.Template, "the deployed VM is a template")
		}
	}
	h, err := e.host("esx-01")
	if err != nil {
		return nil, err
	}
	ck.ok(vm.MarkAsVirtualMachine(ctx, *pool, h), "MarkAsVirtualMachine")
	v, err = readVM(ctx, e, vm, "config.template", "resourcePool")
	if ck.ok(err, "read") {
		ck.that(v.Config != nil && !v.Config.Template && v.ResourcePool != nil, "still a template after MarkAsVirtualMachine")
	}
	return ck.done(map[string]interface{}{"deployed": deployed})
}

// opCustomFields: `govc fields.add` / `fields.set` (Ansible vmware_guest_custom_attributes).
func opCustomFields(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	vm, err := e.vm(srcWinName)
	if err != nil {
		return nil, err
	}
	m, err := object.GetCustomFieldsManager(c)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	def, err := m.Add(ctx, "gov-owner", "VirtualMachine", nil, nil)
	if !ck.ok(err, "AddCustomFieldDef") {
		return ck.done(map[string]interface{}{"fault": faultName(err)})
	}
	ck.that(def.Key > 0 && def.Name == "gov-owner" && def.ManagedObjectType == "VirtualMachine", "field def %+v", *def)
	key, err := m.FindKey(ctx, "gov-owner")
	ck.ok(err, "FindKey (field property)")
	ck.equal("field key", key, def.Key)
	ck.ok(m.Set(ctx, vm.Reference(), def.Key, "team-a"), "SetField")
	v, err := readVM(ctx, e, vm, "customValue", "availableField", "summary.customValue")
	value := ""
	if ck.ok(err, "read") {
		for _, cv := range v.CustomValue {
			if s, ok := cv.(*types.CustomFieldStringValue); ok && s.Key == def.Key {
				value = s.Value
			}
		}
		ck.equal("customValue", value, "team-a")
		found := false
		for _, f := range v.AvailableField {
			found = found || f.Key == def.Key
		}
		ck.that(found, "availableField lacks the new field")
		ck.that(len(v.Summary.CustomValue) == 1, "summary.customValue %v", v.Summary.CustomValue)
	}
	_, err = m.Add(ctx, "gov-owner", "VirtualMachine", nil, nil)
	ck.equal("adding the same field again", faultName(err), "DuplicateName")
	return ck.done(map[string]interface{}{"key": def.Key, "value": value})
}
