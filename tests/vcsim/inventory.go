package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// inventory is what populate needs of the model: DC0's folders, the cluster's pool and hosts.
type inventory struct {
	ctx     context.Context
	c       *vim25.Client
	finder  *find.Finder
	folders *object.DatacenterFolders
	pool    *object.ResourcePool
	hosts   []*object.HostSystem
	names   []string
}

func newInventory(ctx context.Context, c *vim25.Client) *inventory {
	return &inventory{ctx: ctx, c: c, finder: find.NewFinder(c, false)}
}

func (inv *inventory) load() error {
	dc, err := inv.finder.Datacenter(inv.ctx, "DC0")
	if err != nil {
		return err
	}
	inv.finder.SetDatacenter(dc)
	if inv.folders, err = dc.Folders(inv.ctx); err != nil {
		return err
	}
	cluster, err := inv.finder.ClusterComputeResource(inv.ctx, "DC0_C0")
	if err != nil {
		return err
	}
	if inv.pool, err = cluster.ResourcePool(inv.ctx); err != nil {
		return err
	}
	if inv.hosts, err = cluster.Hosts(inv.ctx); err != nil {
		return err
	}
	for _, h := range inv.hosts {
		name, err := h.ObjectName(inv.ctx)
		if err != nil {
			return err
		}
		inv.names = append(inv.names, name)
	}
	return nil
}

func (inv *inventory) hostNames() []string { return inv.names }

// backing is the NIC backing for a port group: a network backing (by deviceName) for a standard
// one, a distributed port backing (switch uuid + portgroup key) for a DVS one.
func (inv *inventory) backing(name string) (types.BaseVirtualDeviceBackingInfo, error) {
	net, err := inv.finder.Network(inv.ctx, name)
	if err != nil {
		return nil, err
	}
	return net.EthernetCardBackingInfo(inv.ctx)
}

func datastoreDir(dir, name string) string { return filepath.Join(dir, "datastore-"+name) }

// addDatastore mounts one more local datastore, `name`, on every host of the cluster.
func addDatastore(ctx context.Context, inv *inventory, name, dir string) error {
	path := datastoreDir(dir, name)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	for _, host := range inv.hosts {
		dss, err := host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		if _, err := dss.CreateLocalDatastore(ctx, name, path); err != nil {
			return fmt.Errorf("datastore %s on %s: %w", name, host.Reference().Value, err)
		}
	}
	return nil
}
