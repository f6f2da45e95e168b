"""Metric sources against real servers: an aiohttp endpoint for the HTTP source, and a real
Prometheus scraping a tiny aiohttp exporter for the Prometheus source. Nothing is mocked."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from forkscale.core.errors import TemporaryError
from forkscale.policy import HttpSource, PrometheusSource, read_metric
from forkscale.policy.sources import MAX_BODY_BYTES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """A real aiohttp server on a free loopback port; yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def text(body: str, status: int = 200, content_type: str = "text/plain") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type=content_type)

    return handler


def as_json(doc: Any, status: int = 200) -> Handler:
    return text(json.dumps(doc), status, "application/json")


async def _read_from(handler: Handler, json_path: str | None, timeout_s: float = 5.0) -> float | None:
    async with serve({"/load": handler}) as base, aiohttp.ClientSession() as session:
        return await read_metric(HttpSource(url=f"{base}/load", json_path=json_path, timeout_s=timeout_s), session)


HTTP_OK = [
    ("plain-int", text("42"), None, 42.0),
    ("plain-float-whitespace", text(" 3.5\n"), None, 3.5),
    ("plain-json-number", as_json(17), None, 17.0),
    ("plain-negative", text("-2"), None, -2.0),
    ("plain-nan-is-no-value", text("NaN"), None, None),
    ("json-field", as_json({"stats": {"pending": 12}}), "stats.pending", 12.0),
    ("json-float-field", as_json({"load": 0.75}), "load", 0.75),
    ("json-list-index", as_json({"items": [{"v": 1}, {"v": 9}]}), "items.1.v", 9.0),
    ("json-negative-index", as_json({"items": [1, 2, 3]}), "items.-1", 3.0),
    ("json-numeric-string", as_json({"v": "8.5"}), "v", 8.5),
    ("json-null-is-no-value", as_json({"v": None}), "v", None),
    ("json-numeric-key-in-object", as_json({"by_zone": {"1": 4}}), "by_zone.1", 4.0),
]


@pytest.mark.parametrize("handler, json_path, expected", [c[1:] for c in HTTP_OK], ids=[c[0] for c in HTTP_OK])
def test_http_source_values(handler, json_path, expected):
    assert asyncio.run(_read_from(handler, json_path)) == expected


HTTP_ERRORS = [
    ("status-503", text("overloaded", status=503), None, "HTTP 503: 'overloaded'"),
    ("status-404", text("nope", status=404), "v", "HTTP 404"),
    ("body-not-number", text("hello"), None, "body is not a number: 'hello'"),
    ("body-empty", text(""), None, "body is not a number"),
    ("body-json-object-without-path", as_json({"v": 1}), None, "body is not a number"),
    ("body-not-json", text("v=1"), "v", "body is not JSON"),
    ("missing-field", as_json({"stats": {"pending": 1}}), "stats.queued", "no field 'stats.queued'"),
    ("field-is-object", as_json({"stats": {"pending": 1}}), "stats", "'stats' is an object, not a number"),
    ("field-is-bool", as_json({"up": True}), "up", "'up' is a boolean"),
    ("field-is-text", as_json({"v": "lots"}), "v", "'v' is 'lots', not a number"),
    ("descend-into-number", as_json({"v": 3}), "v.x", "cannot take 'x' of a number at 'v.x'"),
    ("index-out-of-range", as_json({"items": [1]}), "items.3", "'items.3' is out of range (list of 1)"),
    ("body-too-large", text("1" * (MAX_BODY_BYTES + 10)), None, f"larger than {MAX_BODY_BYTES} bytes"),
]


@pytest.mark.parametrize(
    "handler, json_path, fragment", [c[1:] for c in HTTP_ERRORS], ids=[c[0] for c in HTTP_ERRORS]
)
def test_http_source_errors(handler, json_path, fragment):
    with pytest.raises(TemporaryError) as caught:
        asyncio.run(_read_from(handler, json_path))
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("metric endpoint http://127.0.0.1:")
    assert caught.value.fault == "MetricUnavailable"


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="1")


async def _slow_body(request: web.Request) -> web.StreamResponse:
    """Headers at once, then a body that never finishes: a timeout on connect alone would hang."""
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"4")
    await asyncio.sleep(30)
    return resp


