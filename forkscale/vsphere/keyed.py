"""Keyed extraConfig paths (`config.extraConfig["forkscale.pool"]`), and what to do when a server refuses them.

forkscale reads its tags through keyed property paths, so an inventory read never carries every
VM's whole extraConfig. vCenter answers them; a server that cannot (govmomi's vcsim 0.24 splits
paths on `.` and answers `InvalidProperty` in the object's `missingSet`) must not make tagged VMs
look untagged — that is how a controller loses track of its clones. So a refused keyed path is
never read as "no tag": the VMs concerned are read again with the whole `config.extraConfig`
(one batched request), and from then on this server is taken to refuse keyed paths
(`Soap.keyed_paths_refused`): reads ask for `config.extraConfig` straight away, and guest status,
which the task watcher follows through a keyed path, is polled instead. (A server that answered
InvalidProperty only for keys a VM lacks would cost bigger reads, never a wrong answer.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pyVmomi import vim, vmodl

from forkscale.vsphere.faults import fault_name
from forkscale.vsphere.transport import Soap

PC = vmodl.query.PropertyCollector
EXTRA = "config.extraConfig"
_KEYED = re.compile(r'^config\.extraConfig\["(.+)"\]$')


def keyed(key: str) -> str:
    """The property path of one extraConfig key."""
    return f'{EXTRA}["{key}"]'


def key_of(path: str) -> str | None:
    m = _KEYED.match(path or "")
    return m.group(1) if m else None


def request_paths(soap: Soap, paths: Iterable[str]) -> list[str]:
    """The paths to send: keyed extraConfig paths become `config.extraConfig` on a server known to refuse them."""
    out = list(dict.fromkeys(paths))
    if soap.keyed_paths_refused and any(key_of(p) for p in out):
        out = [p for p in out if not key_of(p)]
        if EXTRA not in out:
            out.append(EXTRA)
    return out


def gone(oc: Any) -> bool:
    """The object no longer exists (reported in `missingSet` with ManagedObjectNotFound)."""
    return any(fault_name(m.fault) == "ManagedObjectNotFound" for m in oc.missingSet or [])


def option_values(options: Iterable[Any]) -> dict[str, str]:
    """extraConfig as vCenter defines it: a later value for a key replaces an earlier one, an empty value removes it."""
    out: dict[str, str] = {}
    for opt in options or []:
        value = "" if opt.value is None else str(opt.value)
        if value:
            out[str(opt.key)] = value
        else:
            out.pop(str(opt.key), None)
    return out


def _fill(p: dict[str, Any], wanted: Iterable[str], values: dict[str, str]) -> None:
    """Put `values` into `p` under the keyed paths in `wanted`."""
    for path in wanted:
        key = key_of(path)
        if key is not None and key in values:
            p[path] = vim.option.OptionValue(key=key, value=values[key])


async def resolve(soap: Soap, objects: list[Any], wanted: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    """(object, properties) for each object not gone, keyed extraConfig paths answered whatever the server.

    `wanted` are the paths the caller asked for; objects whose keyed paths the server refused are
    read once more, whole `config.extraConfig`, in one request for all of them.
    """
    out: list[tuple[Any, dict[str, Any]]] = []
    refused: dict[str, tuple[dict[str, Any], list[str]]] = {}
    keyed_wanted = [p for p in wanted if key_of(p)]
    for oc in objects:
        if gone(oc):
            continue
        p = {d.name: d.val for d in oc.propSet or []}
        if EXTRA in p and EXTRA not in wanted:
            _fill(p, keyed_wanted, option_values(p.pop(EXTRA)))
        bad = [m.path for m in oc.missingSet or [] if key_of(m.path) and fault_name(m.fault) == "InvalidProperty"]
        if bad:
            refused[str(oc.obj._moId)] = (p, bad)
        out.append((oc, p))
    if refused:
        soap.keyed_paths_refused = True
        whole = await _whole_extra(soap, list(refused))
        for moref, (p, bad) in refused.items():
            _fill(p, bad, whole.get(moref, {}))
    return out


async def _whole_extra(soap: Soap, vms: list[str]) -> dict[str, dict[str, str]]:
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(m)) for m in vms],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=[EXTRA])],
                         reportMissingObjectsInResults=True)
    pc = soap.content.propertyCollector
    res = await soap.invoke(pc, "RetrievePropertiesEx", [spec], PC.RetrieveOptions())
    objects = list(res.objects or []) if res else []
    while res is not None and res.token:
        res = await soap.invoke(pc, "ContinueRetrievePropertiesEx", res.token)
        objects.extend((res.objects or []) if res else [])
    return {str(oc.obj._moId): option_values(next((d.val for d in oc.propSet or [] if d.name == EXTRA), []))
            for oc in objects}
