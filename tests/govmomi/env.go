package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The default world of `forkscale sim` (forkscale/sim/builder.py DEFAULT_WORLD).
const (
	dcName      = "dc1"
	clusterName = "cluster1"
	srcName     = "src-linux"
	srcWinName  = "src-win"
	dsName      = "ds-ssd"
	dsHddName   = "ds-hdd"
	netName     = "VM Network"
	isoNetName  = "isolated"
	dvsName     = "dvs1"
	dvpgName    = "dvpg-vdi"
	folderName  = "forkscale"
	baseSnap    = "base"
)

var hostNames = []string{"esx-01", "esx-02", "esx-03", "esx-04"}

type config struct {
	url, ca, user, password, guestUser, guestPassword string
}

type memoCell struct {
	once sync.Once
	val  interface{}
	err  error
}

// env is what the operations share: the session, and objects made once and reused (memoized,
// each under its own time limit, so a slow op cannot poison them with its deadline).
type env struct {
	cfg  config
	mu   sync.Mutex
	c    *vim25.Client
	memo map[string]*memoCell
}

func newEnv(cfg config) *env {
	return &env{cfg: cfg, memo: map[string]*memoCell{}}
}

func (e *env) client() (*vim25.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c == nil {
		return nil, errors.New("no session (session.login failed)")
	}
	return e.c, nil
}

func (e *env) once(key string, f func(ctx context.Context) (interface{}, error)) (interface{}, error) {
	e.mu.Lock()
	cell, ok := e.memo[key]
	if !ok {
		cell = &memoCell{}
		e.memo[key] = cell
	}
	e.mu.Unlock()
	cell.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cell.val, cell.err = f(ctx)
		if cell.err != nil {
			cell.err = fmt.Errorf("%s: %w", key, cell.err)
		}
	})
	return cell.val, cell.err
}

// checks collects every mismatch of one operation, so one run names all of an op's gaps.
type checks struct{ errs []string }

func (c *checks) that(ok bool, format string, args ...interface{}) bool {
	if !ok {
		c.errs = append(c.errs, fmt.Sprintf(format, args...))
	}
	return ok
}

func (c *checks) equal(what string, got, want interface{}) bool {
	return c.that(reflect.DeepEqual(got, want), "%s: got %v, want %v", what, show(got), show(want))
}

// ok records err (if any) under `what` and reports whether the step succeeded.
func (c *checks) ok(err error, what string) bool {
	if err != nil {
		c.errs = append(c.errs, fmt.Sprintf("%s: %v", what, oneLine(err)))
		return false
	}
	return true
}

func (c *checks) done(detail interface{}) (interface{}, error) {
	if len(c.errs) == 0 {
		return detail, nil
	}
	return detail, errors.New(strings.Join(c.errs, "; "))
}

func show(v interface{}) string {
	s := fmt.Sprintf("%v", v)
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
		s = fmt.Sprintf("%q", v)
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// faultName is the vSphere fault type behind err ("DuplicateName"), from a SOAP fault or a task
// error, or "" when err carries no vSphere fault.
func faultName(err error) string {
	var f interface{}
	var terr task.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &terr):
		f = terr.Fault()
	case soap.IsSoapFault(err):
		f = soap.ToSoapFault(err).VimFault()
	case soap.IsVimFault(err):
		f = soap.ToVimFault(err)
	default:
		return ""
	}
	name := fmt.Sprintf("%T", f)
	return strings.TrimPrefix(strings.TrimPrefix(name, "*"), "types.")
}

func faultOf(err error) interface{} {
	var terr task.Error
	switch {
	case errors.As(err, &terr):
		return terr.Fault()
	case soap.IsSoapFault(err):
		return soap.ToSoapFault(err).VimFault()
	case soap.IsVimFault(err):
		return soap.ToVimFault(err)
	}
	return nil
}

// lookups ---------------------------------------------------------------------------------------

