// Command vcsim serves govmomi's vSphere simulator (Debian's golang-github-vmware-govmomi-dev)
// as an independent witness for forkscale's tests: a vCenter model that was not written by us.
//
// Inventory (VPX model): datacenter DC0, cluster DC0_C0 with -hosts hosts, datastore LocalDS_0
// plus one named by -datastore (default ds-ssd) on every host, the standard port group
// "VM Network", a distributed switch DVS0 with port group DC0_DVPG0, and a golden VM (-golden)
// with a disk on LocalDS_0, one NIC (-golden-nic, default e1000: vcsim's own default NIC class)
// on -golden-network, and a snapshot (-snapshot).
//
// It listens on 127.0.0.1:-port with TLS (an ECDSA certificate for 127.0.0.1/localhost made at
// start, written to <dir>/ca.pem), prints one JSON line (url, user, password, ca_file, ...) on
// stdout once it serves, and runs until SIGINT/SIGTERM, when it removes what it wrote.
//
// Built in GOPATH mode: GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim main.go
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	port        int
	dir         string
	user        string
	hosts       int
	datastore   string
	golden      string
	goldenNic   string
	goldenNet   string
	goldenPower string
	goldenKey   int
	snapshot    string
	apiVersion  string
	dropExtra   bool
	fillInfo    bool
	isolate     bool
	goldenExtra listFlag
	vms         listFlag
	delays      listFlag
}

func parseFlags() options {
	var o options
	flag.IntVar(&o.port, "port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	flag.StringVar(&o.dir, "dir", "", "directory for the certificate and the datastores (default: a new temp dir)")
	flag.StringVar(&o.user, "user", "administrator@vsphere.local", "the only user name that may log in")
	flag.IntVar(&o.hosts, "hosts", 4, "hosts in the cluster DC0_C0")
	flag.StringVar(&o.datastore, "datastore", "ds-ssd", "name of a second datastore on every host (\"\": none)")
	flag.StringVar(&o.golden, "golden", "golden", "name of the golden VM (\"\": none)")
	flag.StringVar(&o.goldenNic, "golden-nic", "e1000", "NIC class of the golden VM: e1000, e1000e, vmxnet3, pcnet32")
	flag.StringVar(&o.goldenNet, "golden-network", "VM Network", "port group of the golden VM's NIC (standard or distributed)")
	flag.IntVar(&o.goldenKey, "golden-nic-key", 4000, "device key of the golden VM's NIC (ESX numbers the first NIC 4000)")
	flag.StringVar(&o.goldenPower, "golden-power", "on", "power state of the golden VM: on or off")
	flag.StringVar(&o.snapshot, "snapshot", "base", "snapshot of the golden VM (\"\": none)")
	flag.StringVar(&o.apiVersion, "api-version", "", "about.apiVersion to report (default: the model's, 6.5)")
	flag.BoolVar(&o.dropExtra, "drop-extra-config", false, "CloneVM_Task of the golden VM ignores spec.config.extraConfig")
	flag.BoolVar(&o.fillInfo, "fill-device-info", false, "CloneVM_Task of the golden VM tolerates device edits without "+
		"deviceInfo (vcsim 0.24 panics on them, simulator/virtual_machine.go:1347)")
	flag.BoolVar(&o.isolate, "isolate-clone-devices", false, "CloneVM_Task of the golden VM, or of any VM, gives the clone copies of the "+
		"source's devices (vcsim 0.24 shares them, so a clone renames its source's disk)")
	flag.Var(&o.goldenExtra, "golden-extra", "key=value set in the golden VM's extraConfig (repeatable)")
	flag.Var(&o.delays, "delay", "Method=milliseconds: vcsim sleeps that long before serving each call of the "+
		"method, e.g. CloneVM_Task=500 (repeatable)")
	flag.Var(&o.vms, "vm", "another VM in DC0's VM folder, as name or name:off (repeatable)")
	flag.Parse()
	return o
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	o := parseFlags()
	if err := run(o); err != nil {
		log.Fatalf("vcsim: %s", err)
	}
}

func run(o options) error {
	// Before anything is written: a SIGTERM that comes as soon as the JSON line is out must still
	// run the clean-up below, not kill the process.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "vcsim-")
		if err != nil {
			return err
		}
		dir = d
		defer os.RemoveAll(d)
	}
	// The model puts its datastores in os.TempDir(): keep them under dir.
	if err := os.Setenv("TMPDIR", dir); err != nil {
		return err
	}
	password, err := randomHex(12)
	if err != nil {
		return err
	}
	if p := os.Getenv("VCSIM_PASSWORD"); p != "" {
		password = p
	}
	cert, caFile, err := makeCertificate(dir)
	if err != nil {
		return err
	}
	defer os.Remove(caFile)
	if o.datastore != "" {
		defer os.RemoveAll(datastoreDir(dir, o.datastore))
	}

	model := simulator.VPX()
	model.Host = 0 // no standalone host: every host is in the cluster
	model.ClusterHost = o.hosts
	model.Machine = 0 // the model's own VMs (DC0_C0_RP0_VM0...) are not wanted: we make ours
	model.Autostart = false
	if o.apiVersion != "" {
		model.ServiceContent.About.ApiVersion = o.apiVersion
	}
	if err := model.Create(); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	for _, d := range o.delays {
		name, ms, _ := strings.Cut(d, "=")
		n, err := strconv.Atoi(ms)
		if err != nil || name == "" {
			return fmt.Errorf("-delay %q: want Method=milliseconds", d)
		}
		if model.DelayConfig.MethodDelay == nil {
			model.DelayConfig.MethodDelay = map[string]int{}
		}
		model.DelayConfig.MethodDelay[name] = n // read per call (simulator.go Service.call)
	}
	defer model.Remove()

	ctx := context.Background()
	c, err := vim25.NewClient(ctx, model.Service) // in-process, internal session
	if err != nil {
		return err
	}
	inv, err := populate(ctx, c, o, dir)
	if err != nil {
		return err
	}

	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{Host: fmt.Sprintf("127.0.0.1:%d", o.port), User: url.UserPassword(o.user, password)}
	server := model.Service.NewServer()
	defer server.Close()
	if o.isolate {
		// (its CloneVM_Task delay is slept here, before the per-source lock, as vcsim would have)
		delay := time.Duration(model.DelayConfig.MethodDelay["CloneVM_Task"]) * time.Millisecond
		delete(model.DelayConfig.MethodDelay, "CloneVM_Task")
		server.Config.Handler = isolatingClones(server.Config.Handler, delay)
	}

	u := *server.URL
	u.User = nil
	out := map[string]interface{}{
		"url": u.String(), "user": o.user, "password": password, "ca_file": caFile, "pid": os.Getpid(),
		"port": server.URL.Port(), "api_version": model.ServiceContent.About.ApiVersion, "dir": dir,
	}
	for k, v := range inv {
		out[k] = v
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))

	<-sig
	return nil
}

