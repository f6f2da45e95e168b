"""forkscale.observe.telemetry: the exposition itself, and end to end through a real Prometheus."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from forkscale.observe.telemetry import (
    METRICS,
    ChainDepth,
    CloneCount,
    DeltaDisk,
    FleetSample,
    HostMemory,
    ImageState,
    PoolCounts,
    SourceState,
    Telemetry,
    VmMemory,
    count_clones,
    metrics_app,
    scope_class,
)
from forkscale.policy.reasons import ReasonCode
from tests.fixtures import prometheus as prometheus_fixtures
from tests.fixtures.prometheus import PrometheusHandle

# Also registered by tests/conftest.py (pytest_plugins); bound here too so this module stands alone.
prometheus_factory = prometheus_fixtures.prometheus_factory

ROOT = Path(__file__).resolve().parents[1]
GiB = 1024**3
MiB = 1024**2


def fleet_sample(vms: tuple[str, ...] = ("vdi-001", "vdi-002"), taken_at: float | None = None) -> FleetSample:
    return FleetSample(
        vms=[VmMemory("vdi", vm, shared_bytes=900 * MiB, private_bytes=124 * MiB) for vm in vms],
        hosts=[HostMemory("esx1", shared_bytes=6 * GiB, sharedcommon_bytes=2 * GiB)],
        chains=[ChainDepth("vdi-src", "scsi0:0", "source", 41)]
        + [ChainDepth(vm, "scsi0:0", "clone", 42) for vm in vms],
        deltas=[DeltaDisk("vdi-src", "source", 64 * MiB)] + [DeltaDisk(vm, "clone", 8 * MiB) for vm in vms],
        sources=[SourceState("vdi", "vdi-src", "esx1", frozen=True)],
        pools=[PoolCounts("vdi", desired=4, ready=len(vms), spares=1)],
        clones=count_clones([("vdi", "instant", "ready")] * len(vms) + [("vdi", "linked", "cloning")]),
        pool_pshare_saved_bytes={"vdi": 3 * GiB},
        images=[ImageState("vdi", {"1": 1, "2": len(vms) - 1}, {"active": 1, "target": 2},
                           ("push-image", {"pending": 3, "running": 1, "waiting": 2, "done": 5, "failed": 0}))],
        taken_at=time.time() if taken_at is None else taken_at,
    )


def exercise_every_metric(t: Telemetry) -> None:
    """Give every metric family at least one series (used by tests/test_metrics_assets.py too)."""
    t.set_fleet(fleet_sample())
    t.observe_clone_ready("vdi", "instant", 1.5)
    t.observe_clone_ready("vdi", "linked", 40.0)
    t.record_clone_fault("vdi", "instant", "InvalidState")
    t.record_fallback("vdi", "instant", "linked", "SourceNotFrozen")
    t.observe_task("InstantClone_Task", 0.8)
    t.observe_task("InstantClone_Task", 0.3, fault="InvalidState")
    t.observe_budget_wait("host:esx1", 0.02)
    t.record_policy_decision("vdi", "up", ReasonCode.HEADROOM)
    with t.budget_slot("vcenter"):
        pass
    t.budget_in_flight.labels("host:esx1").set(2)
    t.set_up(True)
    t.set_vcenter_up("vc-a", True)
    t.set_pool_owned("vdi", True)
    t.record_failover("vdi")
    t.set_replicas(3)
    t.set_fenced_writes(2)


def parse(body: bytes | str) -> dict[str, float]:
    """Exposition -> {'name{a="b",...}': value} with labels sorted."""
    text = body.decode() if isinstance(body, bytes) else body
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


# ------------------------------------------------------------------------------------------------
# exposition
# ------------------------------------------------------------------------------------------------


def test_every_family_is_registered_with_its_type() -> None:
    families = {f.name: f.type for f in text_string_to_metric_families(Telemetry().render().decode())}
    for spec in METRICS:
        name = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
        assert families.get(name) == spec.type, spec.name
    assert not [n for n in families if not n.startswith("forkscale_")]


def test_registries_are_private() -> None:
    a, b = Telemetry(), Telemetry()
    a.set_up(True)
    a.observe_clone_ready("vdi", "instant", 2.0)
    assert parse(a.render())["forkscale_up{}"] == 1
    assert parse(b.render())["forkscale_up{}"] == 0
    assert not [k for k in parse(b.render()) if k.startswith("forkscale_clone_ready_seconds_count")]


def test_fleet_sample_values() -> None:
    t = Telemetry(clock=lambda: 1000.0)
    t.set_fleet(fleet_sample(taken_at=970.0))
    m = parse(t.render())
    assert m['forkscale_delta_chain_depth{disk="scsi0:0",role="clone",vm="vdi-001"}'] == 42
    assert m['forkscale_delta_chain_depth{disk="scsi0:0",role="source",vm="vdi-src"}'] == 41
    assert m['forkscale_host_pshare_saved_bytes{host="esx1"}'] == 4 * GiB  # shared - sharedcommon
    assert m['forkscale_host_memory_sharedcommon_bytes{host="esx1"}'] == 2 * GiB
    assert m['forkscale_pool_pshare_saved_bytes{pool="vdi"}'] == 3 * GiB
    assert m['forkscale_vm_memory_private_bytes{pool="vdi",vm="vdi-002"}'] == 124 * MiB
    assert m['forkscale_clones{kind="instant",pool="vdi",state="ready"}'] == 2
    assert m['forkscale_pool_image_clones{generation="2",pool="vdi"}'] == 1
    assert m['forkscale_pool_image_generation{pool="vdi",role="target"}'] == 2
    assert m['forkscale_operation_steps{kind="push-image",pool="vdi",state="waiting"}'] == 2
    assert m['forkscale_clones{kind="linked",pool="vdi",state="cloning"}'] == 1
    assert m['forkscale_pool_desired{pool="vdi"}'] == 4
    assert m['forkscale_pool_ready{pool="vdi"}'] == 2
    assert m['forkscale_source_frozen{host="esx1",pool="vdi",source="vdi-src"}'] == 1
    assert m['forkscale_delta_disk_bytes{role="source",vm="vdi-src"}'] == 64 * MiB
    assert m["forkscale_inventory_age_seconds{}"] == 30


def test_next_sample_replaces_the_whole_set() -> None:
    t = Telemetry()
    t.set_fleet(fleet_sample(("vdi-001", "vdi-002")))
    assert 'vm="vdi-002"' in t.render().decode()
    sample = fleet_sample(("vdi-001",))
    sample.sources = [SourceState("vdi", "vdi-src", "esx1", frozen=False)]
    t.set_fleet(sample)
    body = t.render().decode()
    assert 'vm="vdi-002"' not in body
    m = parse(body)
    assert m['forkscale_source_frozen{host="esx1",pool="vdi",source="vdi-src"}'] == 0
    assert m['forkscale_pool_ready{pool="vdi"}'] == 1
    t.set_fleet(FleetSample())
    assert not [k for k in parse(t.render()) if "vdi" in k]
    assert "# TYPE forkscale_delta_chain_depth gauge" in t.render().decode()


def test_a_bad_sample_is_refused_whole_and_the_old_one_stays() -> None:
    t = Telemetry()
    t.set_fleet(fleet_sample())
    before = t.render()
    dup = fleet_sample()
    dup.chains.append(ChainDepth("vdi-001", "scsi0:0", "clone", 7))
    with pytest.raises(ValueError, match="duplicate series forkscale_delta_chain_depth"):
        t.set_fleet(dup)
    bad_role = fleet_sample()
    bad_role.deltas.append(DeltaDisk("x", "parent", 1))
    with pytest.raises(ValueError, match="role"):
        t.set_fleet(bad_role)
    bad_kind = fleet_sample()
    bad_kind.clones.append(CloneCount("vdi", "instantish", "ready", 1))
    with pytest.raises(ValueError, match="kind"):
        t.set_fleet(bad_kind)
    age = "forkscale_inventory_age_seconds{}"
    after = parse(t.render())
    assert after.pop(age) >= parse(before).pop(age)
    assert after == {k: v for k, v in parse(before).items() if k != age}


def test_a_scrape_never_shows_half_a_sample() -> None:
    """Two samples with disjoint VMs and distinct values, swapped as fast as possible while rendering."""
    t = Telemetry()

    def sample(tag: str, value: int) -> FleetSample:
        vms = [f"{tag}-{i:03d}" for i in range(200)]
        return FleetSample(
            vms=[VmMemory("p", vm, value, value) for vm in vms],
            chains=[ChainDepth(vm, "scsi0:0", "clone", value) for vm in vms],
            pools=[PoolCounts("p", value, value, value)],
        )

    a, b = sample("a", 1), sample("b", 2)
    t.set_fleet(a)  # a scrape before the first sample would (rightly) be empty
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            t.set_fleet(a)
            t.set_fleet(b)

    flipper = threading.Thread(target=flip)
    flipper.start()
    renders = 0
    try:
        # at least 1 s and at least 20 renders: a loaded machine makes each render slower, not fewer
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline or renders < 20:
            m = parse(t.render())
            values = {
                v
                for k, v in m.items()
                if k.startswith(("forkscale_vm_memory", "forkscale_delta_chain", "forkscale_pool_"))
            }
            tags = {vm[0] for vm in re.findall(r'vm="(\w)-', " ".join(m))}
            assert len(values) == 1 and len(tags) == 1, (values, tags)
            assert {1.0: {"a"}, 2.0: {"b"}}[values.pop()] == tags
            renders += 1
    finally:
        stop.set()
        flipper.join()
    assert renders >= 20


def test_event_helpers_keep_label_vocabularies() -> None:
    t = Telemetry()
    with pytest.raises(ValueError):
        t.observe_clone_ready("vdi", "fast", 1.0)
    with pytest.raises(ValueError):
        t.record_fallback("vdi", "instant", "snapshot", "x")
    with pytest.raises(ValueError):
        t.observe_budget_wait("cluster:c1", 1.0)
    with pytest.raises(ValueError):
        scope_class("host:")
    assert scope_class("datastore:ds1") == "datastore"
    t.observe_budget_wait("datastore:ds1", 0.3)
    t.observe_task("CloneVM_Task", 12.0, fault="FileLocked")
    with t.budget_slot("host:esx1"), t.budget_slot("host:esx1"):
        assert parse(t.render())['forkscale_budget_in_flight{scope="host:esx1"}'] == 2
    m = parse(t.render())
    assert m['forkscale_budget_in_flight{scope="host:esx1"}'] == 0
    assert m['forkscale_budget_wait_seconds_count{scope="datastore"}'] == 1
    assert m['forkscale_vsphere_task_faults_total{fault="FileLocked",method="CloneVM_Task"}'] == 1
    assert m['forkscale_vsphere_task_seconds_bucket{le="15.0",method="CloneVM_Task"}'] == 1
    assert m['forkscale_vsphere_task_seconds_bucket{le="10.0",method="CloneVM_Task"}'] == 0


def test_clone_latency_buckets_span_a_tenth_of_a_second_to_ten_minutes() -> None:
    t = Telemetry()
    t.observe_clone_ready("vdi", "full", 0.05)
    les = [
        float(le)
        for le in re.findall(
            r'forkscale_clone_ready_seconds_bucket\{kind="full",le="([^"]+)"', t.render().decode()
        )
    ]
    assert les[0] == 0.1 and les[-2] == 600.0 and les[-1] == float("inf")


# ------------------------------------------------------------------------------------------------
# over HTTP
# ------------------------------------------------------------------------------------------------


class Served:
    """An aiohttp application on a loopback port, run by its own event loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        host, port = self.runner.addresses[0][:2]
        self.address = f"{host}:{port}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[dict[str, str], bytes]:
        req = urllib.request.Request(f"http://{self.address}{path}", headers=headers or {})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return dict(resp.headers), bytes(resp.read())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


