package main

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Events and tasks as `govc events`, `govc tasks`, vCenter event exporters and Ansible's
// vmware_guest_info use them: QueryEvents with filters, history collectors paged both ways,
// TaskManager.recentTask.
func historyOps() []op {
	return []op{
		{"events.query", opEventsQuery},
		{"events.collector_paging", opEventsPaging},
		{"tasks.recent", opTasksRecent},
		{"tasks.collector_paging", opTasksPaging},
	}
}

func opEventsQuery(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-events", false)
	if err != nil {
		return nil, err
	}
	if err := e.powerOn(ctx, vm); err != nil {
		return nil, err
	}
	if err := e.powerOff(ctx, vm); err != nil {
		return nil, err
	}
	m := event.NewManager(e.c)
	ck := &checks{}
	evs, err := m.QueryEvents(ctx, types.EventFilterSpec{
		Entity:      &types.EventFilterSpecByEntity{Entity: vm.Reference(), Recursion: types.EventFilterSpecRecursionOptionSelf},
		EventTypeId: []string{"VmPoweredOnEvent", "VmPoweredOffEvent"}})
	if err != nil {
		return nil, err
	}
	event.Sort(evs)
	kinds := []string{}
	for _, ev := range evs {
		kinds = append(kinds, eventName(ev))
		x := ev.GetEvent()
		ck.that(x.Vm != nil && x.Vm.Vm == vm.Reference() && x.Vm.Name == "gov-events", "%s vm %+v", eventName(ev), x.Vm)
		ck.that(x.Host != nil && x.Host.Name != "", "%s host unset", eventName(ev))
		ck.that(x.Datacenter != nil && x.Datacenter.Name == dcName, "%s datacenter %+v", eventName(ev), x.Datacenter)
		ck.that(x.ComputeResource != nil && x.ComputeResource.Name == clusterName, "%s computeResource %+v", eventName(ev), x.ComputeResource)
		ck.that(strings.HasSuffix(strings.ToLower(x.UserName), strings.ToLower(e.cfg.user)), "%s userName %q", eventName(ev), x.UserName)
		ck.that(x.FullFormattedMessage != "" && x.Key > 0 && x.ChainId > 0, "%s message/key/chainId unset", eventName(ev))
		ck.that(time.Since(x.CreatedTime) < time.Hour && time.Since(x.CreatedTime) > -time.Minute, "%s createdTime %s", eventName(ev), x.CreatedTime)
	}
	ck.equal("events", kinds, []string{"VmPoweredOnEvent", "VmPoweredOffEvent"})
	future := time.Now().Add(time.Hour)
	later, err := m.QueryEvents(ctx, types.EventFilterSpec{Time: &types.EventFilterSpecByTime{BeginTime: &future}})
	if ck.ok(err, "QueryEvents(beginTime in an hour)") {
		ck.equal("events from the future", len(later), 0)
	}
	return ck.done(map[string]interface{}{"events": kinds})
}

func eventKeys(evs []types.BaseEvent) []int32 {
	out := []int32{}
	for _, ev := range evs {
		out = append(out, ev.GetEvent().Key)
	}
	return out
}

func opEventsPaging(ctx context.Context, e *env) (interface{}, error) {
	m := event.NewManager(e.c)
	all, err := m.QueryEvents(ctx, types.EventFilterSpec{})
	if err != nil {
		return nil, err
	}
	hc, err := m.CreateCollectorForEvents(ctx, types.EventFilterSpec{})
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	ck.ok(hc.SetPageSize(ctx, 5), "SetCollectorPageSize(5)")
	latest, err := hc.LatestPage(ctx)
	ck.ok(err, "latestPage")
	ck.that(len(latest) == 5, "latestPage has %d events after SetCollectorPageSize(5)", len(latest))
	ck.ok(hc.Rewind(ctx), "RewindCollector")
	forward := []int32{}
	for i := 0; i < 1000; i++ {
		page, err := hc.ReadNextEvents(ctx, 7)
		if !ck.ok(err, "ReadNextEvents") || len(page) == 0 {
			break
		}
		ck.that(len(page) <= 7, "a page of %d with maxCount 7", len(page))
		forward = append(forward, eventKeys(page)...)
	}
	ck.that(sort.SliceIsSorted(forward, func(i, j int) bool { return forward[i] < forward[j] }), "ReadNextEvents not oldest first")
	ck.that(len(forward) >= len(all) && len(all) >= 10, "read %d events forward, QueryEvents has %d", len(forward), len(all))
	latestKeys := eventKeys(latest)
	sort.Slice(latestKeys, func(i, j int) bool { return latestKeys[i] < latestKeys[j] })
	if len(forward) >= 5 {
		ck.equal("latestPage is the newest 5", latestKeys, forward[len(forward)-5:])
	}
	ck.ok(hc.Reset(ctx), "ResetCollector")
	backward := []int32{}
	for i := 0; i < 1000; i++ {
		page, err := hc.ReadPreviousEvents(ctx, 7)
		if !ck.ok(err, "ReadPreviousEvents") || len(page) == 0 {
			break
		}
		backward = append(backward, eventKeys(page)...)
	}
	ck.equal("ReadPreviousEvents after reset (all but the latest page)", len(backward), len(forward)-len(latest))
	ck.ok(hc.Destroy(ctx), "DestroyCollector")
	_, err = hc.ReadNextEvents(ctx, 1)
	ck.equal("reading a destroyed collector", faultName(err), "ManagedObjectNotFound")
	return ck.done(map[string]interface{}{"query": len(all), "forward": len(forward), "backward": len(backward), "latest": len(latest)})
}

