package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func errorf(format string, args ...interface{}) error { return fmt.Errorf(format, args...) }

// Property collector: paged retrieval, property.Wait, and the informer pattern (a filter on a
// container view, WaitForUpdatesEx with versions, enter/modify/leave).
func collectorOps() []op {
	return []op{
		{"pc.retrieve_paged", opRetrievePaged},
		{"pc.invalid_property", opInvalidProperty},
		{"pc.property_wait", opPropertyWait},
		{"pc.wait_for_updates_view", opWaitForUpdatesView},
	}
}

func opRetrievePaged(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	ev, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"ManagedEntity"}, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = ev.Destroy(context.Background()) }()
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: ev.Reference(), Skip: types.NewBool(true), SelectSet: []types.BaseSelectionSpec{
			&types.TraversalSpec{Type: "ContainerView", Path: "view", Skip: types.NewBool(false)}}}},
		PropSet: []types.PropertySpec{{Type: "ManagedEntity", PathSet: []string{"name"}}},
	}
	res, err := methods.RetrievePropertiesEx(ctx, c, &types.RetrievePropertiesEx{This: e.pc().Reference(),
		SpecSet: []types.PropertyFilterSpec{spec}, Options: types.RetrieveOptions{MaxObjects: 3}})
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	pages, objects := 1, 0
	seen := map[string]bool{}
	add := func(list []types.ObjectContent) {
		ck.that(len(list) <= 3, "a page of %d objects with maxObjects 3", len(list))
		for _, o := range list {
			objects++
			ck.that(!seen[o.Obj.Value], "%s returned twice", o.Obj.Value)
			seen[o.Obj.Value] = true
		}
	}
	add(res.Returnval.Objects)
	token := res.Returnval.Token
	for token != "" && pages < 1000 {
		next, err := methods.ContinueRetrievePropertiesEx(ctx, c, &types.ContinueRetrievePropertiesEx{This: e.pc().Reference(), Token: token})
		if !ck.ok(err, "ContinueRetrievePropertiesEx") {
			break
		}
		pages++
		add(next.Returnval.Objects)
		token = next.Returnval.Token
	}
	ck.that(objects > 10, "only %d entities", objects)
	ck.equal("pages", pages, (objects+2)/3)
	return ck.done(map[string]interface{}{"pages": pages, "objects": objects})
}

func opInvalidProperty(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	var v mo.VirtualMachine
	err = e.pc().RetrieveOne(ctx, src.Reference(), []string{"runtime.noSuchProperty"}, &v)
	ck := &checks{}
	ck.equal("fault for an unknown property path", faultName(err), "InvalidProperty")
	return ck.done(map[string]interface{}{"fault": faultName(err)})
}

func opPropertyWait(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-wait", false)
	if err != nil {
		return nil, err
	}
	if _, err := vm.PowerOn(ctx); err != nil {
		return nil, err
	}
	ck := &checks{}
	seen := []string{}
	err = property.Wait(ctx, e.pc(), vm.Reference(), []string{"runtime.powerState"}, func(pc []types.PropertyChange) bool {
		for _, ch := range pc {
			s, ok := ch.Val.(types.VirtualMachinePowerState)
			ck.that(ok, "runtime.powerState decoded as %T", ch.Val)
			seen = append(seen, string(s))
			if s == types.VirtualMachinePowerStatePoweredOn {
				return true
			}
		}
		return false
	})
	ck.ok(err, "property.Wait")
	ck.that(len(seen) > 0 && seen[len(seen)-1] == "poweredOn", "states seen %v", seen)
	return ck.done(map[string]interface{}{"states": seen})
}

type update struct{ kind, name string }

// waitUpdates calls WaitForUpdatesEx until `done` says so, returning the new version.
func waitUpdates(ctx context.Context, c *vim25.Client, pc types.ManagedObjectReference, version string, done func([]types.ObjectUpdate) bool) (string, error) {
	wait := int32(5)
	for i := 0; i < 20; i++ {
		res, err := methods.WaitForUpdatesEx(ctx, c, &types.WaitForUpdatesEx{This: pc, Version: version,
			Options: &types.WaitOptions{MaxWaitSeconds: &wait}})
		if err != nil {
			return version, err
		}
		if res.Returnval == nil {
			continue
		}
		version = res.Returnval.Version
		for _, fs := range res.Returnval.FilterSet {
			if done(fs.ObjectSet) {
				return version, nil
			}
		}
	}
	return version, errorf("the expected update never came")
}

