"""The twin's PropertyCollector, ContainerView and sessions, driven by stock pyVmomi over TLS.

Paging, traversal, property paths, update semantics (enter/modify/leave, versions, truncation,
timeouts) and the one-wait-per-collector rule, including two sessions waiting at once.
"""

from __future__ import annotations

import threading
import time

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import connect, find_vm

PC = vmodl.query.PropertyCollector



def instant_clone(si, src, name, config=None):
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec(),
                                                         config=config or []))
    WaitForTask(task, si=si)
    return task.info.result


def vms_spec(view, paths):
    """A FilterSpec over every VM in a ContainerView."""
    return PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=paths)])


def one_spec(obj, paths, kind=vim.VirtualMachine):
    return PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj)], propSet=[PC.PropertySpec(type=kind, pathSet=paths)])


def wait(pc, version, max_wait=5, max_updates=None):
    return pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=max_wait, maxObjectUpdates=max_updates))


def changes_by_object(update):
    out = {}
    for fs in update.filterSet:
        for ou in fs.objectSet:
            out[ou.obj._moId] = (ou.kind, {c.name: c.val for c in ou.changeSet})
    return out


def entity_view(si, kinds, recursive=True, container=None):
    return si.content.viewManager.CreateContainerView(container or si.content.rootFolder, kinds, recursive)


# RetrievePropertiesEx --------------------------------------------------------------------------
def test_retrieve_pages_with_continue_and_tokens_are_single_use(si):
    view = entity_view(si, [vim.ManagedEntity])
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=[PC.PropertySpec(type=vim.ManagedEntity, pathSet=["name"])])
    pc = si.content.propertyCollector
    total = len(view.view)
    assert total > 10
    first = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=4))
    assert len(first.objects) == 4 and first.token
    seen = [oc.obj._moId for oc in first.objects]
    token = first.token
    pages = 1
    while token:
        page = pc.ContinueRetrievePropertiesEx(token)
        assert len(page.objects) <= 4  # later pages keep the first call's page size
        seen += [oc.obj._moId for oc in page.objects]
        pages += 1
        with pytest.raises(vmodl.fault.InvalidArgument):
            pc.ContinueRetrievePropertiesEx(token)  # a token is good for one call only
        token = page.token
    assert pages == -(-total // 4)
    assert sorted(seen) == sorted(e._moId for e in view.view)
    assert all(oc.propSet[0].name == "name" for oc in first.objects)
    # a cancelled retrieval's token is gone too
    again = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=2))
    pc.CancelRetrievePropertiesEx(again.token)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pc.ContinueRetrievePropertiesEx(again.token)
    # without maxObjects everything comes back in one page
    whole = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    assert len(whole.objects) == total and whole.token is None


def test_container_view_recursion_and_type_filters(si):
    content = si.content
    top = entity_view(si, [], recursive=False)
    assert [e.name for e in top.view] == ["dc1"]
    hosts = entity_view(si, [vim.HostSystem])
    assert sorted(h.name for h in hosts.view) == ["esx-01", "esx-02", "esx-03", "esx-04"]
    assert entity_view(si, [vim.HostSystem], recursive=False).view == []
    dc = top.view[0]
    shallow = entity_view(si, [vim.Folder], recursive=False, container=dc.vmFolder)
    assert [f.name for f in shallow.view] == ["forkscale"]
    shallow_vms = entity_view(si, [vim.VirtualMachine], recursive=False, container=dc.vmFolder)
    assert sorted(v.name for v in shallow_vms.view) == ["src-linux", "src-win"]
    mixed = entity_view(si, [vim.Datastore, vim.Network])
    kinds = {type(e).__name__ for e in mixed.view}
    assert kinds == {"vim.Datastore", "vim.Network", "vim.dvs.DistributedVirtualPortgroup"}
    assert mixed.type == ["Datastore", "Network"] and mixed.recursive is True
    assert mixed.container == content.rootFolder
    mixed.DestroyView()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        _ = mixed.view


