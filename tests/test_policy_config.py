"""parse_policy: the documented YAML shape parses, and every kind of mistake names its field."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest
import yaml

from forkscale.core.errors import SpecError
from forkscale.policy import HttpSource, PolicyConfig, PrometheusSource, ScheduleWindow, parse_policy
from forkscale.policy.config import parse_metric_source

P = "pools[0].policy"
PROM = {"prometheus": {"url": "http://127.0.0.1:9999", "query": "sum(yarn_pending_containers)"}}


def tv(**kw: Any) -> dict[str, Any]:
    return {"strategy": "target-value", "target": 10, "max": 100, "metric": PROM, **kw}


def win(**kw: Any) -> dict[str, Any]:
    return {"name": "w", "days": ["mon"], "from": "07:45", "to": "18:00", "min": 1, **kw}


def test_documented_yaml_parses():
    doc = yaml.safe_load(
        """
        policy:
          strategy: target-value
          min: 0
          max: 100
          target: 10
          precision: 0.1
          max_step: 4
          cooldown_up_s: 60
          cooldown_down_s: 300
          evaluate_every_s: 15
          metric:
            prometheus: {url: http://127.0.0.1:9999, query: 'sum(yarn_pending_containers)'}
          schedule:
            - {name: office-hours, days: [mon,tue,wed,thu,fri], from: "07:45", to: "18:00", tz: Europe/Berlin,
               min: 50, max: 100}
        """
    )
    cfg = parse_policy(doc["policy"], P)
    assert cfg == PolicyConfig(
        strategy="target-value", min=0, max=100, target=10.0, precision=0.1, max_step=4,
        cooldown_up_s=60.0, cooldown_down_s=300.0, evaluate_every_s=15.0,
        metric=PrometheusSource(url="http://127.0.0.1:9999", query="sum(yarn_pending_containers)", timeout_s=5.0),
        schedule=(ScheduleWindow(name="office-hours", days=frozenset(range(5)), start=time(7, 45), end=time(18, 0),
                                 tz="Europe/Berlin", min=50, max=100),),
    )


@pytest.mark.parametrize(
    "raw, count, expected",
    [
        (None, 7, PolicyConfig(strategy="fixed", count=7)),
        (None, None, PolicyConfig(strategy="fixed", count=0)),
        ({"strategy": "fixed"}, 3, PolicyConfig(strategy="fixed", count=3)),
        ({"strategy": "fixed", "count": 5}, 3, PolicyConfig(strategy="fixed", count=5)),
        ({"strategy": "headroom", "headroom": 0, "max": 10}, None,
         PolicyConfig(strategy="headroom", headroom=0, max=10)),
        ({"strategy": "headroom", "headroom": 5, "min": 10, "max": 10, "cooldown_down_s": 0}, None,
         PolicyConfig(strategy="headroom", headroom=5, min=10, max=10, cooldown_down_s=0.0)),
    ],
    ids=["no-policy-is-pool-count", "no-policy-no-count", "fixed-inherits-count", "fixed-own-count",
         "headroom-zero", "min-equals-max"],
)
def test_valid_policies(raw, count, expected):
    assert parse_policy(raw, P, count=count) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"http": {"url": "http://127.0.0.1:8000/load"}}, HttpSource(url="http://127.0.0.1:8000/load")),
        ({"http": {"url": "https://h/x", "json_path": "stats.0.pending", "timeout_s": 2}},
         HttpSource(url="https://h/x", json_path="stats.0.pending", timeout_s=2.0)),
        ({"prometheus": {"url": "http://p:9999/prefix/", "query": " up "}},
         PrometheusSource(url="http://p:9999/prefix/", query="up")),
    ],
    ids=["http-plain", "http-json-path", "prometheus-prefix"],
)
def test_metric_sources(raw, expected):
    assert parse_metric_source(raw, "m") == expected


def test_window_days_defaults_and_spellings():
    cfg = parse_policy(tv(schedule=[{"from": "08:00", "to": "24:00", "max": 3},
                                    win(name="x", days=["Monday", "SUN"])]), P)
    every, named = cfg.schedule
    assert (every.name, every.days, every.end, every.tz) == ("schedule[0]", frozenset(range(7)), None, "UTC")
    assert named.days == frozenset({0, 6})


ERRORS = [
    # shape and keys
    ("not-a-mapping", [1, 2], P, "must be a mapping"),
    ("unknown-key", tv(cooldown_dwon_s=5), f"{P}.cooldown_dwon_s", "unknown key"),
    ("missing-strategy", {"max": 3}, f"{P}.strategy", "is required"),
    ("unknown-strategy", {"strategy": "magic"}, f"{P}.strategy", "unknown strategy 'magic'"),
    ("key-of-other-strategy", {"strategy": "headroom", "headroom": 2, "max": 5, "target": 3}, f"{P}.target",
     "applies only to strategy target-value"),
    ("count-under-headroom", {"strategy": "headroom", "headroom": 2, "max": 5, "count": 3}, f"{P}.count",
     "applies only to strategy fixed"),
    # numbers
    ("negative-min", tv(min=-1), f"{P}.min", "must not be negative"),
    ("float-max", tv(max=2.5), f"{P}.max", "whole number"),
    ("bool-max", tv(max=True), f"{P}.max", "whole number"),
    ("null-max", tv(max=None), f"{P}.max", "got null"),
    ("string-min", tv(min="3"), f"{P}.min", "whole number"),
    ("min-above-max", tv(min=11, max=10), f"{P}.min", "min 11 is greater than max 10"),
    ("missing-max-headroom", {"strategy": "headroom", "headroom": 2}, f"{P}.max", "is required"),
    ("missing-max-target", {k: v for k, v in tv().items() if k != "max"}, f"{P}.max", "is required"),
    ("negative-headroom", {"strategy": "headroom", "headroom": -2, "max": 5}, f"{P}.headroom", "negative"),
    ("missing-headroom", {"strategy": "headroom", "max": 5}, f"{P}.headroom", "is required"),
    ("fixed-without-count", {"strategy": "fixed"}, f"{P}.count", "is required"),
    ("fixed-negative-count", {"strategy": "fixed", "count": -1}, f"{P}.count", "negative"),
    ("max-step-zero", tv(max_step=0), f"{P}.max_step", "at least 1"),
    ("negative-cooldown", tv(cooldown_up_s=-1), f"{P}.cooldown_up_s", ">= 0"),
    ("zero-evaluate-every", tv(evaluate_every_s=0), f"{P}.evaluate_every_s", "greater than 0"),
    ("string-cooldown", tv(cooldown_down_s="5m"), f"{P}.cooldown_down_s", "must be a number"),
    # target-value
    ("missing-target", {k: v for k, v in tv().items() if k != "target"}, f"{P}.target", "is required"),
    ("zero-target", tv(target=0), f"{P}.target", "greater than 0"),
    ("nan-target", tv(target=float("nan")), f"{P}.target", "must be a number"),
    ("precision-one", tv(precision=1), f"{P}.precision", "[0, 1)"),
    ("precision-negative", tv(precision=-0.1), f"{P}.precision", "[0, 1)"),
    # metric sources
    ("missing-metric", {k: v for k, v in tv().items() if k != "metric"}, f"{P}.metric", "is required"),
    ("metric-not-mapping", tv(metric="up"), f"{P}.metric", "must be a mapping"),
    ("metric-two-sources", tv(metric={**PROM, "http": {"url": "http://h/"}}), f"{P}.metric", "exactly one"),
    ("metric-unknown-kind", tv(metric={"graphite": {}}), f"{P}.metric.graphite", "unknown key"),
    ("metric-empty", tv(metric={}), f"{P}.metric", "exactly one"),
    ("prom-no-query", tv(metric={"prometheus": {"url": "http://h:1"}}), f"{P}.metric.prometheus.query",
     "is required"),
    ("prom-blank-query", tv(metric={"prometheus": {"url": "http://h:1", "query": "  "}}),
     f"{P}.metric.prometheus.query", "is required"),
    ("prom-bad-url", tv(metric={"prometheus": {"url": "127.0.0.1:9999", "query": "up"}}),
     f"{P}.metric.prometheus.url", "http:// or https://"),
    ("prom-bad-port", tv(metric={"prometheus": {"url": "http://h:99999", "query": "up"}}),
     f"{P}.metric.prometheus.url", "bad port"),
    ("prom-unknown-key", tv(metric={"prometheus": {"url": "http://h", "query": "up", "step": 1}}),
     f"{P}.metric.prometheus.step", "unknown key"),
    ("http-no-url", tv(metric={"http": {}}), f"{P}.metric.http.url", "is required"),
    ("http-ftp-url", tv(metric={"http": {"url": "ftp://h/x"}}), f"{P}.metric.http.url", "http://"),
    ("http-bad-json-path", tv(metric={"http": {"url": "http://h/", "json_path": "a..b"}}),
     f"{P}.metric.http.json_path", "dotted path"),
    ("http-zero-timeout", tv(metric={"http": {"url": "http://h/", "timeout_s": 0}}),
     f"{P}.metric.http.timeout_s", "greater than 0"),
    # schedule windows
    ("schedule-not-list", tv(schedule={"from": "07:00"}), f"{P}.schedule", "must be a list"),
    ("window-not-mapping", tv(schedule=["mon 07:00"]), f"{P}.schedule[0]", "must be a mapping"),
    ("window-unknown-key", tv(schedule=[win(until="19:00")]), f"{P}.schedule[0].until", "unknown key"),
    ("window-bad-day", tv(schedule=[win(), win(name="b", days=["mon", "funday"])]), f"{P}.schedule[1].days[1]",
     "unknown day 'funday'"),
    ("window-empty-days", tv(schedule=[win(days=[])]), f"{P}.schedule[0].days", "non-empty"),
    ("window-no-from", tv(schedule=[{k: v for k, v in win().items() if k != "from"}]), f"{P}.schedule[0].from",
     "is required"),
    ("window-no-to", tv(schedule=[{k: v for k, v in win().items() if k != "to"}]), f"{P}.schedule[0].to",
     "is required"),
    ("window-unquoted-time", tv(schedule=[win(**{"from": 465})]), f"{P}.schedule[0].from", "quoted"),
    ("window-bad-hour", tv(schedule=[win(to="25:00")]), f"{P}.schedule[0].to", "HH:MM"),
    ("window-bad-minute", tv(schedule=[win(to="18:60")]), f"{P}.schedule[0].to", "HH:MM"),
    ("window-2401", tv(schedule=[win(to="24:01")]), f"{P}.schedule[0].to", "HH:MM"),
    ("window-no-colon", tv(schedule=[win(to="1800")]), f"{P}.schedule[0].to", "HH:MM"),
    ("window-from-2400", tv(schedule=[win(**{"from": "24:00"})]), f"{P}.schedule[0].from", "only valid as the end"),
    ("window-empty", tv(schedule=[win(to="07:45")]), f"{P}.schedule[0].to", "window is empty"),
    ("window-bad-tz", tv(schedule=[win(tz="Mars/Olympus")]), f"{P}.schedule[0].tz", "unknown time zone"),
    ("window-tz-path-traversal", tv(schedule=[win(tz="../etc/passwd")]), f"{P}.schedule[0].tz", "unknown time zone"),
    ("window-no-bounds", tv(schedule=[{"from": "07:00", "to": "08:00"}]), f"{P}.schedule[0]", "min, max or both"),
    ("window-negative-min", tv(schedule=[win(min=-5)]), f"{P}.schedule[0].min", "negative"),
    ("window-min-above-policy-max", tv(schedule=[win(min=150)]), f"{P}.schedule[0].min",
     "min 150 would be greater than max 100"),
    ("window-max-below-policy-min", tv(min=20, schedule=[win(min=None, max=10)]), f"{P}.schedule[0].max",
     "min 20 would be greater than max 10"),
    ("window-duplicate-name", tv(schedule=[win(), win()]), f"{P}.schedule[1].name", "duplicate window name 'w'"),
    ("window-empty-name", tv(schedule=[win(name="")]), f"{P}.schedule[0].name", "non-empty"),
]


@pytest.mark.parametrize("raw, path, fragment", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_config_errors_name_the_field(raw, path, fragment):
    with pytest.raises(SpecError) as caught:
        parse_policy(raw, P)
    assert caught.value.path == path, caught.value
    assert fragment in caught.value.message
    assert str(caught.value).startswith(f"{path}: ")


def test_unquoted_yaml_time_gets_a_hint():
    """PyYAML reads `to: 18:00` as the base-60 integer 1080; the error must say to quote it."""
    raw = yaml.safe_load("{strategy: fixed, count: 1, schedule: [{from: 07:45, to: 18:00, min: 1}]}")
    assert raw["schedule"][0]["to"] == 1080  # the trap, as PyYAML really springs it
    with pytest.raises(SpecError) as caught:
        parse_policy(raw, P)
    assert caught.value.path == f"{P}.schedule[0].to"
    assert caught.value.message == 'must be a quoted "HH:MM" string (YAML reads an unquoted 18:00 as the number 1080)'
