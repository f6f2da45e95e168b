package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/progress"
	"github.com/vmware/govmomi/vim25/types"
)

// VM life cycle as govc vm.*, Ansible vmware_guest*/vmware_guest_snapshot/vmware_guest_powerstate
// and Terraform's vsphere_virtual_machine do it. Each op makes the VM it changes (a linked
// clone), so one gap fails one op.
func vmOps() []op {
	return []op{
		{"vm.linked_clone", opLinkedClone},
		{"vm.instant_clone", opInstantClone},
		{"perf.host_pshare", opHostPShare},
		{"vm.full_clone_progress", opFullCloneProgress},
		{"vm.power_cycle", opPowerCycle},
		{"vm.suspend", opSuspend},
		{"vm.reset", opReset},
		{"vm.shutdown_guest", opShutdownGuest},
		{"vm.reboot_guest", opRebootGuest},
		{"vm.snapshot_create", opSnapshotCreate},
		{"vm.snapshot_revert", opSnapshotRevert},
		{"vm.snapshot_rename", opSnapshotRename},
		{"vm.snapshot_remove", opSnapshotRemove},
		{"vm.reconfigure_annotation", opReconfigureAnnotation},
		{"vm.reconfigure_nic", opReconfigureNIC},
		{"vm.relocate_host", opRelocateHost},
		{"vm.relocate_datastore", opRelocateDatastore},
		{"vm.rename", opRename},
		{"vm.move_into_folder", opMoveIntoFolder},
		{"vm.unregister_register", opUnregisterRegister},
		{"vm.destroy", opDestroy},
		{"vm.create", opCreateVM},
		{"vm.template", opTemplate},
		{"vm.custom_fields", opCustomFields},
	}
}

func readVM(ctx context.Context, e *env, vm *object.VirtualMachine, props ...string) (mo.VirtualMachine, error) {
	var v mo.VirtualMachine
	err := e.pc().RetrieveOne(ctx, vm.Reference(), props, &v)
	return v, err
}

// diskChain is a disk's backing files, child first (Walk `backing.parent` until unset).
func diskChain(dev types.BaseVirtualDevice) []string {
	out := []string{}
	b := dev.GetVirtualDevice().Backing
	for b != nil {
		switch x := b.(type) {
		case *types.VirtualDiskFlatVer2BackingInfo:
			out = append(out, x.FileName)
			if x.Parent == nil {
				return out
			}
			b = x.Parent
		case *types.VirtualDiskSeSparseBackingInfo:
			out = append(out, x.FileName)
			if x.Parent == nil {
				return out
			}
			b = x.Parent
		case *types.VirtualDiskSparseVer2BackingInfo:
			out = append(out, x.FileName)
			if x.Parent == nil {
				return out
			}
			b = x.Parent
		default:
			return append(out, fmt.Sprintf("<%T>", b))
		}
	}
	return out
}

func firstDisk(v mo.VirtualMachine) types.BaseVirtualDevice {
	if v.Config == nil {
		return nil
	}
	disks := object.VirtualDeviceList(v.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		return nil
	}
	return disks[0]
}

// eventTypes lists the event classes (or EventEx ids) posted about one entity, oldest first.
func (e *env) eventTypes(ctx context.Context, ref types.ManagedObjectReference) ([]string, error) {
	evs, err := event.NewManager(e.c).QueryEvents(ctx, types.EventFilterSpec{
		Entity: &types.EventFilterSpecByEntity{Entity: ref, Recursion: types.EventFilterSpecRecursionOptionSelf}})
	if err != nil {
		return nil, err
	}
	event.Sort(evs)
	out := []string{}
	for _, ev := range evs {
		out = append(out, eventName(ev))
	}
	return out, nil
}