// populate adds the named datastore, the golden VM and the extra VMs; it returns what it made.
func populate(ctx context.Context, c *vim25.Client, o options, dir string) (map[string]interface{}, error) {
	finder := newInventory(ctx, c)
	if err := finder.load(); err != nil {
		return nil, err
	}
	if o.datastore != "" {
		if err := addDatastore(ctx, finder, o.datastore, dir); err != nil {
			return nil, err
		}
	}
	out := map[string]interface{}{"hosts": finder.hostNames(), "datastores": []string{"LocalDS_0"},
		"networks": []string{"VM Network", "DC0_DVPG0"}}
	if o.datastore != "" {
		out["datastores"] = []string{"LocalDS_0", o.datastore}
	}
	if o.golden != "" {
		g, err := makeGolden(ctx, finder, o)
		if err != nil {
			return nil, fmt.Errorf("golden VM: %w", err)
		}
		out["golden"] = g
	}
	var names []string
	for _, spec := range o.vms {
		name, power := spec, "on"
		if i := strings.LastIndex(spec, ":"); i > 0 {
			name, power = spec[:i], spec[i+1:]
		}
		vm, err := createVM(ctx, finder, name, "e1000", "VM Network", 4000, nil)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", name, err)
		}
		if power == "on" {
			if err := powerOn(ctx, vm); err != nil {
				return nil, err
			}
		}
		names = append(names, name)
	}
	out["vms"] = names
	return out, nil
}