func opTasksRecent(ctx context.Context, e *env) (interface{}, error) {
	vm, err := e.scratch(ctx, "gov-recent", false)
	if err != nil {
		return nil, err
	}
	t, err := vm.PowerOn(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	var tm mo.TaskManager
	if ck.ok(e.pc().RetrieveOne(ctx, *e.c.ServiceContent.TaskManager, []string{"recentTask"}, &tm), "TaskManager.recentTask") {
		ck.that(refIn(tm.RecentTask, t.Reference()), "recentTask lacks the power-on task just started")
	}
	info, err := t.WaitForResult(ctx, nil)
	if !ck.ok(err, "wait") {
		return ck.done(nil)
	}
	ck.equal("descriptionId", info.DescriptionId, "VirtualMachine.powerOn")
	ck.equal("name", info.Name, "PowerOnVM_Task")
	ck.equal("key", info.Key, t.Reference().Value)
	ck.equal("entityName", info.EntityName, "gov-recent")
	ck.that(info.Entity != nil && *info.Entity == vm.Reference(), "entity %v", info.Entity)
	ck.equal("state", info.State, types.TaskInfoStateSuccess)
	v, err := readVM(ctx, e, vm, "recentTask")
	if ck.ok(err, "vm.recentTask") {
		ck.that(refIn(v.RecentTask, t.Reference()) || len(v.RecentTask) == 0, "vm.recentTask %v", v.RecentTask)
	}
	return ck.done(map[string]interface{}{"descriptionId": info.DescriptionId, "name": info.Name})
}

func opTasksPaging(ctx context.Context, e *env) (interface{}, error) {
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	res, err := methods.CreateCollectorForTasks(ctx, e.c, &types.CreateCollectorForTasks{This: *e.c.ServiceContent.TaskManager,
		Filter: types.TaskFilterSpec{Entity: &types.TaskFilterSpecByEntity{Entity: src.Reference(), Recursion: types.TaskFilterSpecRecursionOptionSelf}}})
	if err != nil {
		return map[string]interface{}{"fault": faultName(err)}, err
	}
	hc := object.NewHistoryCollector(e.c, res.Returnval)
	ck.ok(hc.SetPageSize(ctx, 4), "SetCollectorPageSize(4)")
	var thc mo.TaskHistoryCollector
	if ck.ok(e.pc().RetrieveOne(ctx, hc.Reference(), []string{"latestPage"}, &thc), "latestPage") {
		ck.equal("latestPage size", len(thc.LatestPage), 4)
	}
	ck.ok(hc.Rewind(ctx), "RewindCollector")
	descs := map[string]int{}
	total := 0
	var last time.Time
	for i := 0; i < 1000; i++ {
		page, err := methods.ReadNextTasks(ctx, e.c, &types.ReadNextTasks{This: hc.Reference(), MaxCount: 5})
		if !ck.ok(err, "ReadNextTasks") || len(page.Returnval) == 0 {
			break
		}
		for _, ti := range page.Returnval {
			total++
			descs[ti.DescriptionId]++
			ck.that(ti.Entity != nil && *ti.Entity == src.Reference(), "task %s entity %v", ti.Key, ti.Entity)
			ck.that(!ti.QueueTime.Before(last), "ReadNextTasks not oldest first")
			last = ti.QueueTime
		}
	}
	ck.that(total >= 10, "only %d tasks on src-linux (every scratch VM is a clone of it)", total)
	ck.that(descs["VirtualMachine.clone"] >= 10, "clone tasks by descriptionId: %v", descs)
	ck.ok(hc.Destroy(ctx), "DestroyCollector")
	return ck.done(map[string]interface{}{"tasks": total, "byDescription": descs})
}
