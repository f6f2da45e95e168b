"""Build a twin from a world description (the documented default, or a YAML file)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pyVmomi import vim, vmodl

from . import fields, filemgr, methods, search  # noqa: F401  (register the service managers' handlers)
from .browser import DatastoreBrowser
from .compute import EnvironmentBrowser
from .inventory import (
    Cluster,
    Datacenter,
    Datastore,
    DVPortgroup,
    DVSwitch,
    Folder,
    GiB,
    Host,
    Network,
    ResourcePool,
)
from .managers import fill_content
from .memory import MemoryModel
from .mo import Manager
from .ops.power import power_on_now
from .ops.snapshots import take_snapshot
from .perf import manager as perf_manager
from .service import CURRENT_SESSION, Twin
from .views import session_views
from .vm import NIC_CLASSES, VM, Disk, Nic
from .world import Settings, World

DEFAULT_WORLD: dict[str, Any] = {
    "datacenter": "dc1",
    "cluster": "cluster1",
    "hosts": [{"name": f"esx-0{i}", "memory_gib": 128, "cpu_cores": 32} for i in range(1, 5)],
    "datastores": [{"name": "ds-ssd", "capacity_gib": 4096}, {"name": "ds-hdd", "capacity_gib": 16384}],
    "networks": ["VM Network", "isolated"],
    "dvs": {"name": "dvs1", "portgroups": ["dvpg-vdi"]},
    "folders": ["forkscale"],
    "vms": [
        {"name": "src-linux", "host": "esx-01", "datastore": "ds-ssd", "memory_mb": 4096, "cpus": 2,
         "disk_gib": 40, "guest_id": "ubuntu64Guest", "guest_full_name": "Ubuntu Linux (64-bit)",
         "network": "VM Network", "snapshots": ["base"], "power": "on"},
        {"name": "src-win", "host": "esx-01", "datastore": "ds-ssd", "memory_mb": 8192, "cpus": 2,
         "disk_gib": 60, "guest_id": "windows9_64Guest", "guest_full_name": "Microsoft Windows 10 (64-bit)",
         "network": "dvpg-vdi", "snapshots": ["base"], "power": "on"},
    ],
    # simulated seconds, multiplied by --time-scale
    "latency": {"instant": 1.0, "linked": 5.0, "full": 60.0, "power_on": 2.0, "power_off": 1.0, "destroy": 1.0,
                "reconfigure": 0.5, "snapshot": 2.0, "check": 0.2, "guest_boot": 30.0, "guest_resume": 2.0,
                "freeze": 1.0, "suspend": 3.0, "guest_shutdown": 5.0, "vmotion": 8.0, "disk_copy_gib_s": 1.0,
                "promote": 2.0, "maintenance": 2.0, "register": 1.0, "create": 2.0, "search": 0.2,
                "jitter": 0.2},
    "limits": {"vcenter": 640, "per_host": 16},
    "memory": {"write_rate_mb_s": 2.0, "divergence_cap": 0.3, "touched_fraction": 0.6},
    "guest": {"user": "root", "password": "vmfork-guest"},
    "session_idle_s": 1800,
    "faults": {"failure_rate": {}},
}


def load_world(path: str | Path | None) -> dict[str, Any]:
    """The default world, with a YAML file's top-level keys (and latency/limits entries) on top."""
    world = copy.deepcopy(DEFAULT_WORLD)
    if path is None:
        return world
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a world file is a mapping of keys like {sorted(DEFAULT_WORLD)}")
    unknown = set(raw) - set(DEFAULT_WORLD)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_WORLD)}")
    for key, val in raw.items():
        if isinstance(world.get(key), dict) and isinstance(val, dict) and key in ("latency", "limits", "memory",
                                                                                   "guest", "faults"):
            world[key].update(val)
        else:
            world[key] = val
    return world


def settings(spec: dict[str, Any]) -> Settings:
    """The world's settings from a world description."""
    return Settings(latencies=dict(spec["latency"]), memory=MemoryModel(**spec["memory"]),
                    guest_credentials=(spec["guest"]["user"], spec["guest"]["password"]),
                    vcenter_limit=int(spec["limits"]["vcenter"]), host_limit=int(spec["limits"]["per_host"]),
                    failure_rates=dict(spec["faults"].get("failure_rate") or {}))


