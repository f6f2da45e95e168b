"""Metric sources for target-value policies: a Prometheus instant query, or a plain HTTP endpoint.

Every failure is a `TemporaryError` with a sentence an operator can act on (which URL, which
query, what came back), because the controller's answer to a broken metric is always the same:
make no change this round (the strategy turns a missing metric into a no-op) and try again.
Every request has a total timeout, so a stuck exporter delays one evaluation, never the loop.

`None` means "no value right now" and is a normal answer: an empty Prometheus vector (the
series does not exist yet), a JSON `null`, or NaN/±Inf (what Prometheus returns for 0/0 and x/0 ratios).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

import aiohttp

from forkscale.core.errors import TemporaryError
from forkscale.policy.config import HttpSource, MetricSource, PrometheusSource

# A metric answer is a number; a body this large is a misconfigured URL (a dashboard page, a
# log file), and reading it all would only waste memory.
MAX_BODY_BYTES = 1 << 20
_FAULT = "MetricUnavailable"


async def read_metric(source_cfg: MetricSource, session: aiohttp.ClientSession) -> float | None:
    """Read the current value of a metric source; None when there is no value right now."""
    if isinstance(source_cfg, PrometheusSource):
        return await _read_prometheus(source_cfg, session)
    if isinstance(source_cfg, HttpSource):
        return await _read_http(source_cfg, session)
    raise TypeError(f"unknown metric source {source_cfg!r}")


async def _read_prometheus(src: PrometheusSource, session: aiohttp.ClientSession) -> float | None:
    url = src.url.rstrip("/") + "/api/v1/query"
    what = f"prometheus query {src.query!r} at {src.url}"
    status, text = await _get(session, url, {"query": src.query}, src.timeout_s, what)
    try:
        doc = json.loads(text)
    except ValueError:
        raise TemporaryError(f"{what}: HTTP {status}, answer is not JSON: {_snippet(text)}", _FAULT) from None
    if not isinstance(doc, Mapping):
        raise TemporaryError(f"{what}: HTTP {status}, unexpected answer: {_snippet(text)}", _FAULT)
    if status != 200 or doc.get("status") != "success":
        kind = doc.get("errorType", "error")
        raise TemporaryError(f"{what} failed: HTTP {status}, {kind}: {doc.get('error', _snippet(text))}", _FAULT)
    data = doc.get("data")
    if not isinstance(data, Mapping):
        raise TemporaryError(f"{what}: answer has no data: {_snippet(text)}", _FAULT)
    rtype = data.get("resultType")
    result = data.get("result")
    if rtype == "scalar":
        return _sample_value(result, what)
    if rtype != "vector":
        raise TemporaryError(f"{what}: returned a {rtype}, need an instant vector or a scalar", _FAULT)
    if not isinstance(result, list):
        raise TemporaryError(f"{what}: vector result is not a list: {_snippet(text)}", _FAULT)
    if not result:
        return None
    if len(result) > 1:
        labels = ", ".join(_labels(s) for s in result[:3]) + (", …" if len(result) > 3 else "")
        raise TemporaryError(
            f"{what}: returned {len(result)} samples ({labels}), need exactly one; aggregate it, e.g. sum(...)",
            _FAULT,
        )
    sample = result[0]
    return _sample_value(sample.get("value") if isinstance(sample, Mapping) else None, what)


async def _read_http(src: HttpSource, session: aiohttp.ClientSession) -> float | None:
    what = f"metric endpoint {src.url}"
    status, text = await _get(session, src.url, None, src.timeout_s, what)
    if not 200 <= status < 300:
        raise TemporaryError(f"{what}: HTTP {status}: {_snippet(text)}", _FAULT)
    if src.json_path is None:
        try:
            return _finite_or_none(float(text.strip()))
        except ValueError:
            raise TemporaryError(f"{what}: body is not a number: {_snippet(text)}", _FAULT) from None
    try:
        node: Any = json.loads(text)
    except ValueError:
        raise TemporaryError(f"{what}: body is not JSON: {_snippet(text)}", _FAULT) from None
    walked: list[str] = []
    for part in src.json_path.split("."):
        walked.append(part)
        here = ".".join(walked)
        if isinstance(node, Mapping):
            if part not in node:
                raise TemporaryError(f"{what}: no field {here!r} in the JSON body: {_snippet(text)}", _FAULT)
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                raise TemporaryError(f"{what}: {here!r} is out of range (list of {len(node)})", _FAULT)
            node = node[index]
        else:
            raise TemporaryError(f"{what}: cannot take {part!r} of {_json_kind(node)} at {here!r}", _FAULT)
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, int | float | str):
        raise TemporaryError(f"{what}: {src.json_path!r} is {_json_kind(node)}, not a number", _FAULT)
    try:
        return _finite_or_none(float(node))
    except ValueError:
        raise TemporaryError(f"{what}: {src.json_path!r} is {node!r}, not a number", _FAULT) from None


async def _get(
    session: aiohttp.ClientSession, url: str, params: Mapping[str, str] | None, timeout_s: float, what: str
) -> tuple[int, str]:
    """GET with a hard total deadline; returns (status, body text) or raises TemporaryError."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                # read(n) returns whatever has arrived, so loop to the end of the body (or the cap).
                body = bytearray()
                while chunk := await resp.content.read(MAX_BODY_BYTES + 1 - len(body)):
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise TemporaryError(f"{what}: answer larger than {MAX_BODY_BYTES} bytes", _FAULT)
                return resp.status, body.decode(resp.charset or "utf-8", errors="replace")
    except TimeoutError:
        raise TemporaryError(f"{what}: no answer within {timeout_s:g} s", _FAULT) from None
    except aiohttp.ClientError as exc:
        raise TemporaryError(f"{what}: {type(exc).__name__}: {exc}", _FAULT) from exc


def _sample_value(pair: Any, what: str) -> float | None:
    """Prometheus samples are [unix_time, "value-as-string"]."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise TemporaryError(f"{what}: malformed sample {pair!r}", _FAULT)
    try:
        return _finite_or_none(float(pair[1]))
    except (TypeError, ValueError):
        raise TemporaryError(f"{what}: sample value {pair[1]!r} is not a number", _FAULT) from None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _labels(sample: Any) -> str:
    """A sample's series as Prometheus writes it: name{label="value",...}."""
    metric = sample.get("metric") if isinstance(sample, Mapping) else None
    if not isinstance(metric, Mapping):
        return "{}"
    name = metric.get("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}"


def _json_kind(node: Any) -> str:
    if node is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(node), "a number")


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")