// named finds an inventory object by type and name through a container view on the root
// folder, the one lookup path every client relies on (and the existing suite proves works).
func (e *env) named(ctx context.Context, kind, name string) (types.ManagedObjectReference, error) {
	c, err := e.client()
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	m := view.NewManager(c)
	v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{kind}, true)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	defer func() { _ = v.Destroy(context.Background()) }()
	var cv mo.ContainerView
	if err := e.pc().RetrieveOne(ctx, v.Reference(), []string{"view"}, &cv); err != nil {
		return types.ManagedObjectReference{}, err
	}
	byName, err := e.nameMap(ctx, cv.View)
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	for ref, n := range byName {
		if n == name {
			return ref, nil
		}
	}
	return types.ManagedObjectReference{}, fmt.Errorf("no %s named %q", kind, name)
}

func (e *env) ref(kind, name string) (types.ManagedObjectReference, error) {
	v, err := e.once("ref:"+kind+":"+name, func(ctx context.Context) (interface{}, error) {
		return e.named(ctx, kind, name)
	})
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	return v.(types.ManagedObjectReference), nil
}

func (e *env) dc() (*object.Datacenter, error) {
	r, err := e.ref("Datacenter", dcName)
	if err != nil {
		return nil, err
	}
	dc := object.NewDatacenter(e.c, r)
	dc.InventoryPath = "/" + dcName
	return dc, nil
}

func (e *env) vm(name string) (*object.VirtualMachine, error) {
	r, err := e.ref("VirtualMachine", name)
	if err != nil {
		return nil, err
	}
	return object.NewVirtualMachine(e.c, r), nil
}

func (e *env) host(name string) (*object.HostSystem, error) {
	r, err := e.ref("HostSystem", name)
	if err != nil {
		return nil, err
	}
	return object.NewHostSystem(e.c, r), nil
}

func (e *env) datastore(name string) (*object.Datastore, error) {
	r, err := e.ref("Datastore", name)
	if err != nil {
		return nil, err
	}
	ds := object.NewDatastore(e.c, r)
	ds.InventoryPath = fmt.Sprintf("/%s/datastore/%s", dcName, name)
	ds.DatacenterPath = "/" + dcName
	return ds, nil
}

func (e *env) cluster() (*object.ClusterComputeResource, error) {
	r, err := e.ref("ClusterComputeResource", clusterName)
	if err != nil {
		return nil, err
	}
	return object.NewClusterComputeResource(e.c, r), nil
}

func (e *env) rootPool() (*object.ResourcePool, error) {
	r, err := e.ref("ResourcePool", "Resources")
	if err != nil {
		return nil, err
	}
	return object.NewResourcePool(e.c, r), nil
}