@pytest.mark.parametrize(
    "kind, handler",
    [("http", _hang), ("http", _slow_body), ("prometheus", _hang)],
    ids=["http-no-answer", "http-body-stalls", "prometheus-no-answer"],
)
def test_sources_never_hang(kind, handler):
    async def scenario() -> None:
        async with serve({"/load": handler, "/api/v1/query": handler}) as base:
            async with aiohttp.ClientSession() as session:
                src: Any = (HttpSource(url=f"{base}/load", timeout_s=0.3) if kind == "http"
                            else PrometheusSource(url=base, query="up", timeout_s=0.3))
                await read_metric(src, session)

    started = time.monotonic()
    with pytest.raises(TemporaryError, match=r"no answer within 0\.3 s"):
        asyncio.run(scenario())
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("kind", ["http", "prometheus"])
def test_connection_refused_is_temporary(kind):
    async def scenario() -> None:
        async with serve({}) as base:
            pass  # the port is closed again: nothing listens there now
        async with aiohttp.ClientSession() as session:
            src: Any = (HttpSource(url=f"{base}/load") if kind == "http"
                        else PrometheusSource(url=base, query="up"))
            await read_metric(src, session)

    with pytest.raises(TemporaryError, match="ClientConnectorError"):
        asyncio.run(scenario())


# --- Prometheus, for real -------------------------------------------------------------------

EXPORTED = {"gauge": 42.5}


async def _exporter(request: web.Request) -> web.Response:
    body = (
        "# TYPE forkscale_policy_test_gauge gauge\n"
        f"forkscale_policy_test_gauge {EXPORTED['gauge']}\n"
        "# TYPE forkscale_policy_test_shards gauge\n"
        'forkscale_policy_test_shards{shard="a"} 1\n'
        'forkscale_policy_test_shards{shard="b"} 2\n'
    )
    return web.Response(text=body, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"})


# (id, query, expected value, or an error fragment)
PROM_CASES: list[tuple[str, str, float | None | str]] = [
    ("one-sample", "forkscale_policy_test_gauge", 42.5),
    ("aggregated", "sum(forkscale_policy_test_shards)", 3.0),
    ("scalar", "scalar(forkscale_policy_test_gauge) * 2", 85.0),
    ("empty-vector", "forkscale_policy_test_missing", None),
    ("nan-is-no-value", "0/0", None),
    ("several-samples", "forkscale_policy_test_shards", "returned 2 samples (forkscale_policy_test_shards{instance="),
    ("range-vector", "forkscale_policy_test_gauge[1m]", "returned a matrix, need an instant vector or a scalar"),
    ("bad-query", "sum(", "failed: HTTP 400, bad_data: "),
]


def test_prometheus_source_against_real_prometheus(request):
    try:
        factory = request.getfixturevalue("prometheus_factory")
    except pytest.FixtureLookupError:
        pytest.skip("tests/fixtures/prometheus.py has no prometheus_factory fixture yet")

    async def poll(session: aiohttp.ClientSession, src: PrometheusSource, want: float) -> None:
        deadline = time.monotonic() + 30
        got: float | None = None
        while time.monotonic() < deadline:
            got = await read_metric(src, session)
            if got == want:
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"{src.query} never became {want} (last {got})")

    async def scenario() -> None:
        EXPORTED["gauge"] = 42.5
        async with serve({"/metrics": _exporter}) as base:
            target = base.removeprefix("http://")
            prom = await asyncio.to_thread(factory, [target], "1s")
            async with aiohttp.ClientSession() as session:
                await poll(session, PrometheusSource(url=prom.url, query="forkscale_policy_test_gauge"), 42.5)
                failures = []
                for case_id, query, expected in PROM_CASES:
                    # A trailing slash on the base URL (as users paste it) must work too.
                    src = PrometheusSource(url=prom.url + "/", query=query, timeout_s=5)
                    try:
                        got: float | None | str = await read_metric(src, session)
                    except TemporaryError as exc:
                        got = str(exc)
                    if isinstance(expected, str):
                        ok = isinstance(got, str) and expected in got and f"prometheus query {query!r}" in got
                    else:
                        ok = got == expected
                    if not ok:
                        failures.append(f"{case_id}: query {query!r} gave {got!r}, expected {expected!r}")
                assert not failures, "\n".join(failures)
                # The value follows the exporter: read_metric is a fresh instant query each time.
                EXPORTED["gauge"] = 7.0
                await poll(session, PrometheusSource(url=prom.url, query="forkscale_policy_test_gauge"), 7.0)

    asyncio.run(scenario())
