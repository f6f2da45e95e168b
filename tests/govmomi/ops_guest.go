package main

import (
	"bytes"
	"context"
	"io/ioutil"
	"strings"
	"time"

	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Guest operations as `govc guest.run`/`guest.upload`/`guest.download` and Ansible's
// vmware_vm_shell / vmware_guest_file_operation use them, and datastore files over HTTP.
func guestOps() []op {
	return []op{
		{"guest.process", opGuestProcess},
		{"guest.bad_login", opGuestBadLogin},
		{"guest.file_transfer", opGuestFileTransfer},
		{"guest.directory", opGuestDirectory},
	}
}

func (e *env) guestAuth() types.BaseGuestAuthentication {
	return &types.NamePasswordAuthentication{Username: e.cfg.guestUser, Password: e.cfg.guestPassword}
}

func opGuestProcess(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	pm, err := guest.NewOperationsManager(e.c, src.Reference()).ProcessManager(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	pid, err := pm.StartProgram(ctx, e.guestAuth(), &types.GuestProgramSpec{ProgramPath: "/bin/sh", Arguments: "-c 'exit 0'"})
	if !ck.ok(err, "StartProgramInGuest") {
		return ck.done(nil)
	}
	ck.that(pid > 0, "pid %d", pid)
	var info types.GuestProcessInfo
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		list, err := pm.ListProcesses(ctx, e.guestAuth(), []int64{pid})
		if !ck.ok(err, "ListProcessesInGuest") || !ck.equal("processes listed for one pid", len(list), 1) {
			break
		}
		info = list[0]
		if info.EndTime != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ck.equal("pid", info.Pid, pid)
	ck.that(strings.Contains(info.CmdLine, "/bin/sh") && info.Name != "", "process name %q cmdLine %q", info.Name, info.CmdLine)
	ck.equal("owner", info.Owner, e.cfg.guestUser)
	ck.that(info.EndTime != nil, "the process never ended")
	ck.equal("exitCode", info.ExitCode, int32(0))
	all, err := pm.ListProcesses(ctx, e.guestAuth(), nil)
	if ck.ok(err, "ListProcessesInGuest(all)") {
		ck.that(len(all) >= 1, "listing all processes returned none")
	}
	return ck.done(map[string]interface{}{"pid": pid, "name": info.Name, "exitCode": info.ExitCode, "all": len(all)})
}

func opGuestBadLogin(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	pm, err := guest.NewOperationsManager(e.c, src.Reference()).ProcessManager(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	_, err = pm.StartProgram(ctx, &types.NamePasswordAuthentication{Username: e.cfg.guestUser, Password: "wrong-" + e.cfg.guestPassword},
		&types.GuestProgramSpec{ProgramPath: "/bin/true"})
	ck.equal("fault for a wrong guest password", faultName(err), "InvalidGuestLogin")
	return ck.done(map[string]interface{}{"fault": faultName(err)})
}

func guestFiles(ctx context.Context, e *env) (*guest.FileManager, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	var gom mo.GuestOperationsManager
	if err := e.pc().RetrieveOne(ctx, *e.c.ServiceContent.GuestOperationsManager, []string{"fileManager"}, &gom); err != nil {
		return nil, err
	}
	if gom.FileManager == nil { // govmomi would dereference it unchecked
		return nil, errorf("guestOperationsManager.fileManager is unset")
	}
	return guest.NewOperationsManager(e.c, src.Reference()).FileManager(ctx)
}

func opGuestFileTransfer(ctx context.Context, e *env) (interface{}, error) {
	fm, err := guestFiles(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	content := []byte("hello from govmomi\n")
	path := "/tmp/gov-transfer.txt"
	u, err := fm.InitiateFileTransferToGuest(ctx, e.guestAuth(), path, &types.GuestPosixFileAttributes{}, int64(len(content)), true)
	if !ck.ok(err, "InitiateFileTransferToGuest") {
		return ck.done(map[string]interface{}{"fault": faultName(err)})
	}
	put, err := fm.TransferURL(ctx, u)
	if ck.ok(err, "TransferURL(to guest)") {
		p := soap.DefaultUpload
		p.ContentLength = int64(len(content))
		ck.ok(e.c.Upload(ctx, bytes.NewReader(content), put, &p), "HTTP PUT "+put.Path)
	}
	info, err := fm.InitiateFileTransferFromGuest(ctx, e.guestAuth(), path)
	got := ""
	if ck.ok(err, "InitiateFileTransferFromGuest") {
		ck.equal("size", info.Size, int64(len(content)))
		_, posix := info.Attributes.(*types.GuestPosixFileAttributes)
		ck.that(posix, "attributes are %T, not GuestPosixFileAttributes, for a Linux guest", info.Attributes)
		if get, err := fm.TransferURL(ctx, info.Url); ck.ok(err, "TransferURL(from guest)") {
			body, _, err := e.c.Download(ctx, get, &soap.DefaultDownload)
			if ck.ok(err, "HTTP GET "+get.Path) {
				b, _ := ioutil.ReadAll(body)
				_ = body.Close()
				got = string(b)
			}
		}
	}
	ck.equal("round trip", got, string(content))
	return ck.done(map[string]interface{}{"content": got})
}

func opGuestDirectory(ctx context.Context, e *env) (interface{}, error) {
	fm, err := guestFiles(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	dir := "/tmp/gov-dir"
	if !ck.ok(fm.MakeDirectory(ctx, e.guestAuth(), dir, true), "MakeDirectoryInGuest") {
		return ck.done(nil)
	}
	names := []string{}
	list, err := fm.ListFiles(ctx, e.guestAuth(), "/tmp", 0, 100, "gov-*")
	if ck.ok(err, "ListFilesInGuest") {
		for _, f := range list.Files {
			names = append(names, f.Path+":"+f.Type)
		}
	}
	ck.that(contains(names, "gov-dir:directory"), "ListFilesInGuest(/tmp, gov-*) %v", names)
	ck.ok(fm.DeleteDirectory(ctx, e.guestAuth(), dir, true), "DeleteDirectoryInGuest")
	return ck.done(map[string]interface{}{"files": names})
}

// datastores ------------------------------------------------------------------------------------

func datastoreOps() []op {
	return []op{
		{"datastore.search", opDatastoreSearch},
		{"datastore.file_http", opDatastoreHTTP},
	}
}

func opDatastoreSearch(ctx context.Context, e *env) (interface{}, error) {
	ds, err := e.datastore(dsName)
	if err != nil {
		return nil, err
	}
	b, err := ds.Browser(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	details := &types.FileQueryFlags{FileType: true, FileSize: true, Modification: true, FileOwner: types.NewBool(false)}
	t, err := b.SearchDatastore(ctx, "["+dsName+"] "+srcName, &types.HostDatastoreBrowserSearchSpec{MatchPattern: []string{"*.vmx"}, Details: details})
	info, err := e.waitTask(ctx, t, err)
	files := []string{}
	if ck.ok(err, "SearchDatastore_Task") {
		res, ok := info.Result.(types.HostDatastoreBrowserSearchResults)
		if ck.that(ok, "result is %T", info.Result) {
			ck.equal("folderPath", strings.TrimSuffix(res.FolderPath, "/"), "["+dsName+"] "+srcName)
			for _, f := range res.File {
				fi := f.GetFileInfo()
				files = append(files, fi.Path)
				ck.that(fi.FileSize > 0, "%s size %d", fi.Path, fi.FileSize)
			}
			ck.equal("*.vmx files", files, []string{srcName + ".vmx"})
		}
	}
	t, err = b.SearchDatastoreSubFolders(ctx, "["+dsName+"]", &types.HostDatastoreBrowserSearchSpec{
		MatchPattern: []string{"*.vmdk"}, Query: []types.BaseFileQuery{&types.VmDiskFileQuery{}}, Details: details})
	info, err = e.waitTask(ctx, t, err)
	disks := map[string][]string{}
	if ck.ok(err, "SearchDatastoreSubFolders_Task") {
		res, ok := info.Result.(types.ArrayOfHostDatastoreBrowserSearchResults)
		if ck.that(ok, "result is %T", info.Result) {
			for _, r := range res.HostDatastoreBrowserSearchResults {
				folder := strings.TrimSuffix(r.FolderPath, "/")
				for _, f := range r.File {
					_, isDisk := f.(*types.VmDiskFileInfo)
					ck.that(isDisk, "%s is %T, not a VmDiskFileInfo", f.GetFileInfo().Path, f)
					disks[folder] = append(disks[folder], f.GetFileInfo().Path)
				}
			}
			ck.that(contains(disks["["+dsName+"] "+srcName], srcName+".vmdk"), "sub-folder search found %v", disks)
		}
	}
	return ck.done(map[string]interface{}{"vmx": files, "disks": disks})
}

func opDatastoreHTTP(ctx context.Context, e *env) (interface{}, error) {
	ds, err := e.datastore(dsName)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	vmx := ""
	body, _, err := ds.Download(ctx, srcName+"/"+srcName+".vmx", &soap.DefaultDownload)
	if ck.ok(err, "GET /folder/src-linux/src-linux.vmx") {
		b, _ := ioutil.ReadAll(body)
		_ = body.Close()
		vmx = string(b)
		ck.that(strings.Contains(vmx, `displayName = "`+srcName+`"`), "the .vmx lacks displayName: %q", vmx)
	}
	content := []byte("uploaded by govmomi\n")
	p := soap.DefaultUpload
	p.ContentLength = int64(len(content))
	back := ""
	if ck.ok(ds.Upload(ctx, bytes.NewReader(content), "gov-upload/hello.txt", &p), "PUT /folder/gov-upload/hello.txt") {
		if body, _, err := ds.Download(ctx, "gov-upload/hello.txt", &soap.DefaultDownload); ck.ok(err, "GET the uploaded file") {
			b, _ := ioutil.ReadAll(body)
			_ = body.Close()
			back = string(b)
		}
	}
	ck.equal("upload round trip", back, string(content))
	return ck.done(map[string]interface{}{"vmxBytes": len(vmx), "roundTrip": back})
}

// hosts -----------------------------------------------------------------------------------------

func hostOps() []op {
	return []op{{"host.maintenance", opHostMaintenance}}
}

// idleHost is a host of the default world with no running VM (maintenance mode without DRS
// needs one).
func idleHost(ctx context.Context, e *env) (*object.HostSystem, error) {
	for _, n := range []string{"esx-04", "esx-03"} {
		h, err := e.host(n)
		if err != nil {
			return nil, err
		}
		var hm mo.HostSystem
		if err := e.pc().RetrieveOne(ctx, h.Reference(), []string{"vm"}, &hm); err != nil {
			return nil, err
		}
		busy := false
		if len(hm.Vm) > 0 {
			var vms []mo.VirtualMachine
			if err := e.pc().Retrieve(ctx, hm.Vm, []string{"runtime.powerState"}, &vms); err != nil {
				return nil, err
			}
			for _, v := range vms {
				busy = busy || v.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
			}
		}
		if !busy {
			return h, nil
		}
	}
	return nil, errorf("no host without running VMs")
}

func opHostMaintenance(ctx context.Context, e *env) (interface{}, error) {
	h, err := idleHost(ctx, e)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	read := func() (bool, bool) {
		var hm mo.HostSystem
		if !ck.ok(e.pc().RetrieveOne(ctx, h.Reference(), []string{"runtime", "summary.runtime"}, &hm), "read host") {
			return false, false
		}
		return hm.Runtime.InMaintenanceMode, hm.Summary.Runtime != nil && hm.Summary.Runtime.InMaintenanceMode
	}
	t, err := h.EnterMaintenanceMode(ctx, 0, false, nil)
	_, err = e.waitTask(ctx, t, err)
	if !ck.ok(err, "EnterMaintenanceMode_Task") {
		return ck.done(map[string]interface{}{"host": h.Reference().Value, "fault": faultName(err)})
	}
	in, inSummary := read()
	ck.that(in && inSummary, "runtime.inMaintenanceMode %v, summary.runtime.inMaintenanceMode %v after entering", in, inSummary)
	t, err = h.ExitMaintenanceMode(ctx, 0)
	_, err = e.waitTask(ctx, t, err)
	ck.ok(err, "ExitMaintenanceMode_Task")
	out, _ := read()
	ck.that(!out, "still in maintenance mode after exiting")
	evs, err := e.eventTypes(ctx, h.Reference())
	if ck.ok(err, "host events") {
		ck.that(contains(evs, "EnteredMaintenanceModeEvent") && contains(evs, "ExitMaintenanceModeEvent"), "maintenance events %v", evs)
	}
	return ck.done(map[string]interface{}{"host": h.Reference().Value, "entered": in, "events": evs})
}