func (e *env) folders() (*object.DatacenterFolders, error) {
	v, err := e.once("folders", func(ctx context.Context) (interface{}, error) {
		dc, err := e.dc()
		if err != nil {
			return nil, err
		}
		var d mo.Datacenter
		if err := e.pc().RetrieveOne(ctx, dc.Reference(), []string{"vmFolder", "hostFolder", "datastoreFolder", "networkFolder"}, &d); err != nil {
			return nil, err
		}
		return &object.DatacenterFolders{
			VmFolder: object.NewFolder(e.c, d.VmFolder), HostFolder: object.NewFolder(e.c, d.HostFolder),
			DatastoreFolder: object.NewFolder(e.c, d.DatastoreFolder), NetworkFolder: object.NewFolder(e.c, d.NetworkFolder),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*object.DatacenterFolders), nil
}

func (e *env) pc() *property.Collector {
	return property.DefaultCollector(e.c)
}

func (e *env) names(ctx context.Context, refs []types.ManagedObjectReference) ([]string, error) {
	if len(refs) == 0 {
		return []string{}, nil
	}
	byName, err := e.nameMap(ctx, refs)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		n, ok := byName[r]
		if !ok {
			n = "<unreadable " + r.Value + ">"
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// nameMap reads "name" of each object as raw ObjectContent: decoding into mo.ManagedEntity
// loses the name of a Network (govmomi's mo.Network has its own Name field).
func (e *env) nameMap(ctx context.Context, refs []types.ManagedObjectReference) (map[types.ManagedObjectReference]string, error) {
	out := map[types.ManagedObjectReference]string{}
	if len(refs) == 0 {
		return out, nil
	}
	var content []types.ObjectContent
	if err := e.pc().Retrieve(ctx, refs, []string{"name"}, &content); err != nil {
		return nil, err
	}
	for _, oc := range content {
		for _, p := range oc.PropSet {
			if s, ok := p.Val.(string); ok && p.Name == "name" {
				out[oc.Obj] = s
			}
		}
	}
	return out, nil
}

func refIn(refs []types.ManagedObjectReference, r types.ManagedObjectReference) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func refString(r types.ManagedObjectReference) string {
	return r.Type + ":" + r.Value
}

// scratch VMs -----------------------------------------------------------------------------------

// scratch makes a VM of its own for an operation that changes one: a linked clone of src-linux
// from its snapshot (the clone kind the existing suite proves), powered on when asked.
func (e *env) scratch(ctx context.Context, name string, on bool) (*object.VirtualMachine, error) {
	vm, err := e.linkedClone(ctx, name, false, nil)
	if err != nil {
		return nil, fmt.Errorf("scratch clone %s: %w", name, err)
	}
	if on {
		if err := e.powerOn(ctx, vm); err != nil {
			return nil, fmt.Errorf("scratch %s power on: %w", name, err)
		}
	}
	return vm, nil
}

func (e *env) linkedClone(ctx context.Context, name string, on bool, cfg *types.VirtualMachineConfigSpec) (*object.VirtualMachine, error) {
	if _, err := e.client(); err != nil {
		return nil, err
	}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	snap, err := src.FindSnapshot(ctx, baseSnap)
	if err != nil {
		return nil, fmt.Errorf("find snapshot %q: %w", baseSnap, err)
	}
	f, err := e.folders()
	if err != nil {
		return nil, err
	}
	spec := types.VirtualMachineCloneSpec{
		Snapshot: snap, PowerOn: on, Config: cfg,
		Location: types.VirtualMachineRelocateSpec{DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsCreateNewChildDiskBacking)},
	}
	t, err := src.Clone(ctx, f.VmFolder, name, spec)
	info, err := e.waitTask(ctx, t, err)
	if err != nil {
		return nil, err
	}
	return object.NewVirtualMachine(e.c, info.Result.(types.ManagedObjectReference)), nil
}

func (e *env) powerOn(ctx context.Context, vm *object.VirtualMachine) error {
	t, err := vm.PowerOn(ctx)
	if err != nil {
		return err
	}
	_, err = t.WaitForResult(ctx, nil)
	return err
}

func (e *env) powerOff(ctx context.Context, vm *object.VirtualMachine) error {
	t, err := vm.PowerOff(ctx)
	if err != nil {
		return err
	}
	_, err = t.WaitForResult(ctx, nil)
	return err
}

// waitTools waits until the guest's tools run (a booted guest), as guest operations need.
func (e *env) waitTools(ctx context.Context, vm *object.VirtualMachine) error {
	return property.Wait(ctx, e.pc(), vm.Reference(), []string{"guest.toolsRunningStatus"}, func(pc []types.PropertyChange) bool {
		for _, ch := range pc {
			if s, ok := ch.Val.(string); ok && s == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
				return true
			}
		}
		return false
	})
}

func (e *env) waitTask(ctx context.Context, t *object.Task, err error) (*types.TaskInfo, error) {
	if err != nil {
		return nil, err
	}
	return t.WaitForResult(ctx, nil)
}

// identity clone: a running clone whose guest sets the IP and host name handed to it in guestinfo
// (the forkscale guest script does; the twin plays it for simulated guests)
const (
	identName = "gov-ident"
	identIP   = "10.20.30.40"
	identHost = "gov-ident"
)

func (e *env) identityClone() (*object.VirtualMachine, error) {
	v, err := e.once("identity clone", func(ctx context.Context) (interface{}, error) {
		vm, err := e.linkedClone(ctx, identName, true, &types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{
			&types.OptionValue{Key: "guestinfo.forkscale.id", Value: identName},
			&types.OptionValue{Key: "guestinfo.forkscale.hostname", Value: identHost},
			&types.OptionValue{Key: "guestinfo.forkscale.ip", Value: identIP},
		}})
		if err != nil {
			return nil, err
		}
		if _, err := vm.WaitForIP(ctx); err != nil {
			return nil, fmt.Errorf("wait for guest IP: %w", err)
		}
		return vm, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*object.VirtualMachine), nil
}