func changedName(u types.ObjectUpdate) string {
	for _, ch := range u.ChangeSet {
		if ch.Name == "name" {
			if s, ok := ch.Val.(string); ok {
				return s
			}
		}
	}
	return ""
}

func opWaitForUpdatesView(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	pc, err := e.pc().Create(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = pc.Destroy(context.Background()) }()
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Destroy(context.Background()) }()
	var cv mo.ContainerView
	if err := e.pc().RetrieveOne(ctx, v.Reference(), []string{"view"}, &cv); err != nil {
		return nil, err
	}
	spec := types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: v.Reference(), Skip: types.NewBool(true), SelectSet: []types.BaseSelectionSpec{
			&types.TraversalSpec{Type: "ContainerView", Path: "view"}}}},
		PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: []string{"name", "runtime.powerState"}}},
	}
	ck := &checks{}
	if !ck.ok(pc.CreateFilter(ctx, types.CreateFilter{Spec: spec, PartialUpdates: false}), "CreateFilter") {
		return ck.done(nil)
	}
	initial := 0
	version, err := waitUpdates(ctx, c, pc.Reference(), "", func(us []types.ObjectUpdate) bool {
		for _, u := range us {
			ck.that(u.Kind == types.ObjectUpdateKindEnter, "initial update kind %s", u.Kind)
			initial++
		}
		return true
	})
	ck.ok(err, "initial WaitForUpdatesEx")
	ck.equal("initial enter updates", initial, len(cv.View))
	vm, err := e.scratch(ctx, "gov-informer", false)
	if !ck.ok(err, "scratch VM") {
		return ck.done(nil)
	}
	seen := []string{}
	watch := func(kind types.ObjectUpdateKind, name string) {
		version, err = waitUpdates(ctx, c, pc.Reference(), version, func(us []types.ObjectUpdate) bool {
			hit := false
			for _, u := range us {
				if u.Obj == vm.Reference() {
					seen = append(seen, string(u.Kind)+":"+changedName(u))
					hit = hit || (u.Kind == kind && (name == "" || changedName(u) == name))
				}
			}
			return hit
		})
		ck.ok(err, fmt.Sprintf("wait for %s %s", kind, name))
	}
	watch(types.ObjectUpdateKindEnter, "gov-informer")
	if ck.ok(e.powerOn(ctx, vm), "power on") {
		watch(types.ObjectUpdateKindModify, "")
	}
	if ck.ok(e.powerOff(ctx, vm), "power off") {
		watch(types.ObjectUpdateKindModify, "")
	}
	t, err := vm.Destroy(ctx)
	_, err = e.waitTask(ctx, t, err)
	if ck.ok(err, "destroy") {
		watch(types.ObjectUpdateKindLeave, "")
	}
	return ck.done(map[string]interface{}{"initial": initial, "updates": seen})
}

// faults ----------------------------------------------------------------------------------------

func faultOps() []op {
	return []op{
		{"fault.task_typed", opTaskFault},
		{"fault.soap_typed", opSoapFault},
		{"fault.not_authenticated", opNotAuthenticated},
	}
}

func opTaskFault(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	win, err := e.vm(srcWinName)
	if err != nil {
		return nil, err
	}
	t, err := src.InstantClone(ctx, types.VirtualMachineInstantCloneSpec{Name: srcWinName, Location: types.VirtualMachineRelocateSpec{}})
	if err != nil {
		return nil, err
	}
	info, err := t.WaitForResult(ctx, nil)
	ck := &checks{}
	ck.equal("task fault", faultName(err), "DuplicateName")
	if f, ok := faultOf(err).(*types.DuplicateName); ok {
		ck.equal("DuplicateName.name", f.Name, srcWinName)
		ck.equal("DuplicateName.object", f.Object, win.Reference())
	}
	if info != nil {
		ck.equal("task state", info.State, types.TaskInfoStateError)
		ck.that(info.Error != nil && info.Error.LocalizedMessage != "", "task info.error.localizedMessage empty")
	}
	return ck.done(map[string]interface{}{"fault": faultName(err)})
}

func opSoapFault(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	ghostRef := types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-404"}
	_, err = object.NewVirtualMachine(c, ghostRef).PowerOn(ctx)
	ck := &checks{}
	ck.that(soap.IsSoapFault(err), "not a SOAP fault: %v", err)
	ck.equal("fault", faultName(err), "ManagedObjectNotFound")
	if f, ok := faultOf(err).(types.ManagedObjectNotFound); ok {
		ck.equal("ManagedObjectNotFound.obj", f.Obj, ghostRef)
	}
	return ck.done(map[string]interface{}{"fault": faultName(err)})
}