def build(spec: dict[str, Any], *, user: str, password: str, time_scale: float = 1.0, seed: int = 0) -> Twin:
    world = World(time_scale=time_scale, seed=seed, settings=settings(spec))
    root = world.add(Folder(world, "group-d1", "Datacenters", None, ["Folder", "Datacenter"]))
    twin = Twin(world, root, user=user, password=password, session_idle_s=float(spec["session_idle_s"]))
    dc = world.add(Datacenter(world, "datacenter-1", spec["datacenter"], root))
    root.entries.append(dc)
    dc.vm_folder = _folder(world, "group-v1", "vm", dc, ["Folder", "VirtualMachine", "VirtualApp"])
    dc.host_folder = _folder(world, "group-h1", "host", dc, ["Folder", "ComputeResource"])
    dc.datastore_folder = _folder(world, "group-s1", "datastore", dc, ["Folder", "Datastore"])
    dc.network_folder = _folder(world, "group-n1", "network", dc, ["Folder", "Network", "DistributedVirtualSwitch"])

    cluster = world.add(Cluster(world, "domain-c1", spec["cluster"], dc.host_folder))
    dc.host_folder.entries.append(cluster)
    cluster.root_pool = world.add(ResourcePool(world, world.new_id("resgroup"), "Resources", cluster, cluster))
    cluster.env_browser = world.add(EnvironmentBrowser(world, f"envbrowser-{cluster.moid}", cluster))
    datastores = _datastores(world, dc, spec)
    networks = _networks(world, dc, spec)
    hosts = _hosts(world, cluster, spec, datastores, networks)
    for name in spec["folders"]:
        dc.vm_folder.entries.append(_folder(world, world.new_id("group-v"), name, dc.vm_folder,
                                            ["Folder", "VirtualMachine"]))
    for v in spec["vms"]:
        make_vm(world, v, folder=dc.vm_folder, host=hosts[v["host"]], pool=cluster.root_pool,
                datastore=datastores[v["datastore"]], network=networks[v["network"]])
    _managers(twin)
    return twin


def _datastores(world: World, dc: Datacenter, spec: dict[str, Any]) -> dict[str, Datastore]:
    datastores = {}
    for d in spec["datastores"]:
        ds = world.add(Datastore(world, world.new_id("datastore"), d["name"], dc.datastore_folder,
                                 capacity=int(d["capacity_gib"] * GiB)))
        dc.datastore_folder.entries.append(ds)
        datastores[ds.name] = ds
        ds.browser = world.add(DatastoreBrowser(world, f"datastoreBrowser-{ds.moid}", [ds]))
    return datastores


def _networks(world: World, dc: Datacenter, spec: dict[str, Any]) -> dict[str, Network]:
    networks: dict[str, Network] = {}
    for name in spec["networks"]:
        net = world.add(Network(world, world.new_id("network"), name, dc.network_folder))
        dc.network_folder.entries.append(net)
        networks[name] = net
    if spec.get("dvs"):
        switch = world.add(DVSwitch(world, world.new_id("dvs"), spec["dvs"]["name"], dc.network_folder))
        dc.network_folder.entries.append(switch)
        for name in spec["dvs"].get("portgroups", []):
            pg = world.add(DVPortgroup(world, world.new_id("dvportgroup"), name, dc.network_folder, switch))
            switch.portgroups.append(pg)
            dc.network_folder.entries.append(pg)
            networks[name] = pg
    return networks


def _hosts(world: World, cluster: Cluster, spec: dict[str, Any], datastores: dict[str, Datastore],
           networks: dict[str, Network]) -> dict[str, Host]:
    hosts = {}
    for h in spec["hosts"]:
        host = Host(world, world.new_id("host"), h["name"], cluster, memory_bytes=int(h["memory_gib"] * GiB),
                    cpu_cores=int(h.get("cpu_cores", 32)))
        host.datastores = list(datastores.values())
        host.networks = list(networks.values())
        world.add(host)
        cluster.hosts.append(host)
        hosts[host.name] = host
        for ds in datastores.values():
            ds.hosts.append(host)
        host.attach()
    return hosts


def _folder(world: World, moid: str, name: str, parent: Any, child_type: list[str]) -> Folder:
    f = Folder(world, moid, name, parent, child_type)
    world.add(f)
    return f


