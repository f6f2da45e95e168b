package main

import (
	"context"
	"sort"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// vApps as govc and the Terraform provider drive them: created in the cluster's pool, a VM cloned
// into one (no folder: parentVApp), found by its inventory path through the vApp, views rooted at
// it, powered on and off as a unit, destroyed with its VMs (not while they run).
func vappOps() []op {
	return []op{
		{"vapp.create_clone_find", opVAppCreateCloneFind},
		{"vapp.power_destroy", opVAppPowerDestroy},
	}
}

const (
	vappName   = "gov-vapp"
	vappVMName = "gov-vapp-vm"
)

// vapp makes (once) the vApp and its one VM, a linked clone of src-linux placed in the vApp.
func (e *env) vapp(ctx context.Context) (*object.VirtualApp, *object.VirtualMachine, error) {
	v, err := e.once("vapp", func(ctx context.Context) (interface{}, error) {
		root, err := e.rootPool()
		if err != nil {
			return nil, err
		}
		app, err := root.CreateVApp(ctx, vappName, types.DefaultResourceConfigSpec(), types.VAppConfigSpec{
			Annotation: "made by govmomi",
			VmConfigSpec: types.VmConfigSpec{Product: []types.VAppProductSpec{{
				ArrayUpdateSpec: types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd},
				Info:            &types.VAppProductInfo{Name: "gov-product", Vendor: "forkscale", Version: "1.0"},
			}}},
		}, nil)
		if err != nil {
			return nil, err
		}
		src, err := e.vm(srcName)
		if err != nil {
			return nil, err
		}
		snap, err := src.FindSnapshot(ctx, baseSnap)
		if err != nil {
			return nil, err
		}
		f, err := e.folders()
		if err != nil {
			return nil, err
		}
		pool := app.Reference()
		t, err := src.Clone(ctx, f.VmFolder, vappVMName, types.VirtualMachineCloneSpec{Snapshot: snap,
			Location: types.VirtualMachineRelocateSpec{Pool: &pool,
				DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsCreateNewChildDiskBacking)}})
		info, err := e.waitTask(ctx, t, err)
		if err != nil {
			return nil, err
		}
		vm := object.NewVirtualMachine(e.c, info.Result.(types.ManagedObjectReference))
		return []interface{}{app, vm}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	pair := v.([]interface{})
	return pair[0].(*object.VirtualApp), pair[1].(*object.VirtualMachine), nil
}

func opVAppCreateCloneFind(ctx context.Context, e *env) (interface{}, error) {
	app, vm, err := e.vapp(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	var mvm mo.VirtualMachine
	parentVApp := ""
	if ck.ok(e.pc().RetrieveOne(ctx, vm.Reference(), []string{"parent", "parentVApp", "resourcePool"}, &mvm), "VM parentVApp") {
		ck.that(mvm.Parent == nil, "a VM in a vApp has no folder parent, got %v", mvm.Parent)
		if mvm.ParentVApp != nil {
			parentVApp = mvm.ParentVApp.Value
		}
		ck.equal("the VM's pool", mvm.ResourcePool != nil && *mvm.ResourcePool == app.Reference(), true)
	}
	ck.equal("parentVApp", parentVApp, app.Reference().Value)
	var mapp mo.VirtualApp
	state, product := "", ""
	if ck.ok(e.pc().RetrieveOne(ctx, app.Reference(), []string{"summary", "vAppConfig", "vm", "parentFolder"}, &mapp), "vApp properties") {
		if s, ok := mapp.Summary.(*types.VirtualAppSummary); ck.that(ok, "summary is a %T, not a VirtualAppSummary", mapp.Summary) {
			state = string(s.VAppState)
		}
		if mapp.VAppConfig != nil && len(mapp.VAppConfig.Product) == 1 {
			product = mapp.VAppConfig.Product[0].Name
		}
		ck.equal("the vApp's VMs", mapp.Vm, []types.ManagedObjectReference{vm.Reference()})
		ck.that(mapp.ParentFolder != nil, "a root vApp has a parentFolder")
	}
	// govc: find /dc1/vm/gov-vapp, ls /dc1/vm/gov-vapp/*, vm.info gov-vapp/gov-vapp-vm
	f, err := finderAt(ctx, e)
	if !ck.ok(err, "finder") {
		return ck.done(nil)
	}
	found, path := "", ""
	if a, err := f.VirtualApp(ctx, vappName); ck.ok(err, "Finder.VirtualApp") {
		found = a.InventoryPath
	}
	if v, err := f.VirtualMachine(ctx, vappName+"/"+vappVMName); ck.ok(err, "Finder.VirtualMachine through the vApp") {
		path = v.InventoryPath
		ck.equal("the VM found through the vApp", v.Reference(), vm.Reference())
	}
	listed := []string{}
	if vms, err := f.VirtualMachineList(ctx, vappName+"/*"); ck.ok(err, "Finder.VirtualMachineList(vapp/*)") {
		for _, v := range vms {
			listed = append(listed, v.Name())
		}
	}
	flat, err := viewNames(ctx, e, app.Reference(), []string{"VirtualMachine"}, false)
	ck.ok(err, "vApp view")
	deep, err := viewNames(ctx, e, app.Reference(), []string{"VirtualMachine"}, true)
	ck.ok(err, "recursive vApp view")
	sort.Strings(deep)
	ck.equal("VMs of the vApp (view)", flat, []string{vappVMName})
	ck.equal("VMs below the vApp (view)", deep, []string{vappVMName})
	fs, err := e.folders()
	if ck.ok(err, "folders") {
		below, err := viewNames(ctx, e, fs.VmFolder.Reference(), []string{"VirtualMachine", "VirtualApp"}, true)
		ck.ok(err, "recursive VM folder view")
		expectOnce(ck, "below the VM folder", below, vappName, vappVMName)
	}
	return ck.done(map[string]interface{}{"parentVApp": parentVApp, "state": state, "product": product,
		"found": found, "path": path, "listed": listed, "view": flat})
}

func opVAppPowerDestroy(ctx context.Context, e *env) (interface{}, error) {
	app, vm, err := e.vapp(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	vappState := func() string {
		var m mo.VirtualApp
		if ck.ok(e.pc().RetrieveOne(ctx, app.Reference(), []string{"summary"}, &m), "vApp summary") {
			if s, ok := m.Summary.(*types.VirtualAppSummary); ok {
				return string(s.VAppState)
			}
		}
		return ""
	}
	vmPower := func() string {
		var m mo.VirtualMachine
		if ck.ok(e.pc().RetrieveOne(ctx, vm.Reference(), []string{"runtime.powerState"}, &m), "VM power state") {
			return string(m.Runtime.PowerState)
		}
		return ""
	}
	t, err := app.PowerOn(ctx)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "PowerOnVApp_Task")
	on, started := vmPower(), vappState()
	t, err = app.Destroy(ctx)
	_, err = e.waitTask(ctx, t, err)
	refused := faultName(err)
	t, err = app.PowerOff(ctx, true)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "PowerOffVApp_Task")
	off, stopped := vmPower(), vappState()
	t, err = app.Destroy(ctx)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "Destroy_Task of the stopped vApp")
	var gone mo.VirtualMachine
	vmGone := faultName(e.pc().RetrieveOne(ctx, vm.Reference(), []string{"name"}, &gone))
	ck.equal("the VM after its vApp was destroyed", vmGone, "ManagedObjectNotFound")
	ck.equal("power states", []string{on, started, off, stopped}, []string{"poweredOn", "started", "poweredOff", "stopped"})
	ck.equal("destroying a running vApp", refused, "InvalidPowerState")
	return ck.done(map[string]interface{}{"on": on, "started": started, "off": off, "stopped": stopped,
		"refused": refused, "vmAfterDestroy": vmGone})
}
