// Command twincheck drives the forkscale twin with govmomi, as a Go client written against the
// published vSphere API would: verified TLS, login, a container view, paged retrieval, instant
// and linked clones with task waits, property.Wait, typed faults, performance counters by name,
// and events. It prints one JSON document; any step that fails ends it with exit status 1.
//
// Built in GOPATH mode against Debian's golang-github-vmware-govmomi-dev (see
// tests/test_twin_govmomi.py).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"sort"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/performance"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "twincheck: %s: %v\n", step, err)
	os.Exit(1)
}

func main() {
	rawURL := flag.String("url", "", "the twin's /sdk URL")
	ca := flag.String("ca", "", "the twin's CA file (PEM)")
	user := flag.String("user", "", "user name")
	flag.Parse()
	password := os.Getenv("TWIN_PASSWORD")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := map[string]interface{}{}

	u, err := soap.ParseURL(*rawURL)
	if err != nil {
		fail("parse url", err)
	}
	sc := soap.NewClient(u, false) // TLS verified: no insecure flag...
	if err := sc.SetRootCAs(*ca); err != nil { // ...against the twin's CA
		fail("root CAs", err)
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		fail("vim25 client", err)
	}
	c := &govmomi.Client{Client: vc, SessionManager: session.NewManager(vc)}
	if err := c.Login(ctx, url.UserPassword(*user, password)); err != nil {
		fail("login", err)
	}
	out["apiType"] = c.ServiceContent.About.ApiType
	out["apiVersion"] = c.ServiceContent.About.ApiVersion
	active, err := c.SessionManager.SessionIsActive(ctx)
	if err != nil {
		fail("session active", err)
	}
	out["sessionActive"] = active

	// inventory through a container view, decoding whole data objects
	vm := view.NewManager(c.Client)
	cv, err := vm.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		fail("container view", err)
	}
	var vms []mo.VirtualMachine
	if err := cv.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "parent", "runtime", "summary", "config", "layoutEx", "guest", "snapshot"}, &vms); err != nil {
		fail("retrieve vms", err)
	}
	var src *mo.VirtualMachine
	names := []string{}
	for i := range vms {
		names = append(names, vms[i].Name)
		if vms[i].Name == "src-linux" {
			src = &vms[i]
		}
	}
	sort.Strings(names)
	out["vms"] = names
	if src == nil {
		fail("find source", fmt.Errorf("no src-linux in %v", names))
	}
	out["sourcePowerState"] = string(src.Runtime.PowerState)
	out["sourceSharedMB"] = src.Summary.QuickStats.SharedMemory
	out["sourceChain"] = len(src.LayoutEx.Disk[0].Chain)

	hv, err := vm.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"HostSystem"}, true)
	if err != nil {
		fail("host view", err)
	}
	var hosts []mo.HostSystem
	if err := hv.Retrieve(ctx, []string{"HostSystem"}, []string{"name", "summary", "runtime", "hardware"}, &hosts); err != nil {
		fail("retrieve hosts", err)
	}
	out["hosts"] = len(hosts)

	// paged RetrievePropertiesEx + ContinueRetrievePropertiesEx over every managed entity
	ev, err := vm.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"ManagedEntity"}, true)
	if err != nil {
		fail("entity view", err)
	}
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: ev.Reference(), Skip: types.NewBool(true), SelectSet: []types.BaseSelectionSpec{
			&types.TraversalSpec{Type: "ContainerView", Path: "view", Skip: types.NewBool(false)}}}},
		PropSet: []types.PropertySpec{{Type: "ManagedEntity", PathSet: []string{"name"}}},
	}
	pc := property.DefaultCollector(c.Client)
	res, err := methods.RetrievePropertiesEx(ctx, c, &types.RetrievePropertiesEx{This: pc.Reference(), SpecSet: []types.PropertyFilterSpec{spec}, Options: types.RetrieveOptions{MaxObjects: 3}})
	if err != nil {
		fail("retrieve ex", err)
	}
	pages, objects := 1, len(res.Returnval.Objects)
	token := res.Returnval.Token
	for token != "" {
		next, err := methods.ContinueRetrievePropertiesEx(ctx, c, &types.ContinueRetrievePropertiesEx{This: pc.Reference(), Token: token})
		if err != nil {
			fail("continue retrieve", err)
		}
		pages++
		objects += len(next.Returnval.Objects)
		token = next.Returnval.Token
	}
	out["pages"] = pages
	out["pagedObjects"] = objects

	// instant clone: the task result is a moref in an anyType slot
	source := object.NewVirtualMachine(c.Client, src.Self)
	icSpec := types.VirtualMachineInstantCloneSpec{
		Name:     "gov-ic-1",
		Location: types.VirtualMachineRelocateSpec{},
		Config:   []types.BaseOptionValue{&types.OptionValue{Key: "guestinfo.forkscale.id", Value: "from-go"}},
	}
	t, err := source.InstantClone(ctx, icSpec)
	if err != nil {
		fail("instant clone", err)
	}
	info, err := t.WaitForResult(ctx, nil)
	if err != nil {
		fail("instant clone wait", err)
	}
	cloneRef, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		fail("instant clone result", fmt.Errorf("result is %T, not a ManagedObjectReference", info.Result))
	}
	out["instantClone"] = cloneRef.Type + ":" + cloneRef.Value

	// property.Wait on the clone until it runs
	var state types.VirtualMachinePowerState
	err = property.Wait(ctx, pc, cloneRef, []string{"runtime.powerState"}, func(changes []types.PropertyChange) bool {
		for _, ch := range changes {
			if ch.Name == "runtime.powerState" {
				state = ch.Val.(types.VirtualMachinePowerState)
			}
		}
		return state == types.VirtualMachinePowerStatePoweredOn
	})
	if err != nil {
		fail("property wait", err)
	}
	out["clonePowerState"] = string(state)
	var clone mo.VirtualMachine
	if err := pc.RetrieveOne(ctx, cloneRef, []string{"config.extraConfig", "summary.quickStats", "layoutEx"}, &clone); err != nil {
		fail("retrieve clone", err)
	}
	for _, o := range clone.Config.ExtraConfig {
		if ov := o.GetOptionValue(); ov.Key == "guestinfo.forkscale.id" {
			out["cloneGuestinfo"] = ov.Value
		}
	}
	out["cloneChain"] = len(clone.LayoutEx.Disk[0].Chain)
	out["cloneSharedMB"] = clone.Summary.QuickStats.SharedMemory

	// a linked clone from the snapshot
	folder := object.NewFolder(c.Client, *src.Parent)
	snapshot := src.Snapshot.RootSnapshotList[0].Snapshot
	cloneSpec := types.VirtualMachineCloneSpec{
		Snapshot: &snapshot,
		Location: types.VirtualMachineRelocateSpec{DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsCreateNewChildDiskBacking)},
	}
	lt, err := source.Clone(ctx, folder, "gov-linked-1", cloneSpec)
	if err != nil {
		fail("linked clone", err)
	}
	linfo, err := lt.WaitForResult(ctx, nil)
	if err != nil {
		fail("linked clone wait", err)
	}
	out["linkedClone"] = linfo.Result.(types.ManagedObjectReference).Value

	// a task fault arrives typed
	t, err = source.InstantClone(ctx, types.VirtualMachineInstantCloneSpec{Name: "src-win", Location: types.VirtualMachineRelocateSpec{}})
	if err != nil {
		fail("duplicate clone", err)
	}
	_, err = t.WaitForResult(ctx, nil)
	if terr, ok := err.(task.Error); ok {
		out["taskFault"] = fmt.Sprintf("%T", terr.Fault())
	} else {
		fail("duplicate clone wait", fmt.Errorf("expected a task error, got %v", err))
	}

	// a SOAP fault arrives typed
	ghost := object.NewVirtualMachine(c.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-404"})
	_, err = ghost.PowerOn(ctx)
	if err != nil && soap.IsSoapFault(err) {
		out["soapFault"] = fmt.Sprintf("%T", soap.ToSoapFault(err).VimFault())
	} else {
		fail("soap fault", fmt.Errorf("expected a SOAP fault, got %v", err))
	}

	// performance counters by name
	perf := performance.NewManager(c.Client)
	hostRef := src.Runtime.Host.Reference()
	time.Sleep(100 * time.Millisecond) // a realtime sample after the clone
	sample, err := perf.SampleByName(ctx, types.PerfQuerySpec{MaxSample: 1, IntervalId: 20},
		[]string{"mem.shared.average", "mem.sharedcommon.average"}, []types.ManagedObjectReference{hostRef})
	if err != nil {
		fail("perf sample", err)
	}
	series, err := perf.ToMetricSeries(ctx, sample)
	if err != nil {
		fail("perf series", err)
	}
	perfOut := map[string]int64{}
	for _, s := range series[0].Value {
		perfOut[s.Name] = s.Value[len(s.Value)-1]
	}
	out["hostPerf"] = perfOut

	// events
	evs, err := methods.QueryEvents(ctx, c, &types.QueryEvents{This: *c.ServiceContent.EventManager,
		Filter: types.EventFilterSpec{EventTypeId: []string{"VmClonedEvent"}}})
	if err != nil {
		fail("query events", err)
	}
	cloned := []string{}
	for _, e := range evs.Returnval {
		cloned = append(cloned, e.GetEvent().Vm.Name)
	}
	out["clonedEvents"] = cloned

	if err := c.Logout(ctx); err != nil {
		fail("logout", err)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail("encode", err)
	}
}