def test_traversal_specs_from_the_root_folder_reach_every_vm(si):
    sel = PC.SelectionSpec
    ts = PC.TraversalSpec
    specs = [
        ts(name="folder", type=vim.Folder, path="childEntity", skip=False,
           selectSet=[sel(name="folder"), sel(name="dc_vm"), sel(name="dc_host"), sel(name="cr_host")]),
        ts(name="dc_vm", type=vim.Datacenter, path="vmFolder", skip=False, selectSet=[sel(name="folder")]),
        ts(name="dc_host", type=vim.Datacenter, path="hostFolder", skip=False, selectSet=[sel(name="folder")]),
        ts(name="cr_host", type=vim.ComputeResource, path="host", skip=False),
    ]
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=si.content.rootFolder, skip=False, selectSet=specs)],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name", "runtime.host"]),
                                  PC.PropertySpec(type=vim.HostSystem, pathSet=["name"])])
    result = si.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    by_kind: dict[str, list[str]] = {}
    for oc in result.objects:
        props = {p.name: p.val for p in oc.propSet}
        by_kind.setdefault(type(oc.obj).__name__, []).append(props["name"])
        if isinstance(oc.obj, vim.VirtualMachine):
            assert isinstance(props["runtime.host"], vim.HostSystem)
    assert sorted(by_kind["vim.VirtualMachine"]) == ["src-linux", "src-win"]
    assert sorted(by_kind["vim.HostSystem"]) == ["esx-01", "esx-02", "esx-03", "esx-04"]
    # the root folder itself was selected (skip=False) but no PropertySpec matches a Folder
    assert "vim.Folder" not in by_kind


def test_bad_property_path_is_invalid_property(si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector
    for bad in ("noSuchProperty", "config.noSuchField", "config..name"):
        with pytest.raises(vmodl.query.InvalidProperty):
            pc.RetrievePropertiesEx([one_spec(src, ["name", bad])], PC.RetrieveOptions())
    with pytest.raises(vmodl.query.InvalidProperty):
        pc.CreateFilter(one_spec(src, ["bogus"]), partialUpdates=False)


def test_unset_properties_are_absent_and_keyed_paths_select_one_option(si):
    src = find_vm(si, "src-linux")
    clone = instant_clone(si, src, "keyed-1", [vim.option.OptionValue(key="guestinfo.x", value="42"),
                                               vim.option.OptionValue(key="guestinfo.y", value="7")])
    pc = si.content.propertyCollector
    paths = ["name", "snapshot", "parentVApp", 'config.extraConfig["guestinfo.x"]',
             'config.extraConfig["guestinfo.missing"]']
    result = pc.RetrievePropertiesEx([one_spec(clone, paths)], PC.RetrieveOptions())
    props = {p.name: p.val for p in result.objects[0].propSet}
    assert set(props) == {"name", 'config.extraConfig["guestinfo.x"]'}  # unset values are not sent
    opt = props['config.extraConfig["guestinfo.x"]']
    assert isinstance(opt, vim.option.OptionValue) and (opt.key, opt.value) == ("guestinfo.x", "42")
    assert not result.objects[0].missingSet
    # the source has a snapshot: the same path is present there
    props = {p.name for p in pc.RetrievePropertiesEx([one_spec(src, ["snapshot"])], PC.RetrieveOptions())
             .objects[0].propSet}
    assert props == {"snapshot"}


# CreateFilter / WaitForUpdatesEx ------------------------------------------------------------------
def test_updates_enter_modify_only_changed_and_leave(si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    view = entity_view(si, [vim.VirtualMachine])
    pf = pc.CreateFilter(vms_spec(view, ["name", "config.annotation", "runtime.powerState"]), partialUpdates=False)
    first = wait(pc, "")
    got = changes_by_object(first)
    assert {k for k, _ in got.values()} == {"enter"}
    assert sorted(props["name"] for _, props in got.values()) == ["src-linux", "src-win"]
    assert got[src._moId][1]["runtime.powerState"] == "poweredOn"
    version = first.version

    WaitForTask(src.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="hello")), si=si)
    upd = wait(pc, version)
    got = changes_by_object(upd)
    assert got == {src._moId: ("modify", {"config.annotation": "hello"})}
    assert upd.version != version
    version = upd.version

    clone = instant_clone(si, src, "watched-1")
    upd = wait(pc, version)
    got = changes_by_object(upd)
    assert got[clone._moId][0] == "enter" and got[clone._moId][1]["name"] == "watched-1"
    version = upd.version
    WaitForTask(clone.PowerOffVM_Task(), si=si)
    WaitForTask(clone.Destroy_Task(), si=si)
    seen: dict[str, str] = {}
    while clone._moId not in seen or seen[clone._moId] != "leave":
        upd = wait(pc, version)
        assert upd is not None, f"no leave for the destroyed clone; saw {seen}"
        version = upd.version
        for moid, (kind, _) in changes_by_object(upd).items():
            seen[moid] = kind
    assert pf in pc.filter
    pf.DestroyPropertyFilter()
    assert pc.filter == []
    pc.DestroyPropertyCollector()


