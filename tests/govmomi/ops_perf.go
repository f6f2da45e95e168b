package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vmware/govmomi/performance"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// PerformanceManager as `govc metric.ls`/`metric.sample`, Telegraf's and Metricbeat's vSphere
// inputs use it: counters resolved by name, realtime (20 s) samples of VMs and hosts, the 300 s
// historical rollups, and clusters and datastores, which only have historical statistics.
func perfOps() []op {
	return []op{
		{"perf.counters", opPerfCounters},
		{"perf.vm_realtime", opPerfVMRealtime},
		{"perf.host_historical", opPerfHostHistorical},
		{"perf.cluster", opPerfCluster},
		{"perf.datastore", opPerfDatastore},
	}
}

type counterWant struct {
	name, unit, stats string
}

var wantCounters = []counterWant{
	{"cpu.ready.summation", "millisecond", "delta"},
	{"cpu.usage.average", "percent", "rate"},
	{"cpu.usagemhz.average", "megaHertz", "rate"},
	{"net.usage.average", "kiloBytesPerSecond", "rate"},
	{"disk.usage.average", "kiloBytesPerSecond", "rate"},
	{"mem.active.average", "kiloBytes", "absolute"},
	{"mem.consumed.average", "kiloBytes", "absolute"},
	{"sys.uptime.latest", "second", "absolute"},
	{"disk.used.latest", "kiloBytes", "absolute"},
	{"disk.capacity.latest", "kiloBytes", "absolute"},
}

func opPerfCounters(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	m := performance.NewManager(c)
	byName, err := m.CounterInfoByName(ctx)
	if err != nil {
		return nil, err
	}
	ck := &checks{}
	missing := []string{}
	for _, w := range wantCounters {
		info, ok := byName[w.name]
		if !ok {
			missing = append(missing, w.name)
			continue
		}
		rollup := w.name[strings.LastIndex(w.name, ".")+1:]
		ck.equal(w.name+" rollupType", string(info.RollupType), rollup)
		ck.equal(w.name+" unit", info.UnitInfo.GetElementDescription().Key, w.unit)
		ck.equal(w.name+" statsType", string(info.StatsType), w.stats)
		ck.that(info.Level >= 1 && info.Level <= 4, "%s level %d", w.name, info.Level)
	}
	ck.that(len(missing) == 0, "counters missing from the catalog: %v", missing)
	intervals, err := m.HistoricalInterval(ctx)
	periods := []int32{}
	if ck.ok(err, "historicalInterval") {
		for _, i := range intervals {
			if i.Enabled {
				periods = append(periods, i.SamplingPeriod)
			}
		}
	}
	ck.equal("enabled historical sampling periods", periods, []int32{300, 1800, 7200, 86400})
	return ck.done(map[string]interface{}{"counters": len(byName), "missing": missing, "periods": periods})
}