func makeGolden(ctx context.Context, inv *inventory, o options) (map[string]interface{}, error) {
	var extra []types.BaseOptionValue
	for _, kv := range o.goldenExtra {
		k, v, _ := strings.Cut(kv, "=")
		extra = append(extra, &types.OptionValue{Key: k, Value: v})
	}
	vm, err := createVM(ctx, inv, o.golden, o.goldenNic, o.goldenNet, int32(o.goldenKey), extra)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{"name": o.golden, "moref": vm.Reference().Value, "nic": o.goldenNic,
		"nic_key": o.goldenKey, "power": o.goldenPower}
	if o.snapshot != "" {
		task, err := vm.CreateSnapshot(ctx, o.snapshot, "golden image", false, false)
		if err != nil {
			return nil, err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return nil, err
		}
		out["snapshot"] = info.Result.(types.ManagedObjectReference).Value
	}
	if o.goldenPower == "on" {
		if err := powerOn(ctx, vm); err != nil {
			return nil, err
		}
	}
	if o.dropExtra || o.fillInfo || o.isolate {
		obj := simulator.Map.Get(vm.Reference()).(*simulator.VirtualMachine)
		simulator.Map.Put(&goldenVM{VirtualMachine: *obj, dropExtra: o.dropExtra, fillInfo: o.fillInfo, isolate: o.isolate})
	}
	return out, nil
}

// createVM makes a VM in DC0's VM folder on the first host: a 1 GiB disk on LocalDS_0 and one NIC
// (class nicClass, device key nicKey) on `network`.
func createVM(ctx context.Context, inv *inventory, name, nicClass, network string, nicKey int32,
	extra []types.BaseOptionValue) (*object.VirtualMachine, error) {
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
		fmt.Sprintf("[LocalDS_0] %s/%s.vmdk", name, name))
	disk.CapacityInKB = 1024 * 1024
	devices = append(devices, disk)
	backing, err := inv.backing(network)
	if err != nil {
		return nil, err
	}
	class := map[string]string{"e1000": "e1000", "e1000e": "e1000e", "vmxnet3": "vmxnet3", "pcnet32": "pcnet32"}[nicClass]
	if class == "" {
		return nil, fmt.Errorf("unknown NIC class %q", nicClass)
	}
	nic, err := devices.CreateEthernetCard(class, backing)
	if err != nil {
		return nil, err
	}
	// object.EthernetCardTypes gives a random key; vcsim keeps a positive one as it is
	nic.GetVirtualDevice().Key = nicKey
	devices = append(devices, nic)
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return nil, err
	}
	spec := types.VirtualMachineConfigSpec{
		Name: name, GuestId: string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs: 2, MemoryMB: 2048, DeviceChange: changes, ExtraConfig: extra,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
	}
	host := inv.hosts[0]
	task, err := inv.folders.VmFolder.CreateVM(ctx, spec, inv.pool, host)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return nil, err
	}
	return object.NewVirtualMachine(inv.c, info.Result.(types.ManagedObjectReference)), nil
}

