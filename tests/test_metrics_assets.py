"""The monitoring assets in metrics/: promtool-valid, unit-tested, and written against real metrics.

Every metric name in the dashboard, the recording rules and the alerts must be a series that
`forkscale.observe.telemetry` really exports (read from its rendered exposition, not from a list kept
here), or a recording rule defined in metrics/rules.yml; every label they select, group or
legend by must exist on the metrics of that expression.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from forkscale.observe.telemetry import METRICS, Telemetry
from tests.fixtures.prometheus import SETUP_HINT, promtool_binary
from tests.test_telemetry import exercise_every_metric

ROOT = Path(__file__).resolve().parents[1]
METRICS_DIR = ROOT / "metrics"
RULES = METRICS_DIR / "rules.yml"
ALERTS = METRICS_DIR / "alerts.yml"
DASHBOARD = METRICS_DIR / "dashboards" / "forkscale.json"
RULE_TESTS = sorted((METRICS_DIR / "tests").glob("*.yml"))

# Series Prometheus itself adds for every target.
PROMETHEUS_BUILTINS: dict[str, set[str]] = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__range_s"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = promtool_binary()
    if path is None:
        pytest.skip(SETUP_HINT)
    return path


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------------------------
# promtool
# ------------------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    res = run([promtool, "check", "rules", str(RULES), str(ALERTS)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == 2


def test_promtool_check_example_config(promtool: str) -> None:
    res = run([promtool, "check", "config", str(METRICS_DIR / "prometheus.yml")])
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool unit tests in metrics/tests/"
    res = run([promtool, "test", "rules", *map(str, RULE_TESTS)], cwd=Path("/"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(RULE_TESTS)


def load_rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recording_rules() -> dict[str, str]:
    return {r["record"]: r["expr"] for r in load_rules(RULES) if "record" in r}


def alert_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in load_rules(ALERTS) if "alert" in r}


def test_rule_files_hold_what_their_names_say() -> None:
    assert all("record" in r for r in load_rules(RULES))
    assert all("alert" in r for r in load_rules(ALERTS))
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in ("warning", "page"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def _broken_copy(tmp_path: Path, break_records: bool, break_alerts: bool) -> list[Path]:
    """metrics/ copied to tmp_path, with every recording rule or alert made to produce nothing useful."""
    dst = tmp_path / "metrics"
    shutil.copytree(METRICS_DIR, dst, ignore=shutil.ignore_patterns("dashboards"))
    for path, key, broken, enabled in (
        (dst / "rules.yml", "record", "vector(0)", break_records),
        (dst / "alerts.yml", "alert", "vector(1) == 0", break_alerts),
    ):
        if not enabled:
            continue
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                assert key in rule
                rule["expr"] = broken
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return sorted((dst / "tests").glob("*.yml"))


def test_every_alert_is_caught_by_a_unit_test_when_broken(promtool: str, tmp_path: Path) -> None:
    tests = _broken_copy(tmp_path, break_records=False, break_alerts=True)
    res = run([promtool, "test", "rules", *map(str, tests)], cwd=tmp_path)
    assert res.returncode != 0
    failed = set(re.findall(r"alertname: (\w+), time:", res.stdout + res.stderr))
    assert failed == set(alert_rules()), f"alerts no test notices when broken: {set(alert_rules()) - failed}"


def test_every_recording_rule_is_caught_by_a_unit_test_when_broken(promtool: str, tmp_path: Path) -> None:
    tests = _broken_copy(tmp_path, break_records=True, break_alerts=False)
    res = run([promtool, "test", "rules", *map(str, tests)], cwd=tmp_path)
    assert res.returncode != 0
    failed_exprs = re.findall(r'expr: "(.*)", time:', res.stdout + res.stderr)
    failed = {name for name in recording_rules() if any(name in e for e in failed_exprs)}
    assert failed == set(recording_rules()), f"rules no test notices: {set(recording_rules()) - failed}"


# ------------------------------------------------------------------------------------------------
# PromQL names and labels
# ------------------------------------------------------------------------------------------------

KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}  # fmt: skip
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(rf"({IDENT})?\s*\{{([^}}]*)\}}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
NUMBER = re.compile(r"(?<![\w:.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?(?![\w:])")


@dataclass
class Parsed:
    names: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    """Labels the expression selects on, groups by or matches on."""
    selectors: list[tuple[str, set[str]]] = field(default_factory=list)


def substitute_grafana_vars(expr: str) -> str:
    for var in GRAFANA_BUILTIN_VARS:
        expr = expr.replace(f"${var}", "1m").replace(f"${{{var}}}", "1m")
    return re.sub(r"\$\{?(\w+)\}?", r"\1", expr)


def parse_promql(expr: str) -> Parsed:
    """Metric names and label names in a PromQL expression (enough of PromQL for our assets)."""
    out = Parsed()
    for m in SELECTOR.finditer(expr):
        labels = set(MATCHER_LABEL.findall(m.group(2)))
        out.labels |= labels
        out.selectors.append((m.group(1) or "", labels))
    rest = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", expr)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    for m in GROUPING.finditer(rest):
        out.labels |= {label.strip() for label in m.group(2).split(",") if label.strip()}
    rest = GROUPING.sub(" ", rest)
    rest = NUMBER.sub(" ", rest)
    for m in re.finditer(rf"({IDENT})(\s*\()?", rest):
        word, call = m.group(1), m.group(2)
        if call or word in KEYWORDS:
            continue
        out.names.add(word)
    return out


def test_parse_promql_understands_our_expressions() -> None:
    p = parse_promql(
        'histogram_quantile(0.95, sum by (pool, kind, le) (rate(forkscale_clone_ready_seconds_bucket{pool=~"a|b"}[10m])))'
        " > 1e3 and on (pool) sum by (pool) (forkscale_pool_desired offset 1h) * 0.5"
    )
    assert p.names == {"forkscale_clone_ready_seconds_bucket", "forkscale_pool_desired"}
    assert p.labels == {"pool", "kind", "le"}
    p = parse_promql('pool_kind:forkscale_clone_ready_seconds:p95_rate10m{kind!="instant"} > 300')
    assert p.names == {"pool_kind:forkscale_clone_ready_seconds:p95_rate10m"}
    assert p.selectors == [("pool_kind:forkscale_clone_ready_seconds:p95_rate10m", {"kind"})]
    assert parse_promql("forkscale_nope_total - vector(1)").names == {"forkscale_nope_total"}


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from the exposition of a Telemetry with every metric set."""
    t = Telemetry()
    exercise_every_metric(t)
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(t.render().decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_exported_series_cover_every_metric_spec(exported: dict[str, set[str]]) -> None:
    for spec in METRICS:
        for name in spec.series_names():
            assert name in exported, f"{name} is not in the exposition"
            extra = {"le"} if name.endswith("_bucket") else set()
            assert exported[name] == set(spec.labels) | extra, name


def rule_output_labels(expr: str, known: dict[str, set[str]]) -> set[str]:
    """Labels a recording rule's series carry: its outermost aggregation's `by`, else its inputs'."""
    m = re.search(r"\bby\s*\(([^)]*)\)", expr)
    if m:
        return {label.strip() for label in m.group(1).split(",")} - {"le", ""}
    labels: set[str] = set()
    for name in parse_promql(expr).names:
        labels |= known.get(name, set())
    return labels


def resolve(exported: dict[str, set[str]]) -> dict[str, set[str]]:
    """Exported series plus Prometheus's own plus recording rules -> their labels."""
    known = {name: labels | TARGET_LABELS for name, labels in exported.items()}
    known.update(PROMETHEUS_BUILTINS)
    for name, expr in recording_rules().items():
        known[name] = rule_output_labels(expr, known)
    return known


def check_expression(where: str, expr: str, known: dict[str, set[str]], legend: str = "") -> list[str]:
    problems: list[str] = []
    parsed = parse_promql(substitute_grafana_vars(expr))
    if not parsed.names:
        problems.append(f"{where}: no metric in {expr!r}")
    available: set[str] = {"le"}
    for name in parsed.names:
        if name not in known:
            problems.append(
                f"{where}: {name!r} is neither exported by forkscale.observe.telemetry nor a recording rule"
            )
        else:
            available |= known[name]
    for name, labels in parsed.selectors:
        if name in known and not labels <= known[name] | ({"le"} if name.endswith("_bucket") else set()):
            problems.append(f"{where}: {name} has no label(s) {sorted(labels - known[name])}")
    if unknown := parsed.labels - available:
        problems.append(f"{where}: labels {sorted(unknown)} exist on none of {sorted(parsed.names)}")
    if unknown := set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) - available:
        problems.append(f"{where}: legend uses labels {sorted(unknown)} the query does not have")
    return problems