func eventName(ev types.BaseEvent) string {
	if x, ok := ev.(*types.EventEx); ok {
		return x.EventTypeId
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", ev), "*types.")
}

func opLinkedClone(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-linked", false)
	if err != nil {
		return nil, err
	}
	v, err := readVM(ctx, e, vm, "name", "summary", "config", "parent", "snapshot", "runtime.powerState")
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	chain := []string{}
	if d := firstDisk(v); ck.that(d != nil, "clone has no disk") {
		chain = diskChain(d)
	}
	ck.equal("name", v.Name, "gov-linked")
	ck.equal("powerState", v.Summary.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOff)
	ck.equal("vmPathName", v.Summary.Config.VmPathName, "["+dsName+"] gov-linked/gov-linked.vmx")
	ck.that(len(chain) >= 2, "a linked clone's disk has a parent: chain %v", chain)
	if len(chain) >= 2 {
		ck.that(strings.HasPrefix(chain[0], "["+dsName+"] gov-linked/"), "child delta %q not in the clone's directory", chain[0])
		ck.that(strings.HasPrefix(chain[len(chain)-1], "["+dsName+"] "+srcName+"/"), "base disk %q is not the source's", chain[len(chain)-1])
	}
	ck.that(v.Snapshot == nil, "a fresh clone has snapshots")
	evs, err := e.eventTypes(ctx, vm.Reference())
	if ck.ok(err, "events") {
		ck.that(contains(evs, "VmClonedEvent"), "no VmClonedEvent for the clone: %v", evs)
	}
	return ck.done(map[string]interface{}{"chain": chain, "events": evs})
}

func opInstantClone(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	sv, err := readVM(ctx, e, src, "layoutEx", "runtime.host", "parent")
	if err != nil {
		return nil, err
	}
	spec := types.VirtualMachineInstantCloneSpec{Name: "gov-instant", Location: types.VirtualMachineRelocateSpec{},
		Config: []types.BaseOptionValue{&types.OptionValue{Key: "guestinfo.forkscale.id", Value: "from-go"}}}
	t, err := src.InstantClone(ctx, spec)
	info, err := e.waitTask(ctx, t, err)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ck.that(ok, "task result is %T, not a ManagedObjectReference", info.Result) {
		return ck.done(nil)
	}
	var state types.VirtualMachinePowerState
	err = property.Wait(ctx, e.pc(), ref, []string{"runtime.powerState"}, func(pc []types.PropertyChange) bool {
		for _, ch := range pc {
			if s, ok := ch.Val.(types.VirtualMachinePowerState); ok {
				state = s
			}
		}
		return state == types.VirtualMachinePowerStatePoweredOn
	})
	ck.ok(err, "wait for poweredOn")
	v, err := readVM(ctx, e, object.NewVirtualMachine(e.c, ref), "config.extraConfig", "summary.quickStats", "layoutEx", "runtime.host", "parent")
	if err != nil {
		return nil, err
	}
	guestinfo := ""
	if v.Config != nil {
		for _, o := range v.Config.ExtraConfig {
			if ov := o.GetOptionValue(); ov.Key == "guestinfo.forkscale.id" {
				guestinfo, _ = ov.Value.(string)
			}
		}
	}
	ck.equal("guestinfo in extraConfig", guestinfo, "from-go")
	ck.that(v.Runtime.Host != nil && sv.Runtime.Host != nil && *v.Runtime.Host == *sv.Runtime.Host, "the clone is not on the source's host")
	ck.that(v.Parent != nil && sv.Parent != nil && *v.Parent == *sv.Parent, "the clone is not in the source's folder")
	srcChain, cloneChain := 0, 0
	if sv.LayoutEx != nil && len(sv.LayoutEx.Disk) > 0 && v.LayoutEx != nil && len(v.LayoutEx.Disk) > 0 {
		srcChain, cloneChain = len(sv.LayoutEx.Disk[0].Chain), len(v.LayoutEx.Disk[0].Chain)
	}
	ck.equal("clone chain depth", cloneChain, srcChain+1)
	ck.that(v.Summary.QuickStats.SharedMemory > 0, "the clone shares no memory with its parent")
	return ck.done(map[string]interface{}{"clone": refString(ref), "powerState": state, "guestinfo": guestinfo,
		"sourceChain": srcChain, "cloneChain": cloneChain, "sharedMB": v.Summary.QuickStats.SharedMemory})
}

type progressSink struct{ ch chan progress.Report }

func (s progressSink) Sink() chan<- progress.Report { return s.ch }

// opFullCloneProgress: a full clone to another datastore, watched with a progress sink (as
// `govc vm.clone` prints it), then the TaskInfo fields clients log.
func opFullCloneProgress(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	hdd, err := e.datastore(dsHddName)
	if err != nil {
		return nil, err
	}
	dsRef := hdd.Reference()
	t, err := src.Clone(ctx, fs.VmFolder, "gov-full", types.VirtualMachineCloneSpec{Location: types.VirtualMachineRelocateSpec{Datastore: &dsRef}})
	if err != nil {
		return nil, err
	}
	sink := progressSink{ch: make(chan progress.Report, 10000)}
	info, err := t.WaitForResult(ctx, sink)
	seen := []float32{}
	for r := range sink.ch {
		seen = append(seen, r.Percentage())
	}
	if err != nil {
		return map[string]interface{}{"progress": seen}, err
	}
	ck := &checks{}
	mid := 0
	for _, p := range seen {
		if p > 0 && p < 100 {
			mid++
		}
	}
	ck.that(mid > 0, "no progress between 0 and 100 was reported during a full clone (saw %v)", seen)
	ck.equal("descriptionId", info.DescriptionId, "VirtualMachine.clone")
	ck.equal("entity", info.Entity, func() *types.ManagedObjectReference { r := src.Reference(); return &r }())
	ck.equal("entityName", info.EntityName, srcName)
	ck.equal("name", info.Name, "CloneVM_Task")
	if r, ok := info.Reason.(*types.TaskReasonUser); ck.that(ok, "reason is %T", info.Reason) {
		ck.that(strings.HasSuffix(strings.ToLower(r.UserName), strings.ToLower(e.cfg.user)), "reason.userName %q", r.UserName)
	}
	ck.that(info.StartTime != nil && info.CompleteTime != nil && !info.StartTime.Before(info.QueueTime) && !info.CompleteTime.Before(*info.StartTime),
		"queue/start/complete times out of order")
	ref, _ := info.Result.(types.ManagedObjectReference)
	chain := []string{}
	if v, err := readVM(ctx, e, object.NewVirtualMachine(e.c, ref), "config", "summary"); ck.ok(err, "read clone") {
		ck.that(strings.HasPrefix(v.Summary.Config.VmPathName, "["+dsHddName+"] "), "clone vmPathName %q", v.Summary.Config.VmPathName)
		if d := firstDisk(v); d != nil {
			chain = diskChain(d)
		}
		ck.that(len(chain) == 1 && strings.HasPrefix(chain[0], "["+dsHddName+"] "), "a full clone's disk chain %v", chain)
	}
	return ck.done(map[string]interface{}{"progress": seen, "chain": chain})
}

func opPowerCycle(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-power", false)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	ck.ok(e.powerOn(ctx, vm), "PowerOn")
	v, err := readVM(ctx, e, vm, "runtime", "summary.runtime")
	if ck.ok(err, "read") {
		ck.equal("powerState", v.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
		ck.that(v.Runtime.BootTime != nil, "runtime.bootTime unset after power on")
	}
	again := e.powerOn(ctx, vm)
	ck.equal("power on a running VM", faultName(again), "InvalidPowerState")
	if f, ok := faultOf(again).(*types.InvalidPowerState); ok {
		ck.equal("InvalidPowerState.existingState", f.ExistingState, types.VirtualMachinePowerStatePoweredOn)
	}
	ck.ok(e.powerOff(ctx, vm), "PowerOff")
	v, err = readVM(ctx, e, vm, "runtime")
	if ck.ok(err, "read") {
		ck.equal("powerState", v.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOff)
		ck.that(v.Runtime.BootTime == nil, "runtime.bootTime still set after power off")
	}
	evs, err := e.eventTypes(ctx, vm.Reference())
	if ck.ok(err, "events") {
		for _, w := range []string{"VmStartingEvent", "VmPoweredOnEvent", "VmStoppingEvent", "VmPoweredOffEvent"} {
			ck.that(contains(evs, w), "no %s in %v", w, evs)
		}
	}
	return ck.done(map[string]interface{}{"events": evs, "secondPowerOn": faultName(again)})
}

func opSuspend(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-suspend", true)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := vm.Suspend(ctx)
	_, err = e.waitTask(ctx, t, err)
	if !ck.ok(err, "SuspendVM_Task") {
		return ck.done(map[string]interface{}{"fault": faultName(err)})
	}
	v, err := readVM(ctx, e, vm, "runtime.powerState")
	if ck.ok(err, "read") {
		ck.equal("powerState", v.Runtime.PowerState, types.VirtualMachinePowerStateSuspended)
	}
	ck.ok(e.powerOn(ctx, vm), "resume (PowerOn)")
	v, err = readVM(ctx, e, vm, "runtime.powerState")
	if ck.ok(err, "read") {
		ck.equal("powerState after resume", v.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
	}
	evs, _ := e.eventTypes(ctx, vm.Reference())
	ck.that(contains(evs, "VmSuspendedEvent"), "no VmSuspendedEvent in %v", evs)
	return ck.done(map[string]interface{}{"events": evs})
}

func opReset(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-reset", true)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := vm.Reset(ctx)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "ResetVM_Task")
	v, err := readVM(ctx, e, vm, "runtime.powerState")
	if ck.ok(err, "read") {
		ck.equal("powerState", v.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
	}
	evs, err := e.eventTypes(ctx, vm.Reference())
	if ck.ok(err, "events") {
		ck.that(contains(evs, "VmResettingEvent"), "no VmResettingEvent in %v", evs)
	}
	return ck.done(map[string]interface{}{"events": evs})
}

func opShutdownGuest(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-shutdown", true)
	if err != nil {
		return nil, err
	}
	if err := e.waitTools(ctx, vm); err != nil {
		return nil, fmt.Errorf("wait for tools: %w", err)
	}
	ck := &checks{}
	if !ck.ok(vm.ShutdownGuest(ctx), "ShutdownGuest") {
		return ck.done(nil)
	}
	ck.ok(vm.WaitForPowerState(ctx, types.VirtualMachinePowerStatePoweredOff), "wait for poweredOff")
	evs, _ := e.eventTypes(ctx, vm.Reference())
	ck.that(contains(evs, "VmGuestShutdownEvent"), "no VmGuestShutdownEvent in %v", evs)
	return ck.done(map[string]interface{}{"events": evs})
}

func opRebootGuest(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-reboot", true)
	if err != nil {
		return nil, err
	}
	if err := e.waitTools(ctx, vm); err != nil {
		return nil, fmt.Errorf("wait for tools: %w", err)
	}
	ck := &checks{}
	if !ck.ok(vm.RebootGuest(ctx), "RebootGuest") {
		return ck.done(map[string]interface{}{"fault": ""})
	}
	ck.ok(e.waitTools(ctx, vm), "tools running again after the reboot")
	v, err := readVM(ctx, e, vm, "runtime.powerState")
	if ck.ok(err, "read") {
		ck.equal("powerState", v.Runtime.PowerState, types.VirtualMachinePowerStatePoweredOn)
	}
	evs, _ := e.eventTypes(ctx, vm.Reference())
	ck.that(contains(evs, "VmGuestRebootEvent"), "no VmGuestRebootEvent in %v", evs)
	return ck.done(map[string]interface{}{"events": evs})
}

// snapshots ------------------------------------------------------------------------------------

func snapshot(ctx context.Context, e *env, vm *object.VirtualMachine, name, desc string) (types.ManagedObjectReference, error) {
	t, err := vm.CreateSnapshot(ctx, name, desc, false, false)
	info, err := e.waitTask(ctx, t, err)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return ref, fmt.Errorf("CreateSnapshot_Task result is %T, not a ManagedObjectReference", info.Result)
	}
	return ref, nil
}

// snapshotNames flattens the snapshot tree as "parent/child" paths, and names the current one.
func snapshotNames(ctx context.Context, e *env, vm *object.VirtualMachine) ([]string, string, error) {
	v, err := readVM(ctx, e, vm, "snapshot")
	if err != nil {
		return nil, "", err
	}
	if v.Snapshot == nil {
		return []string{}, "", nil
	}
	out, current := []string{}, ""
	var walk func(prefix string, list []types.VirtualMachineSnapshotTree)
	walk = func(prefix string, list []types.VirtualMachineSnapshotTree) {
		for _, n := range list {
			out = append(out, prefix+n.Name)
			if v.Snapshot.CurrentSnapshot != nil && n.Snapshot == *v.Snapshot.CurrentSnapshot {
				current = n.Name
			}
			walk(prefix+n.Name+"/", n.ChildSnapshotList)
		}
	}
	walk("", v.Snapshot.RootSnapshotList)
	return out, current, nil
}

func opSnapshotCreate(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-snap-create", false)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	s1, err := snapshot(ctx, e, vm, "s1", "first")
	if !ck.ok(err, "CreateSnapshot s1") {
		return ck.done(nil)
	}
	ck.equal("result type", s1.Type, "VirtualMachineSnapshot")
	_, err = snapshot(ctx, e, vm, "s2", "second")
	ck.ok(err, "CreateSnapshot s2")
	tree, current, err := snapshotNames(ctx, e, vm)
	ck.ok(err, "snapshot tree")
	ck.equal("tree", tree, []string{"s1", "s1/s2"})
	ck.equal("current", current, "s2")
	var sm mo.VirtualMachineSnapshot
	if ck.ok(e.pc().RetrieveOne(ctx, s1, nil, &sm), "read snapshot s1") {
		ck.equal("snapshot.vm", sm.Vm, vm.Reference())
		ck.that(len(sm.ChildSnapshot) == 1, "s1 childSnapshot %v", sm.ChildSnapshot)
	}
	return ck.done(map[string]interface{}{"tree": tree, "current": current})
}

func twoSnapshots(ctx context.Context, e *env, name string) (*object.VirtualMachine, error) {
	vm, err := e.scratch(ctx, name, false)
	if err != nil {
		return nil, err
	}
	if _, err := snapshot(ctx, e, vm, "s1", "first"); err != nil {
		return nil, err
	}
	if _, err := snapshot(ctx, e, vm, "s2", "second"); err != nil {
		return nil, err
	}
	return vm, nil
}

func opSnapshotRevert(ctx context.Context, e *env) (interface{}, error) {
	vm, err := twoSnapshots(ctx, e, "gov-snap-revert")
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := vm.RevertToSnapshot(ctx, "s1", true)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "RevertToSnapshot(s1)")
	_, current, err := snapshotNames(ctx, e, vm)
	ck.ok(err, "tree")
	ck.equal("current after revert", current, "s1")
	t, err = vm.RevertToCurrentSnapshot(ctx, true)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "RevertToCurrentSnapshot")
	return ck.done(map[string]interface{}{"current": current})
}

func opSnapshotRename(ctx context.Context, e *env) (interface{}, error) {
	vm, err := twoSnapshots(ctx, e, "gov-snap-rename")
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	s1, err := vm.FindSnapshot(ctx, "s1")
	if err != nil {
		return nil, err
	}
	_, err = methods.RenameSnapshot(ctx, e.c, &types.RenameSnapshot{This: *s1, Name: "s1-renamed", Description: "renamed by govmomi"})
	ck.ok(err, "RenameSnapshot")
	tree, _, err := snapshotNames(ctx, e, vm)
	ck.ok(err, "tree")
	ck.equal("tree", tree, []string{"s1-renamed", "s1-renamed/s2"})
	_, err = vm.FindSnapshot(ctx, "s1-renamed")
	ck.ok(err, "FindSnapshot(s1-renamed)")
	return ck.done(map[string]interface{}{"tree": tree})
}

func opSnapshotRemove(ctx context.Context, e *env) (interface{}, error) {
	vm, err := twoSnapshots(ctx, e, "gov-snap-remove")
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	t, err := vm.RemoveSnapshot(ctx, "s2", false, nil)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "RemoveSnapshot(s2)")
	tree, current, err := snapshotNames(ctx, e, vm)
	ck.ok(err, "tree")
	ck.equal("tree after removing s2", tree, []string{"s1"})
	ck.equal("current after removing s2", current, "s1")
	t, err = vm.RemoveAllSnapshot(ctx, nil)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "RemoveAllSnapshots")
	after, _, err := snapshotNames(ctx, e, vm)
	ck.ok(err, "tree")
	ck.equal("tree after remove all", after, []string{})
	return ck.done(map[string]interface{}{"tree": tree, "after": after})
}