def test_max_wait_seconds_returns_none_on_time_and_keeps_the_version(si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(one_spec(src, ["config.annotation"]), partialUpdates=False)
    version = wait(pc, "").version
    started = time.monotonic()
    assert wait(pc, version, max_wait=1) is None
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0
    assert wait(pc, version, max_wait=0) is None  # a poll
    WaitForTask(src.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="after-timeout")), si=si)
    upd = wait(pc, version, max_wait=0)  # the same version still works after a timeout
    assert changes_by_object(upd) == {src._moId: ("modify", {"config.annotation": "after-timeout"})}


def test_version_semantics_initial_again_and_unknown_version(si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(one_spec(src, ["name"]), partialUpdates=False)
    v1 = wait(pc, "")
    assert changes_by_object(v1)[src._moId][0] == "enter"
    assert wait(pc, v1.version, max_wait=0) is None
    again = wait(pc, "")  # the initial version asks for everything again
    assert changes_by_object(again) == {src._moId: ("enter", {"name": "src-linux"})}
    assert again.version != v1.version
    with pytest.raises(vmodl.query.InvalidCollectorVersion):
        wait(pc, "not-a-version", max_wait=0)
    with pytest.raises(vmodl.query.InvalidCollectorVersion):
        wait(pc, v1.version, max_wait=0)  # superseded by `again`
    # a filter created later shows up as enter against the current version
    src2 = find_vm(si, "src-win")
    pc.CreateFilter(one_spec(src2, ["name"]), partialUpdates=False)
    upd = wait(pc, again.version, max_wait=0)
    assert changes_by_object(upd) == {src2._moId: ("enter", {"name": "src-win"})}


def test_max_object_updates_truncates_and_the_rest_follows(si):
    src = find_vm(si, "src-linux")
    for i in range(3):
        instant_clone(si, src, f"trunc-{i}")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    view = entity_view(si, [vim.VirtualMachine])
    pc.CreateFilter(vms_spec(view, ["name"]), partialUpdates=False)
    names: list[str] = []
    version = ""
    rounds = []
    while True:
        upd = wait(pc, version, max_wait=0, max_updates=2)
        if upd is None:
            break
        version = upd.version
        got = changes_by_object(upd)
        assert len(got) <= 2
        assert all(kind == "enter" for kind, _ in got.values())
        names += [props["name"] for _, props in got.values()]
        rounds.append(bool(upd.truncated))
    assert sorted(names) == sorted(["src-linux", "src-win", "trunc-0", "trunc-1", "trunc-2"])
    assert rounds[0] is True and rounds[-1] is False
    assert len(rounds) == 3


def test_destroyed_filter_stops_reporting_and_is_gone(si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pf = pc.CreateFilter(one_spec(src, ["config.annotation"]), partialUpdates=False)
    version = wait(pc, "").version
    assert pf.spec.propSet[0].pathSet == ["config.annotation"]
    pf.DestroyPropertyFilter()
    WaitForTask(src.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="unseen")), si=si)
    assert wait(pc, version, max_wait=0) is None
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        pf.DestroyPropertyFilter()


def test_private_collectors_are_per_session_and_destroyable(twin, si):
    pc = si.content.propertyCollector.CreatePropertyCollector()
    src = find_vm(si, "src-linux")
    assert pc.RetrievePropertiesEx([one_spec(src, ["name"])], PC.RetrieveOptions()).objects[0].propSet[0].val == \
        "src-linux"
    other = connect(twin)
    try:
        stranger = vmodl.query.PropertyCollector(pc._moId, stub=other._stub)
        with pytest.raises(vmodl.fault.ManagedObjectNotFound):
            stranger.RetrievePropertiesEx([one_spec(src, ["name"])], PC.RetrieveOptions())
        # each session's default collector is its own: a filter made in one is not seen by the other
        si.content.propertyCollector.CreateFilter(one_spec(src, ["name"]), partialUpdates=False)
        assert other.content.propertyCollector.filter == []
        assert len(si.content.propertyCollector.filter) == 1
    finally:
        from pyVim.connect import Disconnect

        Disconnect(other)
    pc.DestroyPropertyCollector()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        pc.RetrievePropertiesEx([one_spec(src, ["name"])], PC.RetrieveOptions())


