"""Open the pieces a command needs from a spec: driver (connected), ledger, engine."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.core.logs import register_secret
from forkscale.fleet.engine import Engine, Progress
from forkscale.ledger import Ledger
from forkscale.spec import Spec, VCenter
from forkscale.vsphere.driver import Driver
from forkscale.vsphere.faults import LoginRefused
from forkscale.vsphere.informer import Informer
from forkscale.vsphere.transport import Soap

log = logging.getLogger("forkscale")


@contextlib.asynccontextmanager
async def open_driver(vc: VCenter, *, informer: bool = False, fleet: bool = False) -> AsyncIterator[Driver]:
    """A logged-in driver for `vc`; connection problems become ConnectionFailed, a refused login a SpecError.

    `informer`: inventory reads come from a model kept current by the property collector
    (`forkscale.vsphere.informer`), for commands that run more than one round; `fleet` too: the
    exporter's reads as well. One-shot commands read the inventory directly, once.
    """
    password = vc.password()
    register_secret(password)
    soap = Soap(vc.url, user=vc.user, password=vc.password, ca_file=str(vc.ca_file) if vc.ca_file else None,
                insecure=vc.insecure)
    driver = Driver(soap, informer=Informer(soap, fleet=fleet) if informer or fleet else None)
    try:
        await driver.open()
    except LoginRefused:
        await soap.close()
        raise SpecError("vcenter.password", f"vCenter refused the login for {vc.user!r}") from None
    except (PermanentError, TemporaryError) as exc:
        await soap.close()
        raise ConnectionFailed(f"cannot connect to {vc.url}: {exc}") from exc
    except BaseException:
        await soap.close()
        raise
    try:
        yield driver
    finally:
        await driver.close()


@contextlib.asynccontextmanager
async def open_engine(spec: Spec, *, state: str | None = None, progress: Progress | None = None,
                      telemetry: Any = None, informer: bool = False, fleet: bool = False) -> AsyncIterator[Engine]:
    async with open_driver(spec.vcenter, informer=informer, fleet=fleet) as driver:
        with contextlib.closing(Ledger(Path(state) if state else spec.state)) as ledger:
            yield Engine(spec, ledger, driver, progress=progress, telemetry=telemetry)


class ConnectionFailed(Exception):
    """vCenter could not be reached or verified (exit 1, with the reason)."""
