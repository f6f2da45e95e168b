"""Builds forkscale.json, the Grafana dashboard, from the panel list below.

    python3 metrics/dashboards/build.py          # rewrite forkscale.json
    python3 metrics/dashboards/build.py --check  # exit 1 when forkscale.json is out of date

The JSON is committed (Grafana provisioning reads it as is); tests/test_metrics_assets.py checks
that it matches this script and that every metric it queries is one forkscale exports.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("forkscale.json")
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
P = 'pool=~"$pool"'


@dataclass
class Q:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Panel:
    type: str
    title: str
    w: int
    h: int
    queries: list[Q]
    description: str = ""
    unit: str = "short"
    stack: bool = False
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    mappings: list[dict[str, Any]] = field(default_factory=list)
    minmax: tuple[float | None, float | None] = (None, None)


@dataclass
class Row:
    title: str
    panels: list[Panel]


def ts(title: str, w: int, queries: list[Q], **kw: Any) -> Panel:
    return Panel("timeseries", title, w, 8, queries, **kw)


def stat(title: str, w: int, query: Q, **kw: Any) -> Panel:
    return Panel("stat", title, w, 4, [query], **kw)


def table(title: str, w: int, queries: list[Q], **kw: Any) -> Panel:
    return Panel("table", title, w, 9, queries, **kw)


CHAIN_THRESHOLDS: list[tuple[float | None, str]] = [(None, "green"), (80, "yellow"), (200, "red")]
FROZEN_MAPPING: list[dict[str, Any]] = [
    {
        "type": "value",
        "options": {
            "0": {"text": "NOT FROZEN", "color": "red", "index": 0},
            "1": {"text": "frozen", "color": "green", "index": 1},
        },
    }
]
UP_MAPPING: list[dict[str, Any]] = [
    {
        "type": "value",
        "options": {
            "0": {"text": "disconnected", "color": "red", "index": 0},
            "1": {"text": "connected", "color": "green", "index": 1},
        },
    }
]

ROWS: list[Row] = [
    Row(
        "Fleet",
        [
            stat(
                "Ready / desired",
                4,
                Q(f"sum(forkscale_pool_ready{{{P}}}) / sum(forkscale_pool_desired{{{P}}})"),
                unit="percentunit",
                thresholds=[(None, "red"), (0.9, "yellow"), (1, "green")],
                description="Clones that reached guest-ready (ready or claimed) over what the policies want.",
            ),
            stat(
                "Live clones",
                4,
                Q(f'sum(forkscale_clones{{{P},state!~"gone|failed"}})'),
                description="Clones in any state but gone and failed.",
            ),
            stat(
                "Spares",
                4,
                Q(f"sum(forkscale_pool_spares{{{P}}})"),
                description="Ready clones nobody has claimed yet.",
            ),
            stat(
                "Instant clone readiness p95",
                4,
                Q(f'max(pool_kind:forkscale_clone_ready_seconds:p95_rate10m{{{P},kind="instant"}})'),
                unit="s",
                thresholds=[(None, "green"), (10, "yellow"), (30, "red")],
                description="Request to guest ready, 95th percentile over 10 minutes (alert above 30 s).",
            ),
            stat(
                "Fallbacks (1h)",
                4,
                Q(f"sum(increase(forkscale_fallbacks_total{{{P}}}[1h]))"),
                thresholds=[(None, "green"), (1, "yellow"), (10, "red")],
                description="Steps down the instant -> linked -> full ladder in the last hour.",
            ),
            stat(
                "Sources frozen",
                4,
                Q(f"min(forkscale_source_frozen{{{P}}})"),
                mappings=FROZEN_MAPPING,
                thresholds=[(None, "red"), (1, "green")],
                description="NOT FROZEN when any source of the selected pools lost runtime.instantCloneFrozen.",
            ),
            ts(
                "Desired, ready and spare clones",
                12,
                [
                    Q(f"sum by (pool) (forkscale_pool_desired{{{P}}})", "{{pool}} desired"),
                    Q(f"sum by (pool) (forkscale_pool_ready{{{P}}})", "{{pool}} ready"),
                    Q(f"sum by (pool) (forkscale_pool_spares{{{P}}})", "{{pool}} spares"),
                ],
            ),
            ts(
                "Clones by kind and state",
                12,
                [Q(f"sum by (kind, state) (forkscale_clones{{{P}}})", "{{kind}} {{state}}")],
                stack=True,
            ),
            ts(
                "Request to guest ready (p50, p95)",
                12,
                [
                    Q(f"pool_kind:forkscale_clone_ready_seconds:p50_rate10m{{{P}}}", "{{pool}} {{kind}} p50"),
                    Q(f"pool_kind:forkscale_clone_ready_seconds:p95_rate10m{{{P}}}", "{{pool}} {{kind}} p95"),
                ],
                unit="s",
            ),
            ts(
                "Clones ready per minute",
                12,
                [Q(f"60 * pool_kind:forkscale_clones_ready:rate10m{{{P}}}", "{{pool}} {{kind}}")],
                stack=True,
            ),
            ts(
                "Fallbacks by reason",
                12,
                [
                    Q(
                        f"60 * pool_reason:forkscale_fallbacks:rate5m{{{P}}}",
                        "{{pool}} {{from_kind}} -> {{to_kind}}: {{reason}}",
                    )
                ],
                description="Per minute.",
                stack=True,
            ),
            ts(
                "Clone faults",
                12,
                [
                    Q(
                        f"sum by (pool, kind, fault) (rate(forkscale_clone_faults_total{{{P}}}[$__rate_interval])) * 60",
                        "{{pool}} {{kind}} {{fault}}",
                    )
                ],
                description="Per minute.",
                stack=True,
            ),
            ts(
                "Policy decisions",
                24,
                [
                    Q(
                        f"sum by (pool, direction, reason) (increase(forkscale_policy_decisions_total{{{P}}}[$__rate_interval]))",
                        "{{pool}} {{direction}}: {{reason}}",
                    )
                ],
                stack=True,
            ),
            ts(
                "Clones by image generation",
                12,
                [Q(f"sum by (pool, generation) (forkscale_pool_image_clones{{{P}}})", "{{pool}} g{{generation}}")],
                description="A push image moves every clone from the active generation to the target one.",
                stack=True,
            ),
            ts(
                "Push image / refresh steps",
                12,
                [
                    Q(f"sum by (pool, kind, state) (forkscale_operation_steps{{{P}}})", "{{pool}} {{kind}} {{state}}"),
                    Q(f"max by (pool, role) (forkscale_pool_image_generation{{{P}}})", "{{pool}} {{role}} generation"),
                ],
                description="Steps of each pool's open operation by state (waiting: claimed clones; failed: the "
                "health gate paused it), and the active and target image generations.",
            ),
        ],
    ),
    Row(
        "Memory sharing (P-Share)",
        [
            ts(
                "Saved by page sharing, per host",
                12,
                [Q("forkscale_host_pshare_saved_bytes", "{{host}}")],
                unit="bytes",
                stack=True,
                description="mem.shared - mem.sharedcommon.",
            ),
            ts(
                "Host shared vs sharedcommon",
                12,
                [
                    Q("forkscale_host_memory_shared_bytes", "{{host}} shared"),
                    Q("forkscale_host_memory_sharedcommon_bytes", "{{host}} sharedcommon"),
                ],
                unit="bytes",
            ),
            ts(
                "Saved by page sharing, per pool",
                12,
                [Q(f"pool:forkscale_pool_pshare_saved_bytes:sum{{{P}}}", "{{pool}}")],
                unit="bytes",
                stack=True,
            ),
            ts(
                "Shared part of clone memory",
                12,
                [Q(f"pool:forkscale_vm_memory_shared:ratio{{{P}}}", "{{pool}}")],
                unit="percentunit",
                minmax=(0, 1),
            ),
            table(
                "VMs with the most private memory",
                24,
                [
                    Q(f"topk(20, forkscale_vm_memory_private_bytes{{{P}}})", "private", instant=True),
                    Q(
                        f"forkscale_vm_memory_shared_bytes{{{P}}}"
                        f" and on (pool, vm) topk(20, forkscale_vm_memory_private_bytes{{{P}}})",
                        "shared",
                        instant=True,
                    ),
                ],
                unit="bytes",
            ),
        ],
    ),
    Row(
        "Delta chains",
        [
            Panel(
                "gauge",
                "Deepest delta chain",
                6,
                8,
                [Q("max(forkscale_delta_chain_depth)")],
                thresholds=CHAIN_THRESHOLDS,
                minmax=(0, 255),
                description="vSphere refuses new delta disks beyond 255 links; warning above 80, page above 200.",
            ),
            ts(
                "Deepest chain by role",
                9,
                [Q("role:forkscale_delta_chain_depth:max", "{{role}}")],
                thresholds=CHAIN_THRESHOLDS,
            ),
            ts(
                "Delta disk bytes by role",
                9,
                [Q("role:forkscale_delta_disk_bytes:sum", "{{role}}")],
                unit="bytes",
                stack=True,
            ),
            table(
                "Deepest chains",
                24,
                [Q("topk(20, forkscale_delta_chain_depth)", "depth", instant=True)],
                thresholds=CHAIN_THRESHOLDS,
            ),
        ],
    ),
    Row(
        "Controller",
        [
            stat(
                "vCenter session",
                4,
                Q("min(forkscale_up)"),
                mappings=UP_MAPPING,
                thresholds=[(None, "red"), (1, "green")],
            ),
            stat(
                "Inventory age",
                4,
                Q("max(forkscale_inventory_age_seconds)"),
                unit="s",
                thresholds=[(None, "green"), (120, "yellow"), (300, "red")],
            ),
            stat(
                "vSphere task fault ratio",
                4,
                Q(
                    "sum(rate(forkscale_vsphere_task_faults_total[5m])) / sum(rate(forkscale_vsphere_task_seconds_count[5m]))"
                ),
                unit="percentunit",
                thresholds=[(None, "green"), (0.05, "yellow"), (0.1, "red")],
            ),
            stat(
                "Budget slots in use",
                4,
                Q('sum(forkscale_budget_in_flight{scope="vcenter"})'),
                description="Operations holding a vCenter-wide budget slot.",
            ),
            stat(
                "Policy decisions (1h)",
                8,
                Q("sum(increase(forkscale_policy_decisions_total[1h]))"),
            ),
            ts(
                "vSphere task latency p95",
                12,
                [Q("method:forkscale_vsphere_task_seconds:p95_rate5m", "{{method}}")],
                unit="s",
            ),
            ts(
                "vSphere tasks and faults",
                12,
                [
                    Q(
                        "sum by (method) (rate(forkscale_vsphere_task_seconds_count[$__rate_interval])) * 60",
                        "{{method}}",
                    ),
                    Q(
                        "sum by (method, fault) (rate(forkscale_vsphere_task_faults_total[$__rate_interval])) * 60",
                        "{{method}} {{fault}}",
                    ),
                ],
                description="Per minute.",
            ),
            ts(
                "Budget slots in flight",
                12,
                [Q("forkscale_budget_in_flight", "{{scope}}")],
            ),
            ts(
                "Budget wait p95",
                12,
                [Q("scope:forkscale_budget_wait_seconds:p95_rate5m", "{{scope}}")],
                unit="s",
            ),
            stat(
                "Replicas",
                4,
                Q("max(forkscale_replicas)"),
                description="Live `serve` replicas on the ledger.",
            ),
            stat(
                "Failovers (1h)",
                4,
                Q("sum(increase(forkscale_pool_failovers_total[1h]))"),
                description="Pools taken over from a replica that died or stopped renewing its lease.",
                thresholds=[(None, "green"), (1, "yellow")],
            ),
            stat(
                "Fenced writes (1h)",
                4,
                Q("sum(increase(forkscale_ledger_fenced_writes_total[1h]))"),
                description="Writes refused because the writer's lease had been taken over.",
                thresholds=[(None, "green"), (1, "yellow")],
            ),
            stat(
                "vCenters down",
                4,
                Q("sum(1 - forkscale_vcenter_up)"),
                thresholds=[(None, "green"), (1, "red")],
            ),
            ts(
                "Owners per pool",
                8,
                [Q("sum by (pool) (forkscale_pool_owned)", "{{pool}}")],
                description="1 is healthy: exactly one replica acts on the pool; 0: nobody does.",
            ),
        ],
    ),
]


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, q in enumerate(p.queries):
        t: dict[str, Any] = {"datasource": DS, "refId": chr(ord("A") + i), "expr": q.expr}
        if q.legend:
            t["legendFormat"] = q.legend
        if q.instant or p.type == "table":
            t.update({"instant": True, "range": False, "format": "table"})
        else:
            t.update({"instant": False, "range": True})
        targets.append(t)
    defaults: dict[str, Any] = {
        "unit": p.unit,
        "thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in p.thresholds]},
        "mappings": p.mappings,
    }
    if p.minmax[0] is not None:
        defaults["min"] = p.minmax[0]
    if p.minmax[1] is not None:
        defaults["max"] = p.minmax[1]
    options: dict[str, Any] = {}
    if p.type == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if p.stack else 0,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if len(p.thresholds) > 1 else "off"},
        }
        options = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]}}
        options["tooltip"] = {"mode": "multi", "sort": "desc"}
    elif p.type in ("stat", "gauge"):
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        if p.type == "stat":
            options.update({"colorMode": "background", "graphMode": "area", "textMode": "value"})
    elif p.type == "table":
        options = {"showHeader": True, "sortBy": [{"displayName": "Value #A", "desc": True}]}
    out: dict[str, Any] = {
        "id": pid,
        "type": p.type,
        "title": p.title,
        "datasource": DS,
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }
    if p.description:
        out["description"] = p.description
    if p.type == "table":
        out["transformations"] = [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True}}},
        ]
    return out


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        x = 0
        line_h = 0
        for p in row.panels:
            if x + p.w > 24:
                y += line_h
                x, line_h = 0, 0
            panels.append(_panel_json(p, pid, x, y))
            pid += 1
            x += p.w
            line_h = max(line_h, p.h)
        y += line_h
    return {
        "uid": "forkscale",
        "title": "forkscale",
        "description": "Instant-clone fleets: pools, readiness, fallbacks, memory sharing, delta chains, controller.",
        "tags": ["forkscale", "vsphere"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                },
                {
                    "name": "pool",
                    "label": "Pool",
                    "type": "query",
                    "datasource": DS,
                    "definition": "label_values(forkscale_pool_desired, pool)",
                    "query": {"query": "label_values(forkscale_pool_desired, pool)", "refId": "pool"},
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "hide": 0,
                    "sort": 1,
                    "regex": "",
                    "options": [],
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date; run python3 {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
