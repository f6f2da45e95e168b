"""What the twin says it is: the vCenter, ESXi and distributed switch products, and the
description catalogues (ElementDescription lists) vCenter derives from its enums."""

from __future__ import annotations

from typing import Any

from pyVmomi import VmomiSupport, vim

VC_VERSION, VC_BUILD = "8.0.3", "24022515"
ESX_VERSION, ESX_BUILD = "8.0.3", "24022510"
API_VERSION = "8.0.3.0"


def vcenter_about(instance_uuid: str) -> Any:
    return vim.AboutInfo(name="VMware vCenter Server",
                         fullName=f"VMware vCenter Server {VC_VERSION} build-{VC_BUILD} (forkscale twin)",
                         vendor="VMware, Inc.", version=VC_VERSION, build=VC_BUILD, localeVersion="INTL",
                         localeBuild="000", osType="linux-x64", productLineId="vpx", apiType="VirtualCenter",
                         apiVersion=API_VERSION, instanceUuid=instance_uuid,
                         licenseProductName="VMware VirtualCenter Server", licenseProductVersion="8.0")


ESXI_ABOUT = vim.AboutInfo(name="VMware ESXi", fullName=f"VMware ESXi {ESX_VERSION} build-{ESX_BUILD}",
                           vendor="VMware, Inc.", version=ESX_VERSION, build=ESX_BUILD, localeVersion="INTL",
                           localeBuild="000", osType="vmnix-x86", productLineId="embeddedEsx", apiType="HostAgent",
                           apiVersion=API_VERSION, licenseProductName="VMware ESX Server",
                           licenseProductVersion="8.0")

DVS_PRODUCT = vim.dvs.ProductSpec(name="DVS", vendor="VMware, Inc.", version="8.0.3", build=VC_BUILD)


def _label(key: str) -> str:
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in key).strip()
    return words[:1].upper() + words[1:]


def elements(keys: list[str] | tuple[str, ...]) -> list[Any]:
    """ElementDescriptions for `keys` (an enum's values, usually), labelled from the key."""
    return [vim.ElementDescription(key=k, label=_label(k), summary=_label(k)) for k in keys]


def enum_elements(enum: Any) -> list[Any]:
    return elements(tuple(enum.values))


def types(names: list[str] | tuple[str, ...]) -> list[Any]:
    """TypeDescriptions of vim types by wsdl name."""
    return [vim.TypeDescription(key=VmomiSupport.GetWsdlType("urn:vim25", n), label=_label(n), summary=_label(n))
            for n in names]