def test_check_expression_catches_wrong_names_and_labels(exported: dict[str, set[str]]) -> None:
    known = resolve(exported)
    assert check_expression("x", "sum by (pool) (forkscale_pool_ready)", known) == []
    assert check_expression("x", "forkscale_pool_redy", known)
    assert check_expression("x", 'forkscale_pool_ready{pol="a"}', known)
    assert check_expression("x", "sum by (kind) (forkscale_pool_ready)", known)
    assert check_expression("x", "pool:forkscale_pool_readiness:ratio", known, legend="{{kind}}")
    assert check_expression("x", "pool:forkscale_nope:ratio", known)
    assert check_expression("x", "forkscale_fallbacks", known)  # a counter is stored as *_total


def test_rules_and_alerts_use_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    known = resolve(exported)
    problems: list[str] = []
    for name, expr in recording_rules().items():
        problems += check_expression(f"rules.yml {name}", expr, known)
    for name, rule in alert_rules().items():
        problems += check_expression(f"alerts.yml {name}", rule["expr"], known)
        text = " ".join(rule["annotations"].values())
        parsed = parse_promql(rule["expr"])
        available = set().union(*(known.get(n, set()) for n in parsed.names))
        if unknown := set(re.findall(r"\$labels\.(\w+)", text)) - available - {"alertname"}:
            problems.append(f"alerts.yml {name}: annotations use labels {sorted(unknown)}")
    assert problems == []