def test_two_sessions_waiting_on_their_default_collectors_both_get_updates(twin, si):
    src = find_vm(si, "src-linux")
    sessions = [connect(twin), connect(twin)]
    results: dict[int, object] = {}
    ready = threading.Barrier(3)

    def waiter(i, session):
        pc = session.content.propertyCollector  # the session's default collector
        vm = vim.VirtualMachine(src._moId, stub=session._stub)
        pc.CreateFilter(one_spec(vm, ["config.annotation"]), partialUpdates=False)
        version = wait(pc, "").version
        ready.wait(timeout=10)
        try:
            results[i] = wait(pc, version, max_wait=15)
        except Exception as exc:  # surfaced by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=waiter, args=(i, s)) for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    ready.wait(timeout=10)
    time.sleep(0.3)  # both waits are parked on the twin now
    started = time.monotonic()
    WaitForTask(src.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="for-both")), si=si)
    for t in threads:
        t.join(timeout=20)
    assert time.monotonic() - started < 10
    for i in range(2):
        upd = results[i]
        assert isinstance(upd, PC.UpdateSet), upd
        assert changes_by_object(upd) == {src._moId: ("modify", {"config.annotation": "for-both"})}
    for s in sessions:
        from pyVim.connect import Disconnect

        Disconnect(s)


def test_second_wait_on_one_collector_is_refused_and_cancel_ends_the_first(si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(one_spec(src, ["config.annotation"]), partialUpdates=False)
    version = wait(pc, "").version
    box: dict[str, object] = {}

    def first():
        try:
            box["result"] = wait(pc, version, max_wait=20)
        except Exception as exc:
            box["result"] = exc

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.3)
    with pytest.raises(vmodl.fault.NotSupported):
        wait(pc, version, max_wait=1)
    started = time.monotonic()
    pc.CancelWaitForUpdates()
    t.join(timeout=10)
    assert not t.is_alive() and time.monotonic() - started < 5
    assert isinstance(box["result"], vmodl.fault.RequestCanceled)
    # the collector is usable again
    assert wait(pc, version, max_wait=0) is None


def test_expired_session_is_not_authenticated_and_a_new_login_works(twin, si):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(one_spec(src, ["config.annotation"]), partialUpdates=False)
    version = wait(pc, "").version
    box: dict[str, object] = {}

    def waiting():
        try:
            box["result"] = wait(pc, version, max_wait=20)
        except Exception as exc:
            box["result"] = exc

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(0.3)
    twin.admin("expire_sessions")
    t.join(timeout=10)
    assert not t.is_alive()
    assert isinstance(box["result"], vmodl.fault.RequestCanceled | vim.fault.NotAuthenticated)
    with pytest.raises(vim.fault.NotAuthenticated):
        si.content.sessionManager.currentSession  # noqa: B018
    with pytest.raises(vim.fault.NotAuthenticated):
        src.InstantClone_Task(vim.vm.InstantCloneSpec(name="nope", location=vim.vm.RelocateSpec()))
    fresh = connect(twin)
    assert fresh.content.sessionManager.currentSession.userName == twin.user
    assert find_vm(fresh, "src-linux").name == "src-linux"
    # the old session's collector died with it
    stale = vmodl.query.PropertyCollector(pc._moId, stub=fresh._stub)
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        stale.RetrievePropertiesEx([one_spec(src, ["name"])], PC.RetrieveOptions())


def test_session_manager_calls(si):
    sm = si.content.sessionManager
    current = sm.currentSession
    assert sm.SessionIsActive(current.key, current.userName) is True
    assert sm.SessionIsActive("no-such-session", current.userName) is False
    assert abs(si.CurrentTime().timestamp() - time.time()) < 5
    assert any(s.key == current.key for s in sm.sessionList)