// opNotAuthenticated: a client that never logged in may read the service content, nothing else.
func opNotAuthenticated(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	anon, err := newClient(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	var v mo.VirtualMachine
	err = property.DefaultCollector(anon).RetrieveOne(ctx, src.Reference(), []string{"name"}, &v)
	ck.equal("reading a VM without a session", faultName(err), "NotAuthenticated")
	_, err = object.NewVirtualMachine(anon, src.Reference()).PowerOff(ctx)
	ck.equal("powering off without a session", faultName(err), "NotAuthenticated")
	return ck.done(map[string]interface{}{"leakedName": v.Name})
}

func newClient(ctx context.Context, e *env) (*vim25.Client, error) {
	u, err := soap.ParseURL(e.cfg.url)
	if err != nil {
		return nil, err
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(e.cfg.ca); err != nil {
		return nil, err
	}
	return vim25.NewClient(ctx, sc)
}

// methods the twin does not implement by design ------------------------------------------------

func unsupportedOps() []op {
	return []op{
		{"unsupported.export_vm", unsupported("ExportVm", func(ctx context.Context, e *env) error {
			src, err := e.vm(srcName)
			if err != nil {
				return err
			}
			_, err = methods.ExportVm(ctx, e.c, &types.ExportVm{This: src.Reference()})
			return err
		})},
		{"unsupported.acquire_ticket", unsupported("AcquireTicket", func(ctx context.Context, e *env) error {
			src, err := e.vm(srcName)
			if err != nil {
				return err
			}
			_, err = methods.AcquireTicket(ctx, e.c, &types.AcquireTicket{This: src.Reference(), TicketType: "webmks"})
			return err
		})},
		{"unsupported.add_host", unsupported("AddHost_Task", func(ctx context.Context, e *env) error {
			cl, err := e.cluster()
			if err != nil {
				return err
			}
			_, err = methods.AddHost_Task(ctx, e.c, &types.AddHost_Task{This: cl.Reference(),
				Spec: types.HostConnectSpec{HostName: "esx-99", UserName: "root", Password: "x"}, AsConnected: true})
			return err
		})},
		{"unsupported.ovf_import_spec", unsupported("CreateImportSpec", func(ctx context.Context, e *env) error {
			pool, err := e.rootPool()
			if err != nil {
				return err
			}
			ds, err := e.datastore(dsName)
			if err != nil {
				return err
			}
			_, err = methods.CreateImportSpec(ctx, e.c, &types.CreateImportSpec{This: *e.c.ServiceContent.OvfManager,
				OvfDescriptor: "<Envelope/>", ResourcePool: pool.Reference(), Datastore: ds.Reference(),
				Cisp: types.OvfCreateImportSpecParams{EntityName: "gov-ovf"}})
			return err
		})},
	}
}

// unsupported: the call fails fast with a typed MethodNotFound or NotSupported naming the method.
func unsupported(method string, call func(ctx context.Context, e *env) error) opFunc {
	return func(ctx context.Context, e *env) (interface{}, error) {
		if _, err := e.client(); err != nil {
			return nil, err
		}
		start := time.Now()
		err := call(ctx, e)
		took := time.Since(start)
		ck := &checks{}
		name := faultName(err)
		ck.that(name == "MethodNotFound" || name == "NotSupported", "%s answered %q (%v), not MethodNotFound/NotSupported", method, name, err)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		named := strings.Contains(msg, method)
		if f, ok := faultOf(err).(types.MethodNotFound); ok {
			named = named || f.Method == method
		}
		ck.that(named, "the fault does not name %s: %q", method, msg)
		ck.that(!strings.Contains(strings.TrimSpace(msg), "\n"), "the fault message is not one line: %q", msg)
		ck.that(took < 2*time.Second, "took %s", took)
		return ck.done(map[string]interface{}{"fault": name, "ms": took.Milliseconds()})
	}
}

// the end of the session --------------------------------------------------------------------------

func endOps() []op {
	return []op{{"session.logout", opLogout}}
}

func opLogout(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	ck.ok(session.NewManager(c).Logout(ctx), "Logout")
	var v mo.VirtualMachine
	after := faultName(e.pc().RetrieveOne(ctx, src.Reference(), []string{"name"}, &v))
	ck.equal("a call after logout", after, "NotAuthenticated")
	// a new login with the same credentials works again
	again, err := newClient(ctx, e)
	if ck.ok(err, "new client") {
		ck.ok(session.NewManager(again).Login(ctx, url.UserPassword(e.cfg.user, e.cfg.password)), "login again")
	}
	return ck.done(map[string]interface{}{"afterLogout": after})
}