def make_vm(world: World, v: dict[str, Any], *, folder: Folder, host: Host, pool: ResourcePool,
            datastore: Datastore, network: Network) -> VM:
    vm = VM(world, world.new_id("vm"), v["name"], folder, host=host, pool=pool, datastore=datastore,
            memory_mb=int(v["memory_mb"]), num_cpu=int(v["cpus"]), guest_id=v["guest_id"],
            guest_full_name=v["guest_full_name"])
    capacity = int(v["disk_gib"] * GiB)
    base = world.disks.create(f"[{datastore.name}] {vm.name}/{vm.name}.vmdk", datastore, capacity,
                              size=int(capacity * 0.25))
    world.disks.retain(base)
    vm.disks.append(Disk(key=2000, capacity_kb=capacity // 1024, top=base))
    kind = v.get("nic_type", "vmxnet3")
    if kind not in NIC_CLASSES:
        raise ValueError(f"vm {v['name']}: nic_type {kind!r} is not one of {sorted(NIC_CLASSES)}")
    vm.nics.append(Nic(key=4000, mac=world.new_mac(), network=network, kind=kind))
    world.add(vm)
    folder.entries.append(vm)
    for snap in v.get("snapshots", []):
        take_snapshot(vm, snap, "created with the world", memory=False)
    if v.get("power", "on") == "on":
        power_on_now(vm, boot=False)
    return vm


def _managers(twin: Twin) -> None:
    """The ServiceInstance's content: the managers, each a singleton object."""
    world = twin.world

    def add(moid: str, kind: type, *, computed: dict[str, Callable[[], Any]] | None = None, **props: Any) -> Manager:
        return world.add(Manager(world, moid, kind, computed=computed, **props))

    about = vim.AboutInfo(name="VMware vCenter Server", fullName="VMware vCenter Server 8.0.3 build-24022515 (forkscale twin)",
                          vendor="VMware, Inc.", version="8.0.3", build="24022515", localeVersion="INTL",
                          localeBuild="000", osType="linux-x64", productLineId="vpx", apiType="VirtualCenter",
                          apiVersion="8.0.3.0", instanceUuid=twin.instance_uuid, licenseProductName="VMware VirtualCenter Server",
                          licenseProductVersion="8.0")
    view_mgr = add("ViewManager", vim.view.ViewManager,
                   computed={"viewList": lambda: session_views(CURRENT_SESSION.get())})
    session_mgr = add("SessionManager", vim.SessionManager, computed={
        "sessionList": lambda: [s.user_session() for s in twin.sessions.values()],
        "currentSession": _current_session})
    task_mgr = add("TaskManager", vim.TaskManager, computed={"recentTask": world.tasks.recent_refs}, maxCollector=32)
    world.tasks.manager = task_mgr
    search_index = add("SearchIndex", vim.SearchIndex)
    perf = perf_manager(world)
    process_mgr = add("ProcessManager", vim.vm.guest.ProcessManager)
    file_mgr = add("guestOperationsFileManager", vim.vm.guest.FileManager)
    guest_auth = add("guestOperationsAuthManager", vim.vm.guest.AuthManager)
    guest_ops = add("guestOperationsManager", vim.vm.guest.GuestOperationsManager, processManager=process_mgr.ref,
                    fileManager=file_mgr.ref, authManager=guest_auth.ref)
    checker = add("ProvChecker", vim.vm.check.ProvisioningChecker)
    custom = add("CustomFieldsManager", vim.CustomFieldsManager, computed={"field": world.custom_fields.sorted_defs})
    setting = add("VpxSettings", vim.option.OptionManager, setting=[], supportedOption=[])
    users = add("UserDirectory", vim.UserDirectory, domainList=["vsphere.local"])
    auth = add("AuthorizationManager", vim.AuthorizationManager, roleList=[], privilegeList=[])
    license_mgr = add("LicenseManager", vim.LicenseManager, licenses=[])
    ext = add("ExtensionManager", vim.ExtensionManager, extensionList=[])
    files = add("FileManager", vim.FileManager)
    disks = add("virtualDiskManager", vim.VirtualDiskManager)
    ovf = add("OvfManager", vim.OvfManager)
    twin.si.props["content"] = vim.ServiceInstanceContent(
        rootFolder=twin.root.ref, propertyCollector=vmodl.query.PropertyCollector("propertyCollector"),
        viewManager=view_mgr.ref, about=about, setting=setting.ref, userDirectory=users.ref,
        sessionManager=session_mgr.ref, authorizationManager=auth.ref, perfManager=perf.ref, searchIndex=search_index.ref,
        taskManager=task_mgr.ref, eventManager=twin.events.manager.ref, customFieldsManager=custom.ref,
        fileManager=files.ref, virtualDiskManager=disks.ref, guestOperationsManager=guest_ops.ref,
        licenseManager=license_mgr.ref, extensionManager=ext.ref, ovfManager=ovf.ref,
        vmProvisioningChecker=checker.ref)
    twin.si.computed["serverClock"] = lambda: datetime.now(tz=UTC)
    twin.si.props["capability"] = vim.Capability(provisioningSupported=True, multiHostSupported=True,
                                                 userShellAccessSupported=False)
    fill_content(twin)


def _current_session() -> Any:
    session = CURRENT_SESSION.get()
    return session.user_session() if session is not None else None