# ------------------------------------------------------------------------------------------------
# Grafana dashboard
# ------------------------------------------------------------------------------------------------

GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
DATASOURCE_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string", "minLength": 1}},
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "tags"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "version": {"type": "integer"},
        "editable": {"type": "boolean"},
        "refresh": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^\\w+$"},
                            "type": {"enum": ["datasource", "query", "custom", "constant", "interval"]},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": GRID_POS,
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": {
                    "required": ["panels", "collapsed"],
                    "properties": {"gridPos": {"properties": {"w": {"const": 24}, "h": {"const": 1}}}},
                },
                "else": {
                    "required": ["targets", "datasource", "fieldConfig"],
                    "properties": {
                        "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge", "text"]},
                        "datasource": DATASOURCE_REF,
                        "targets": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["refId", "expr", "datasource"],
                                "properties": {
                                    "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                    "expr": {"type": "string", "minLength": 1},
                                    "legendFormat": {"type": "string"},
                                    "datasource": DATASOURCE_REF,
                                },
                            },
                        },
                        "fieldConfig": {
                            "type": "object",
                            "required": ["defaults"],
                            "properties": {"defaults": {"type": "object", "required": ["unit"]}},
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "forkscale_dashboard_build", DASHBOARD.with_name("build.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_what_build_py_makes() -> None:
    assert DASHBOARD.read_text() == load_builder().render(), "run python3 metrics/dashboards/build.py"


def test_dashboard_matches_schema(dashboard: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_dashboard_schema_rejects_a_panel_without_targets(dashboard: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(dashboard))
    panel = next(p for p in broken["panels"] if p["type"] == "timeseries")
    del panel["targets"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_dashboard_layout(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Fleet", "Memory sharing (P-Share)", "Delta chains", "Controller"]
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for other_title, (x, y, w, h) in boxes:
            overlap = g["x"] < x + w and x < g["x"] + g["w"] and g["y"] < y + h and y < g["y"] + g["h"]
            assert not overlap, f"{p['title']!r} overlaps {other_title!r}"
        boxes.append((p["title"], (g["x"], g["y"], g["w"], g["h"])))
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_variables_are_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTIN_VARS
    text = json.dumps(dashboard["panels"])
    used = set(re.findall(r"\$\{?(\w+)", text))
    assert used <= defined, used - defined
    assert "datasource" in defined and "pool" in defined


def test_dashboard_uses_only_exported_metrics(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    known = resolve(exported)
    problems: list[str] = []
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            problems += check_expression(
                f"panel {p['title']!r}/{t['refId']}", t["expr"], known, t.get("legendFormat", "")
            )
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            assert m, var["definition"]
            metric, label = m.groups()
            if metric not in exported or label not in exported[metric]:
                problems.append(f"variable {var['name']}: {metric} has no label {label}")
    assert problems == []
    # every metric family shows up somewhere on the dashboard
    used = set().union(*(parse_promql(substitute_grafana_vars(t["expr"])).names
                         for p in dashboard["panels"] for t in p.get("targets", [])))  # fmt: skip
    for name, expr in recording_rules().items():
        if name in used:
            used |= parse_promql(expr).names
    missing = [s.name for s in METRICS if not set(s.series_names()) & used]
    assert missing == [], f"metrics not shown on the dashboard: {missing}"


def test_readme_explains_every_metric_and_alert() -> None:
    readme = (METRICS_DIR / "README.md").read_text()
    missing = [s.name for s in METRICS if f"`{s.name}`" not in readme]
    missing += [a for a in alert_rules() if f"`{a}`" not in readme]
    assert missing == []