@pytest.fixture
def served() -> Iterator[Callable[[Telemetry], Served]]:
    started: list[Served] = []

    def serve(t: Telemetry) -> Served:
        s = Served(metrics_app(t))
        started.append(s)
        return s

    yield serve
    for s in started:
        s.close()


def test_metrics_handler_negotiates_format_and_compression(served: Callable[[Telemetry], Served]) -> None:
    t = Telemetry()
    exercise_every_metric(t)
    s = served(t)
    headers, body = s.get("/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert parse(body)['forkscale_delta_chain_depth{disk="scsi0:0",role="clone",vm="vdi-001"}'] == 42
    headers, body = s.get(
        "/metrics", {"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"}
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert headers.get("Content-Encoding") == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert (
        'forkscale_fallbacks_total{from_kind="instant",pool="vdi",reason="SourceNotFrozen",to_kind="linked"} 1.0'
        in text
    )


# ------------------------------------------------------------------------------------------------
# end to end through a real Prometheus
# ------------------------------------------------------------------------------------------------


def values(result: list[dict[str, object]]) -> dict[str, float]:
    """Prometheus query result -> {vm or label summary: value}."""
    out: dict[str, float] = {}
    for r in result:
        metric = r["metric"]
        assert isinstance(metric, dict)
        key = ",".join(
            f"{k}={v}" for k, v in sorted(metric.items()) if k not in ("job", "instance", "__name__")
        )
        value = r["value"]
        assert isinstance(value, list)
        out[key] = float(value[1])
    return out


@pytest.mark.prometheus
def test_prometheus_scrapes_the_fleet_and_forgets_gone_vms(
    prometheus_factory: Callable[..., PrometheusHandle], served: Callable[[Telemetry], Served]
) -> None:
    t = Telemetry()
    t.set_up(True)
    t.set_fleet(fleet_sample(("vdi-001", "vdi-002")))
    for seconds in (0.8, 1.2, 45.0):
        t.observe_clone_ready("vdi", "instant", seconds)
    s = served(t)
    prom = prometheus_factory([s.address], scrape_interval="1s")

    up = prom.wait_for('up{job="forkscale"}', lambda r: values(r) == {"": 1.0}, timeout=15)
    assert up[0]["metric"]["instance"] == s.address
    depth = prom.wait_for("forkscale_delta_chain_depth", lambda r: len(r) == 3)
    assert values(depth) == {
        "disk=scsi0:0,role=source,vm=vdi-src": 41.0,
        "disk=scsi0:0,role=clone,vm=vdi-001": 42.0,
        "disk=scsi0:0,role=clone,vm=vdi-002": 42.0,
    }
    assert values(prom.query("forkscale_host_pshare_saved_bytes")) == {"host=esx1": 4 * GiB}
    assert values(prom.query("forkscale_pool_pshare_saved_bytes")) == {"pool=vdi": 3 * GiB}
    assert values(prom.query("forkscale_pool_desired")) == {"pool=vdi": 4.0}
    assert values(prom.query("forkscale_pool_ready")) == {"pool=vdi": 2.0}
    assert values(prom.query("forkscale_pool_spares")) == {"pool=vdi": 1.0}
    assert values(prom.query("forkscale_clone_ready_seconds_count")) == {"kind=instant,pool=vdi": 3.0}
    assert values(prom.query('forkscale_clone_ready_seconds_bucket{le="1.0"}')) == {
        "kind=instant,le=1.0,pool=vdi": 1.0
    }

    # the next inventory sample no longer has vdi-002, and the chain of vdi-001 grew
    sample = fleet_sample(("vdi-001",))
    sample.chains = [
        ChainDepth("vdi-src", "scsi0:0", "source", 41),
        ChainDepth("vdi-001", "scsi0:0", "clone", 43),
    ]
    t.set_fleet(sample)
    _, body = s.get("/metrics")
    assert b'vm="vdi-002"' not in body
    prom.wait_for('forkscale_vm_memory_shared_bytes{vm="vdi-002"}', lambda r: r == [], timeout=10)
    assert prom.query('forkscale_delta_chain_depth{vm="vdi-002"}') == []
    assert values(prom.query('forkscale_delta_chain_depth{role="clone"}')) == {
        "disk=scsi0:0,role=clone,vm=vdi-001": 43.0
    }
    assert values(prom.query("forkscale_pool_ready")) == {"pool=vdi": 1.0}


def grafana_to_promql(expr: str) -> str:
    expr = re.sub(r"\$\{?__rate_interval\}?", "1m", expr)
    return re.sub(r"\$\{?pool\}?", ".*", expr)


@pytest.mark.prometheus
def test_rules_and_dashboard_queries_work_on_live_data(
    prometheus_factory: Callable[..., PrometheusHandle], served: Callable[[Telemetry], Served]
) -> None:
    """Real Prometheus loads metrics/rules.yml + alerts.yml, and every dashboard query shows data."""
    t = Telemetry()
    exercise_every_metric(t)
    s = served(t)
    stop = threading.Event()

    def keep_busy() -> None:  # counters and histograms must move for rate() to see them
        while not stop.wait(0.2):
            exercise_every_metric(t)

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        prom = prometheus_factory(
            [s.address],
            scrape_interval="1s",
            rule_files=[ROOT / "metrics/rules.yml", ROOT / "metrics/alerts.yml"],
        )
        groups = prom.api("rules")["groups"]
        assert {g["file"] for g in groups} == {
            str(ROOT / "metrics/rules.yml"),
            str(ROOT / "metrics/alerts.yml"),
        }
        records = [r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"]
        assert records
        for name in records:
            prom.wait_for(name, bool, timeout=15)
        dashboard = json.loads((ROOT / "metrics/dashboards/forkscale.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = grafana_to_promql(target["expr"])
                result = prom.wait_for(expr, bool, timeout=10)
                assert result, f"{panel['title']!r}: {expr}"
        unhealthy = [
            (r["name"], r.get("lastError"))
            for g in prom.api("rules")["groups"]
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        assert unhealthy == []
        # 2 ready clones of 4 desired: the alert is evaluated on live data and waits out its `for`
        pending = prom.wait_for('ALERTS{alertname="ForkscalePoolBelowDesired"}', bool, timeout=10)
        assert values(pending) == {
            "alertname=ForkscalePoolBelowDesired,alertstate=pending,pool=vdi,severity=warning": 1.0
        }
    finally:
        stop.set()
        busy.join()
