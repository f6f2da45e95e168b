package main

import (
	"context"
	"sort"

	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Container views rooted at each kind of container (the API allows a Folder, Datacenter,
// ComputeResource, ResourcePool or HostSystem), recursive and not, and a ListView through its
// whole life cycle.
func viewOps() []op {
	return []op{
		{"view.datacenter", opViewDatacenter},
		{"view.folder", opViewFolder},
		{"view.cluster", opViewCluster},
		{"view.resource_pool", opViewPool},
		{"view.host", opViewHost},
		{"view.child_pool", opViewChildPool},
		{"view.list", opViewList},
	}
}

// viewNames lists the names in a container view (duplicates kept: each object must appear once).
func viewNames(ctx context.Context, e *env, container types.ManagedObjectReference, kinds []string, recursive bool) ([]string, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	v, err := view.NewManager(c).CreateContainerView(ctx, container, kinds, recursive)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Destroy(context.Background()) }()
	var cv mo.ContainerView
	if err := e.pc().RetrieveOne(ctx, v.Reference(), []string{"view"}, &cv); err != nil {
		return nil, err
	}
	names, err := e.names(ctx, cv.View)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func expectOnce(ck *checks, label string, names []string, want ...string) {
	for _, w := range want {
		ck.that(countOf(names, w) == 1, "%s: %s appears %d times in %v", label, w, countOf(names, w), names)
	}
}

func opViewDatacenter(ctx context.Context, e *env) (interface{}, error) {
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	vms, err := viewNames(ctx, e, dc.Reference(), []string{"VirtualMachine"}, true)
	ck.ok(err, "recursive VM view")
	expectOnce(ck, "recursive VMs", vms, srcName, srcWinName)
	top, err := viewNames(ctx, e, dc.Reference(), nil, false)
	ck.ok(err, "non-recursive view")
	ck.equal("direct contents", top, []string{"datastore", "host", "network", "vm"})
	return ck.done(map[string]interface{}{"vms": vms, "top": top})
}

func opViewFolder(ctx context.Context, e *env) (interface{}, error) {
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	direct, err := viewNames(ctx, e, fs.VmFolder.Reference(), nil, false)
	ck.ok(err, "vm folder view")
	expectOnce(ck, "vm folder", direct, srcName, srcWinName, folderName)
	hosts, err := viewNames(ctx, e, fs.HostFolder.Reference(), []string{"HostSystem"}, true)
	ck.ok(err, "host folder view")
	ck.equal("hosts under the host folder", hosts, hostNames)
	nets, err := viewNames(ctx, e, fs.NetworkFolder.Reference(), []string{"Network"}, false)
	ck.ok(err, "network folder view")
	expectOnce(ck, "networks (DistributedVirtualPortgroup is a Network)", nets, netName, isoNetName, dvpgName)
	return ck.done(map[string]interface{}{"vmFolder": direct, "hosts": hosts, "networks": nets})
}

func opViewCluster(ctx context.Context, e *env) (interface{}, error) {
	cl, err := e.cluster()
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	hosts, err := viewNames(ctx, e, cl.Reference(), []string{"HostSystem"}, false)
	ck.ok(err, "host view")
	ck.equal("hosts", hosts, hostNames)
	pools, err := viewNames(ctx, e, cl.Reference(), []string{"ResourcePool"}, false)
	ck.ok(err, "pool view")
	ck.equal("pools", pools, []string{"Resources"})
	vms, err := viewNames(ctx, e, cl.Reference(), []string{"VirtualMachine"}, true)
	ck.ok(err, "recursive VM view")
	expectOnce(ck, "VMs of the cluster", vms, srcName, srcWinName)
	return ck.done(map[string]interface{}{"hosts": hosts, "pools": pools, "vms": vms})
}

func opViewPool(ctx context.Context, e *env) (interface{}, error) {
	p, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	vms, err := viewNames(ctx, e, p.Reference(), []string{"VirtualMachine"}, false)
	ck.ok(err, "pool VM view")
	expectOnce(ck, "VMs of the pool", vms, srcName, srcWinName)
	return ck.done(map[string]interface{}{"vms": vms})
}

func opViewHost(ctx context.Context, e *env) (interface{}, error) {
	h, err := e.host("esx-01")
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	vms, err := viewNames(ctx, e, h.Reference(), []string{"VirtualMachine"}, false)
	ck.ok(err, "host VM view")
	expectOnce(ck, "VMs of esx-01", vms, srcName, srcWinName)
	return ck.done(map[string]interface{}{"vms": vms})
}

// A child pool (as govc pool.create makes it), a VM moved into it, views rooted at it and at
// its parent, then the pool destroyed: the VM goes back to the root pool.
func opViewChildPool(ctx context.Context, e *env) (interface{}, error) {
	root, err := e.rootPool()
	if err != nil {
		return nil, err
	}
	src, err := e.vm(srcWinName)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	child, err := root.Create(ctx, "gov-pool", types.DefaultResourceConfigSpec())
	if !ck.ok(err, "ResourcePool.Create") {
		return ck.done(nil)
	}
	_, err = methods.MoveIntoResourcePool(ctx, e.c, &types.MoveIntoResourcePool{This: child.Reference(),
		List: []types.ManagedObjectReference{src.Reference()}})
	ck.ok(err, "MoveIntoResourcePool")
	inPool, err := viewNames(ctx, e, child.Reference(), []string{"VirtualMachine"}, false)
	ck.ok(err, "child pool VM view")
	ck.equal("VMs of the child pool", inPool, []string{srcWinName})
	direct, err := viewNames(ctx, e, root.Reference(), []string{"VirtualMachine"}, false)
	ck.ok(err, "root pool VM view")
	ck.that(countOf(direct, srcWinName) == 0, "the root pool still lists %s directly", srcWinName)
	below, err := viewNames(ctx, e, root.Reference(), []string{"VirtualMachine", "ResourcePool"}, true)
	ck.ok(err, "recursive root pool view")
	expectOnce(ck, "below the root pool", below, srcWinName, "gov-pool")
	var cfg mo.ResourcePool
	if ck.ok(e.pc().RetrieveOne(ctx, child.Reference(), []string{"config"}, &cfg), "child pool config") {
		ck.equal("cpu shares level", cfg.Config.CpuAllocation.Shares.Level, types.SharesLevelNormal)
		ck.equal("memory limit", *cfg.Config.MemoryAllocation.Limit, int64(-1))
	}
	t, err := child.Destroy(ctx)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "Destroy_Task")
	var vm mo.VirtualMachine
	back := ""
	if ck.ok(e.pc().RetrieveOne(ctx, src.Reference(), []string{"resourcePool"}, &vm), "VM pool") && vm.ResourcePool != nil {
		back = vm.ResourcePool.Value
	}
	ck.equal("the VM's pool after the destroy", back, root.Reference().Value)
	return ck.done(map[string]interface{}{"inPool": inPool, "below": below, "backTo": back})
}

func listViewRefs(ctx context.Context, e *env, v types.ManagedObjectReference) ([]types.ManagedObjectReference, error) {
	var lv mo.ListView
	if err := e.pc().RetrieveOne(ctx, v, []string{"view"}, &lv); err != nil {
		return nil, err
	}
	return lv.View, nil
}

func opViewList(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	win, err := e.vm(srcWinName)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	d := map[string]interface{}{}
	m := view.NewManager(c)
	lv, err := m.CreateListView(ctx, []types.ManagedObjectReference{src.Reference()})
	if err != nil {
		return nil, err
	}
	got, err := listViewRefs(ctx, e, lv.Reference())
	ck.ok(err, "view after create")
	ck.equal("created", got, []types.ManagedObjectReference{src.Reference()})
	res, err := methods.ModifyListView(ctx, c, &types.ModifyListView{This: lv.Reference(),
		Add: []types.ManagedObjectReference{win.Reference()}, Remove: []types.ManagedObjectReference{src.Reference()}})
	if ck.ok(err, "ModifyListView") {
		ck.that(len(res.Returnval) == 0, "ModifyListView reports unresolved %v", res.Returnval)
	}
	got, err = listViewRefs(ctx, e, lv.Reference())
	ck.ok(err, "view after modify")
	ck.equal("modified", got, []types.ManagedObjectReference{win.Reference()})
	hosts := []types.ManagedObjectReference{}
	for _, n := range hostNames {
		if h, err := e.host(n); ck.ok(err, n) {
			hosts = append(hosts, h.Reference())
		}
	}
	_, err = methods.ResetListView(ctx, c, &types.ResetListView{This: lv.Reference(), Obj: hosts})
	ck.ok(err, "ResetListView")
	got, err = listViewRefs(ctx, e, lv.Reference())
	ck.ok(err, "view after reset")
	ck.equal("reset", got, hosts)
	d["afterReset"] = len(got)
	cv, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"Datastore"}, true)
	if ck.ok(err, "container view") {
		var cvm mo.ContainerView
		ck.ok(e.pc().RetrieveOne(ctx, cv.Reference(), []string{"view"}, &cvm), "container view contents")
		_, err = methods.ResetListViewFromView(ctx, c, &types.ResetListViewFromView{This: lv.Reference(), View: cv.Reference()})
		ck.ok(err, "ResetListViewFromView")
		got, err = listViewRefs(ctx, e, lv.Reference())
		ck.ok(err, "view after reset from view")
		ck.that(len(got) == 2 && len(cvm.View) == 2, "reset from a datastore view: %v (container %v)", got, cvm.View)
		_ = cv.Destroy(ctx)
	}
	ck.ok(lv.Destroy(ctx), "DestroyView")
	_, err = listViewRefs(ctx, e, lv.Reference())
	ck.equal("reading a destroyed view", faultName(err), "ManagedObjectNotFound")
	return ck.done(d)
}