// sample queries one entity by counter names (aggregate instance "") and returns name -> values.
func sample(ctx context.Context, m *performance.Manager, spec types.PerfQuerySpec, names []string, entity types.ManagedObjectReference) (map[string][]int64, []types.PerfSampleInfo, error) {
	byName, err := m.CounterInfoByName(ctx)
	if err != nil {
		return nil, nil, err
	}
	missing := []string{}
	for _, n := range names {
		if _, ok := byName[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("counters not in the catalog: %v", missing)
	}
	spec.MetricId = []types.PerfMetricId{{Instance: ""}}
	raw, err := m.SampleByName(ctx, spec, names, []types.ManagedObjectReference{entity})
	if err != nil {
		return nil, nil, err
	}
	series, err := m.ToMetricSeries(ctx, raw)
	if err != nil {
		return nil, nil, err
	}
	if len(series) != 1 {
		return nil, nil, fmt.Errorf("QueryPerf returned %d entities, want 1", len(series))
	}
	out := map[string][]int64{}
	for _, s := range series[0].Value {
		out[s.Name] = s.Value
	}
	return out, series[0].SampleInfo, nil
}

func checkSamples(ck *checks, label string, vals map[string][]int64, info []types.PerfSampleInfo, names []string, interval int32) {
	ck.that(len(info) > 0, "%s: no samples", label)
	for i, s := range info {
		ck.that(s.Interval == interval, "%s: sample %d interval %d, want %d", label, i, s.Interval, interval)
		if i > 0 {
			ck.that(s.Timestamp.After(info[i-1].Timestamp), "%s: timestamps not increasing", label)
		}
	}
	for _, n := range names {
		v, ok := vals[n]
		ck.that(ok && len(v) == len(info), "%s: %s has %d values for %d samples", label, n, len(v), len(info))
	}
}

func providerSummary(ctx context.Context, ck *checks, m *performance.Manager, label string, ref types.ManagedObjectReference, current bool) {
	ps, err := m.ProviderSummary(ctx, ref)
	if ck.ok(err, label+" QueryPerfProviderSummary") {
		ck.equal(label+" currentSupported", ps.CurrentSupported, current)
		ck.equal(label+" summarySupported", ps.SummarySupported, true)
		if current {
			ck.equal(label+" refreshRate", ps.RefreshRate, int32(20))
		}
	}
}

func availableNames(ctx context.Context, m *performance.Manager, ref types.ManagedObjectReference, interval int32) ([]string, error) {
	list, err := m.AvailableMetric(ctx, ref, interval)
	if err != nil {
		return nil, err
	}
	byKey, err := m.CounterInfoByKey(ctx)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, id := range list {
		if info, ok := byKey[id.CounterId]; ok && id.Instance == "" {
			names = append(names, info.Name())
		}
	}
	return names, nil
}

func opPerfVMRealtime(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	m := performance.NewManager(c)
	ck := &checks{}
	providerSummary(ctx, ck, m, "vm", src.Reference(), true)
	names := []string{"cpu.usage.average", "cpu.ready.summation", "mem.active.average", "net.usage.average",
		"disk.usage.average", "sys.uptime.latest"}
	avail, err := availableNames(ctx, m, src.Reference(), 20)
	if ck.ok(err, "QueryAvailablePerfMetric(vm, 20)") {
		for _, n := range names {
			ck.that(contains(avail, n), "%s not available on a VM", n)
		}
	}
	vals, info, err := sample(ctx, m, types.PerfQuerySpec{IntervalId: 20, MaxSample: 3}, names, src.Reference())
	last := map[string]int64{}
	if ck.ok(err, "QueryPerf(vm, 20 s)") {
		checkSamples(ck, "vm realtime", vals, info, names, 20)
		ck.that(len(info) <= 3, "maxSample 3 returned %d samples", len(info))
		for n, v := range vals {
			if len(v) > 0 {
				last[n] = v[len(v)-1]
			}
		}
		ck.that(last["sys.uptime.latest"] > 0, "sys.uptime.latest %d on a running VM", last["sys.uptime.latest"])
		ck.that(last["mem.active.average"] > 0, "mem.active.average %d on a running VM", last["mem.active.average"])
	}
	return ck.done(map[string]interface{}{"samples": len(info), "last": last})
}

func historicalQuery(ctx context.Context, c *performance.Manager, ref types.ManagedObjectReference, names []string, window time.Duration) (map[string][]int64, []types.PerfSampleInfo, error) {
	now, err := methods.GetCurrentTime(ctx, c.Client())
	if err != nil {
		return nil, nil, err
	}
	start := now.Add(-window)
	return sample(ctx, c, types.PerfQuerySpec{IntervalId: 300, StartTime: &start, EndTime: now}, names, ref)
}

func opPerfHostHistorical(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	h, err := e.host("esx-01")
	if err != nil {
		return nil, err
	}
	m := performance.NewManager(c)
	ck := &checks{}
	providerSummary(ctx, ck, m, "host", h.Reference(), true)
	names := []string{"cpu.usage.average", "mem.consumed.average", "net.usage.average", "disk.usage.average", "sys.uptime.latest"}
	vals, info, err := historicalQuery(ctx, m, h.Reference(), names, time.Hour)
	if ck.ok(err, "QueryPerf(host, 300 s, last hour)") {
		checkSamples(ck, "host historical", vals, info, names, 300)
	}
	return ck.done(map[string]interface{}{"samples": len(info)})
}

func opPerfCluster(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	cl, err := e.cluster()
	if err != nil {
		return nil, err
	}
	m := performance.NewManager(c)
	ck := &checks{}
	providerSummary(ctx, ck, m, "cluster", cl.Reference(), false)
	names := []string{"cpu.usagemhz.average", "mem.consumed.average"}
	avail, err := availableNames(ctx, m, cl.Reference(), 300)
	if ck.ok(err, "QueryAvailablePerfMetric(cluster, 300)") {
		for _, n := range names {
			ck.that(contains(avail, n), "%s not available on a cluster (available: %v)", n, avail)
		}
	}
	vals, info, err := historicalQuery(ctx, m, cl.Reference(), names, time.Hour)
	if ck.ok(err, "QueryPerf(cluster, 300 s)") {
		checkSamples(ck, "cluster historical", vals, info, names, 300)
		if v := vals["mem.consumed.average"]; len(v) > 0 {
			ck.that(v[len(v)-1] > 0, "cluster mem.consumed.average is 0 with running VMs")
		}
	}
	return ck.done(map[string]interface{}{"available": avail, "samples": len(info)})
}

func opPerfDatastore(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	ds, err := e.datastore(dsName)
	if err != nil {
		return nil, err
	}
	m := performance.NewManager(c)
	ck := &checks{}
	providerSummary(ctx, ck, m, "datastore", ds.Reference(), false)
	names := []string{"disk.used.latest", "disk.capacity.latest", "disk.provisioned.latest"}
	avail, err := availableNames(ctx, m, ds.Reference(), 300)
	if ck.ok(err, "QueryAvailablePerfMetric(datastore, 300)") {
		for _, n := range names {
			ck.that(contains(avail, n), "%s not available on a datastore (available: %v)", n, avail)
		}
	}
	vals, info, err := historicalQuery(ctx, m, ds.Reference(), names[:2], 2*time.Hour)
	if ck.ok(err, "QueryPerf(datastore, 300 s)") {
		checkSamples(ck, "datastore historical", vals, info, names[:2], 300)
		if v := vals["disk.capacity.latest"]; len(v) > 0 {
			ck.equal("disk.capacity.latest (KB)", v[len(v)-1], 4096*gib/1024)
		}
	}
	return ck.done(map[string]interface{}{"available": avail, "samples": len(info)})
}

// opHostPShare: after instant clones, the host's realtime memory counters show page sharing
// (P-Share): guest pages shared exceed the machine pages backing them. Polled, since a new
// realtime sample comes every 20 s (scaled on the twin).
func opHostPShare(ctx context.Context, e *env) (interface{}, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	src, err := e.vm(srcName)
	if err != nil {
		return nil, err
	}
	var v mo.VirtualMachine
	if err := e.pc().RetrieveOne(ctx, src.Reference(), []string{"runtime.host"}, &v); err != nil {
		return nil, err
	}
	m := performance.NewManager(c)
	names := []string{"mem.shared.average", "mem.sharedcommon.average"}
	last := map[string]int64{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		vals, _, err := sample(ctx, m, types.PerfQuerySpec{IntervalId: 20, MaxSample: 1}, names, *v.Runtime.Host)
		if err != nil {
			return nil, err
		}
		for n, s := range vals {
			if len(s) > 0 {
				last[n] = s[len(s)-1]
			}
		}
		if last["mem.shared.average"] > last["mem.sharedcommon.average"] && last["mem.sharedcommon.average"] > 0 {
			return last, nil
		}
		if time.Now().After(deadline) {
			return last, errorf("mem.shared.average %d is not above mem.sharedcommon.average %d > 0",
				last["mem.shared.average"], last["mem.sharedcommon.average"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