func powerOn(ctx context.Context, vm *object.VirtualMachine) error {
	task, err := vm.PowerOn(ctx)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

// goldenVM is the golden VM with the opt-in CloneVM_Task changes (-drop-extra-config,
// -fill-device-info, -isolate-clone-devices). Only the golden VM is wrapped: clones of clones get
// vcsim's behaviour as shipped. (PerformanceManager.QueryPerf and snapshot removal on the golden
// expect the plain *simulator.VirtualMachine and do not work with these flags.)
//
// The wrapper embeds the VM by value: vcsim's ContainerView walks the first field down to the mo
// type and panics on a pointer (simulator/property_collector.go getManagedObject).
type goldenVM struct {
	simulator.VirtualMachine
	dropExtra, fillInfo, isolate bool
}

func (vm *goldenVM) CloneVMTask(ctx *simulator.Context, req *types.CloneVM_Task) soap.HasFault {
	if req.Spec.Config != nil && vm.dropExtra {
		req.Spec.Config.ExtraConfig = nil
	}
	if vm.fillInfo {
		fillDeviceInfo(req.Spec.Location.DeviceChange)
		if req.Spec.Config != nil {
			fillDeviceInfo(req.Spec.Config.DeviceChange)
		}
	}
	if vm.isolate {
		own := vm.Config.Hardware.Device
		copied, err := copyDevices(own)
		if err != nil {
			return &methods.CloneVM_TaskBody{Fault_: simulator.Fault(err.Error(), &types.SystemError{Reason: err.Error()})}
		}
		vm.Config.Hardware.Device = copied
		defer func() { vm.Config.Hardware.Device = own }()
	}
	return vm.VirtualMachine.CloneVMTask(ctx, req)
}

// isolatingClones gives -isolate-clone-devices its effect on clones of any VM, not only of the golden
// (a VM the golden's clones are cloned from, e.g. a replica for linked clones): vcsim's CloneVM_Task
// hands the source's own device objects to the clone (and renames the source's disk), so each
// CloneVM_Task of a plain VM runs, one at a time per source, with the source holding copies of its
// devices, and its own given back afterwards. The golden VM isolates itself (goldenVM). A -delay of
// CloneVM_Task is slept here, before that lock, so clone calls are still delayed side by side; as
// vcsim binds a call to its session before its delay, a Logout waits until the clone calls its
// session sent before it have been served (a client that gave up waiting for an answer and logged
// out still gets its clone, as from vCenter).
func isolatingClones(next http.Handler, delay time.Duration) http.Handler {
	var mu sync.Mutex
	locks := map[string]*sync.Mutex{}
	pending := map[string]*sync.WaitGroup{} // session cookie -> its clone calls not yet served
	sent := func(r *http.Request) *sync.WaitGroup {
		cookie, err := r.Cookie(soap.SessionCookieName)
		if err != nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		wg := pending[cookie.Value]
		if wg == nil {
			wg = &sync.WaitGroup{}
			pending[cookie.Value] = wg
		}
		return wg
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err == nil && bytes.Contains(body, []byte("<Logout")) {
			if wg := sent(r); wg != nil {
				wg.Wait()
			}
		}
		if err != nil || !bytes.Contains(body, []byte("CloneVM_Task")) {
			next.ServeHTTP(w, r)
			return
		}
		if wg := sent(r); wg != nil {
			wg.Add(1)
			defer wg.Done()
		}
		time.Sleep(delay)
		m := cloneSource.FindSubmatch(body)
		var vm *simulator.VirtualMachine
		if m != nil {
			vm, _ = simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: string(m[1])}).(*simulator.VirtualMachine)
		}
		if vm == nil {
			next.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		lock := locks[string(m[1])]
		if lock == nil {
			lock = &sync.Mutex{}
			locks[string(m[1])] = lock
		}
		mu.Unlock()
		lock.Lock()
		defer lock.Unlock()
		own := vm.Config.Hardware.Device
		if copied, err := copyDevices(own); err == nil {
			vm.Config.Hardware.Device = copied
			defer func() { vm.Config.Hardware.Device = own }()
		}
		next.ServeHTTP(w, r)
	})
}

var cloneSource = regexp.MustCompile(`<_this[^>]*type="VirtualMachine"[^>]*>([^<]+)</_this>`)

func fillDeviceInfo(changes []types.BaseVirtualDeviceConfigSpec) {
	for _, c := range changes {
		spec := c.GetVirtualDeviceConfigSpec()
		if d := spec.Device.GetVirtualDevice(); spec.Operation == types.VirtualDeviceConfigSpecOperationEdit && d.DeviceInfo == nil {
			d.DeviceInfo = &types.Description{}
		}
	}
}

// copyDevices deep-copies a device list through the SOAP encoding.
func copyDevices(devices []types.BaseVirtualDevice) ([]types.BaseVirtualDevice, error) {
	data, err := xml.Marshal(types.ArrayOfVirtualDevice{VirtualDevice: devices})
	if err != nil {
		return nil, err
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.TypeFunc = types.TypeFunc()
	var out types.ArrayOfVirtualDevice
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out.VirtualDevice, nil
}

// makeCertificate writes a self-signed ECDSA certificate for 127.0.0.1 and localhost to dir/ca.pem.
// (The simulator's built-in one is RSA-1024, which OpenSSL at security level 2 refuses.)
func makeCertificate(dir string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vcsim witness", Organization: []string{"forkscale tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
