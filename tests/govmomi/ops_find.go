package main

import (
	"context"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func sessionOps() []op {
	return []op{{"session.login", opLogin}}
}

// opLogin: verified TLS against the twin's CA, login, and what `govc about` / `govc session.ls` print.
func opLogin(ctx context.Context, e *env) (interface{}, error) {
	u, err := soap.ParseURL(e.cfg.url)
	if err != nil {
		return nil, err
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(e.cfg.ca); err != nil {
		return nil, err
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, err
	}
	sm := session.NewManager(c)
	if err := sm.Login(ctx, url.UserPassword(e.cfg.user, e.cfg.password)); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.c = c
	e.mu.Unlock()
	ck := &checks{}
	about := c.ServiceContent.About
	ck.equal("about.apiType", about.ApiType, "VirtualCenter")
	ck.that(strings.HasPrefix(about.ApiVersion, "8.0"), "about.apiVersion %q is not 8.0.x", about.ApiVersion)
	active, err := sm.SessionIsActive(ctx)
	ck.ok(err, "SessionIsActive")
	ck.that(active, "SessionIsActive is false right after login")
	us, err := sm.UserSession(ctx)
	userName := ""
	if ck.ok(err, "currentSession") && ck.that(us != nil, "currentSession is unset") {
		userName = us.UserName
		ck.that(strings.EqualFold(us.UserName, e.cfg.user) || strings.HasSuffix(strings.ToLower(us.UserName), "\\"+strings.ToLower(e.cfg.user)),
			"currentSession.userName %q is not %q", us.UserName, e.cfg.user)
	}
	now, err := methods.GetCurrentTime(ctx, c)
	skew := 0.0
	if ck.ok(err, "CurrentTime") {
		skew = time.Since(*now).Seconds()
		ck.that(skew < 60 && skew > -60, "CurrentTime is %.0fs off the local clock", skew)
	}
	return ck.done(map[string]interface{}{"apiType": about.ApiType, "apiVersion": about.ApiVersion,
		"sessionActive": active, "userName": userName, "isVC": c.IsVC()})
}

// find.Finder: the inventory paths govc, Terraform and Ansible resolve ----------------------------

func findOps() []op {
	return []op{
		{"find.datacenter", opFindDatacenter},
		{"find.vm_list", opFindVMs},
		{"find.host_list", opFindHosts},
		{"find.datastore_list", opFindDatastores},
		{"find.network_list", opFindNetworks},
		{"find.resource_pool_list", opFindPools},
		{"find.cluster_list", opFindClusters},
		{"find.folder_list", opFindFolders},
	}
}

func finder(e *env) (*find.Finder, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	return find.NewFinder(c, true), nil
}

func finderAt(ctx context.Context, e *env) (*find.Finder, error) {
	f, err := finder(e)
	if err != nil {
		return nil, err
	}
	dc, err := f.Datacenter(ctx, "/"+dcName)
	if err != nil {
		return nil, err
	}
	f.SetDatacenter(dc)
	return f, nil
}

func opFindDatacenter(ctx context.Context, e *env) (interface{}, error) {
	f, err := finder(e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	dcs, err := f.DatacenterList(ctx, "*")
	names, paths := []string{}, []string{}
	if ck.ok(err, "DatacenterList(*)") {
		for _, dc := range dcs {
			names = append(names, dc.Name())
			paths = append(paths, dc.InventoryPath)
		}
	}
	ck.equal("datacenters", names, []string{dcName})
	ck.equal("paths", paths, []string{"/" + dcName})
	folderPaths := map[string]string{}
	if dc, err := f.DefaultDatacenter(ctx); ck.ok(err, "DefaultDatacenter") {
		if fs, err := dc.Folders(ctx); ck.ok(err, "Datacenter.Folders") {
			folderPaths = map[string]string{"vm": fs.VmFolder.InventoryPath, "host": fs.HostFolder.InventoryPath,
				"datastore": fs.DatastoreFolder.InventoryPath, "network": fs.NetworkFolder.InventoryPath}
			for k, p := range folderPaths {
				ck.equal("folder path "+k, p, "/"+dcName+"/"+k)
			}
		}
	}
	return ck.done(map[string]interface{}{"names": names, "paths": paths, "folders": folderPaths})
}

func opFindVMs(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	names := []string{}
	vms, err := f.VirtualMachineList(ctx, "/"+dcName+"/vm/*")
	if ck.ok(err, "VirtualMachineList(/dc1/vm/*)") {
		for _, vm := range vms {
			names = append(names, vm.Name())
			ck.equal("path of "+vm.Name(), vm.InventoryPath, "/"+dcName+"/vm/"+vm.Name())
		}
	}
	sort.Strings(names)
	ck.that(contains(names, srcName) && contains(names, srcWinName), "/dc1/vm/* lists %v, not both sources", names)
	src, err := e.vm(srcName)
	relative := ""
	if ck.ok(err, "source") {
		vm, err := f.VirtualMachine(ctx, srcName) // `govc vm.info src-linux`: a bare name, found anywhere
		if ck.ok(err, "VirtualMachine(src-linux)") {
			relative = vm.InventoryPath
			ck.equal("VirtualMachine(src-linux) ref", vm.Reference(), src.Reference())
		}
	}
	return ck.done(map[string]interface{}{"names": names, "relative": relative})
}

func opFindHosts(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	paths := []string{}
	hosts, err := f.HostSystemList(ctx, "*/*")
	if ck.ok(err, "HostSystemList(*/*)") {
		for _, h := range hosts {
			paths = append(paths, h.InventoryPath)
		}
	}
	sort.Strings(paths)
	want := []string{}
	for _, h := range hostNames {
		want = append(want, "/"+dcName+"/host/"+clusterName+"/"+h)
	}
	ck.equal("host paths", paths, want)
	one := ""
	if h, err := f.HostSystem(ctx, clusterName+"/esx-02"); ck.ok(err, "HostSystem(cluster1/esx-02)") {
		one = h.Name()
	}
	ck.equal("HostSystem(cluster1/esx-02)", one, "esx-02")
	return ck.done(map[string]interface{}{"paths": paths, "one": one})
}

func opFindDatastores(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	names := []string{}
	dss, err := f.DatastoreList(ctx, "*")
	if ck.ok(err, "DatastoreList(*)") {
		for _, d := range dss {
			names = append(names, d.Name())
			ck.equal("path of "+d.Name(), d.InventoryPath, "/"+dcName+"/datastore/"+d.Name())
		}
	}
	sort.Strings(names)
	ck.equal("datastores", names, []string{dsHddName, dsName})
	return ck.done(map[string]interface{}{"names": names})
}

func opFindNetworks(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	kinds := map[string]string{}
	nets, err := f.NetworkList(ctx, "*")
	if ck.ok(err, "NetworkList(*)") {
		for _, n := range nets {
			kinds[strings.TrimPrefix(n.GetInventoryPath(), "/"+dcName+"/network/")] = n.Reference().Type
		}
	}
	ck.equal("VM Network", kinds[netName], "Network")
	ck.equal("isolated", kinds[isoNetName], "Network")
	ck.equal("dvpg-vdi", kinds[dvpgName], "DistributedVirtualPortgroup")
	// what `govc vm.network.add -net dvpg-vdi` builds: a DVS port backing naming the switch by uuid
	backing := map[string]string{}
	if n, err := f.Network(ctx, dvpgName); ck.ok(err, "Network(dvpg-vdi)") {
		if b, err := n.EthernetCardBackingInfo(ctx); ck.ok(err, "EthernetCardBackingInfo(dvpg-vdi)") {
			if pb, ok := b.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo); ck.that(ok, "dvpg backing is %T", b) {
				backing["switchUuid"] = pb.Port.SwitchUuid
				backing["portgroupKey"] = pb.Port.PortgroupKey
				ck.that(pb.Port.SwitchUuid != "" && pb.Port.PortgroupKey == n.Reference().Value,
					"dvpg backing port %+v", pb.Port)
			}
		}
	}
	return ck.done(map[string]interface{}{"kinds": kinds, "dvpgBacking": backing})
}

func opFindPools(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	paths := []string{}
	pools, err := f.ResourcePoolList(ctx, "*")
	if ck.ok(err, "ResourcePoolList(*)") {
		for _, p := range pools {
			paths = append(paths, p.InventoryPath)
		}
	}
	want := "/" + dcName + "/host/" + clusterName + "/Resources"
	ck.equal("pool paths", paths, []string{want})
	def := ""
	if p, err := f.DefaultResourcePool(ctx); ck.ok(err, "DefaultResourcePool") {
		def = p.InventoryPath
	}
	ck.equal("default pool", def, want)
	return ck.done(map[string]interface{}{"paths": paths, "default": def})
}

func opFindClusters(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	paths := []string{}
	cs, err := f.ClusterComputeResourceList(ctx, "*")
	if ck.ok(err, "ClusterComputeResourceList(*)") {
		for _, c := range cs {
			paths = append(paths, c.InventoryPath)
		}
	}
	ck.equal("cluster paths", paths, []string{"/" + dcName + "/host/" + clusterName})
	hosts := 0
	if cr, err := f.ComputeResource(ctx, clusterName); ck.ok(err, "ComputeResource(cluster1)") {
		if hs, err := cr.Hosts(ctx); ck.ok(err, "ComputeResource.Hosts") {
			hosts = len(hs)
		}
	}
	ck.equal("hosts of cluster1", hosts, len(hostNames))
	return ck.done(map[string]interface{}{"paths": paths, "hosts": hosts})
}

func opFindFolders(ctx context.Context, e *env) (interface{}, error) {
	f, err := finderAt(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	paths := []string{}
	fs, err := f.FolderList(ctx, "/"+dcName+"/vm/*")
	if ck.ok(err, "FolderList(/dc1/vm/*)") {
		for _, x := range fs {
			paths = append(paths, x.InventoryPath)
		}
	}
	ck.equal("vm subfolders", paths, []string{"/" + dcName + "/vm/" + folderName})
	if x, err := f.Folder(ctx, "/"+dcName+"/vm/"+folderName); ck.ok(err, "Folder(/dc1/vm/forkscale)") {
		var m mo.Folder
		if ck.ok(e.pc().RetrieveOne(ctx, x.Reference(), []string{"childType"}, &m), "folder childType") {
			ck.that(contains(m.ChildType, "VirtualMachine"), "forkscale childType %v", m.ChildType)
		}
	}
	return ck.done(map[string]interface{}{"paths": paths})
}

// SearchIndex ----------------------------------------------------------------------------------

func searchOps() []op {
	return []op{
		{"search.find_by_inventory_path", opSearchInventoryPath},
		{"search.find_child", opSearchFindChild},
		{"search.find_by_uuid", opSearchUUID},
		{"search.find_by_ip", opSearchIP},
		{"search.find_by_dns_name", opSearchDNS},
		{"search.find_by_datastore_path", opSearchDatastorePath},
	}
}

func refOf(r object.Reference) string {
	if r == nil {
		return ""
	}
	return refString(r.Reference())
}

func opSearchInventoryPath(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	si := object.NewSearchIndex(c)
	ck := &checks{}
	found := map[string]string{}
	want := map[string]string{}
	for kind, p := range map[string][2]string{
		"VirtualMachine": {"/" + dcName + "/vm/" + srcName, srcName}, "Datastore": {dcName + "/datastore/" + dsName, dsName},
		"HostSystem": {dcName + "/host/" + clusterName + "/esx-01", "esx-01"}, "Network": {"/" + dcName + "/network/" + netName, netName},
		"ClusterComputeResource": {"/" + dcName + "/host/" + clusterName + "/", clusterName},
	} {
		r, err := si.FindByInventoryPath(ctx, p[0])
		if ck.ok(err, "FindByInventoryPath("+p[0]+")") {
			found[p[0]] = refOf(r)
		}
		if exp, err := e.ref(kind, p[1]); ck.ok(err, "lookup "+p[1]) {
			want[p[0]] = refString(exp)
		}
	}
	ck.equal("found", found, want)
	none, err := si.FindByInventoryPath(ctx, "/"+dcName+"/vm/no-such-vm")
	ck.ok(err, "FindByInventoryPath(missing)")
	ck.that(none == nil, "a missing path found %v", none)
	return ck.done(map[string]interface{}{"found": found})
}

func opSearchFindChild(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	si := object.NewSearchIndex(c)
	ck := &checks{}
	fs, err := e.folders()
	if err != nil {
		return nil, err
	}
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	cl, err := e.cluster()
	if err != nil {
		return nil, err
	}
	found := map[string]string{}
	for _, q := range []struct {
		parent object.Reference
		label  string
		name   string
	}{{fs.VmFolder, "vm folder", srcWinName}, {dc, "datacenter", "vm"}, {cl, "cluster", "esx-03"}, {cl, "cluster", "Resources"}} {
		r, err := si.FindChild(ctx, q.parent, q.name)
		if ck.ok(err, "FindChild("+q.label+", "+q.name+")") {
			found[q.label+"/"+q.name] = refOf(r)
		}
	}
	want := map[string]string{}
	for key, kr := range map[string][2]string{"vm folder/" + srcWinName: {"VirtualMachine", srcWinName}, "cluster/esx-03": {"HostSystem", "esx-03"},
		"cluster/Resources": {"ResourcePool", "Resources"}} {
		if r, err := e.ref(kr[0], kr[1]); ck.ok(err, "lookup "+kr[1]) {
			want[key] = refString(r)
		}
	}
	want["datacenter/vm"] = refString(fs.VmFolder.Reference())
	ck.equal("found", found, want)
	none, err := si.FindChild(ctx, fs.VmFolder, "no-such-vm")
	ck.ok(err, "FindChild(missing)")
	ck.that(none == nil, "a missing child found %v", none)
	return ck.done(map[string]interface{}{"found": found})
}

func opSearchUUID(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	si := object.NewSearchIndex(c)
	ck := &checks{}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	var v mo.VirtualMachine
	if err := e.pc().RetrieveOne(ctx, src.Reference(), []string{"config.uuid", "config.instanceUuid"}, &v); err != nil {
		return nil, err
	}
	found := map[string]string{}
	if r, err := si.FindByUuid(ctx, dc, v.Config.Uuid, true, nil); ck.ok(err, "FindByUuid(bios)") {
		found["bios"] = refOf(r)
	}
	if r, err := si.FindByUuid(ctx, nil, strings.ToUpper(v.Config.InstanceUuid), true, types.NewBool(true)); ck.ok(err, "FindByUuid(instance)") {
		found["instance"] = refOf(r)
	}
	ck.equal("bios uuid", found["bios"], refString(src.Reference()))
	ck.equal("instance uuid (upper case)", found["instance"], refString(src.Reference()))
	h, err := e.host("esx-01")
	if err != nil {
		return nil, err
	}
	var hm mo.HostSystem
	if ck.ok(e.pc().RetrieveOne(ctx, h.Reference(), []string{"hardware.systemInfo.uuid"}, &hm), "host uuid") && hm.Hardware != nil {
		if r, err := si.FindByUuid(ctx, dc, hm.Hardware.SystemInfo.Uuid, false, nil); ck.ok(err, "FindByUuid(host)") {
			found["host"] = refOf(r)
		}
	}
	ck.equal("host uuid", found["host"], refString(h.Reference()))
	return ck.done(map[string]interface{}{"found": found})
}

func opSearchIP(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	vm, err := e.identityClone()
	if err != nil {
		return nil, err
	}
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	si := object.NewSearchIndex(c)
	ck := &checks{}
	got := ""
	if r, err := si.FindByIp(ctx, dc, identIP, true); ck.ok(err, "FindByIp") {
		got = refOf(r)
	}
	ck.equal("FindByIp("+identIP+")", got, refString(vm.Reference()))
	all, err := si.FindAllByIp(ctx, nil, identIP, true)
	ck.ok(err, "FindAllByIp")
	ck.equal("FindAllByIp count", len(all), 1)
	none, err := si.FindByIp(ctx, dc, "192.0.2.250", true)
	ck.ok(err, "FindByIp(unknown)")
	ck.that(none == nil, "an unknown IP found %v", none)
	return ck.done(map[string]interface{}{"found": got})
}

func opSearchDNS(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	vm, err := e.identityClone()
	if err != nil {
		return nil, err
	}
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	si := object.NewSearchIndex(c)
	ck := &checks{}
	got := ""
	if r, err := si.FindByDnsName(ctx, dc, identHost, true); ck.ok(err, "FindByDnsName") {
		got = refOf(r)
	}
	ck.equal("FindByDnsName("+identHost+")", got, refString(vm.Reference()))
	return ck.done(map[string]interface{}{"found": got})
}

func opSearchDatastorePath(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	dc, err := e.dc()
	if err != nil {
		return nil, err
	}
	si := object.NewSearchIndex(c)
	ck := &checks{}
	p := "[" + dsName + "] " + srcName + "/" + srcName + ".vmx"
	got := ""
	if r, err := si.FindByDatastorePath(ctx, dc, p); ck.ok(err, "FindByDatastorePath") {
		got = refOf(r)
	}
	ck.equal("FindByDatastorePath("+p+")", got, refString(src.Reference()))
	return ck.done(map[string]interface{}{"path": p, "found": got})
}
