"""Open the pieces a command needs from a spec: driver (connected), ledger, engine.

The order is the promise "bad input: exit 2, nothing created": every path was checked when the
spec was read (and `--state` is checked here, before the login); then vCenter is logged in to,
the pools are checked against its inventory (`check_pools`: source VM, port group, datastores,
hosts), and only then is the ledger file opened -- created, when it is new.
"""

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
from forkscale.spec.paths import check_state_path
from forkscale.vsphere.driver import Driver
from forkscale.vsphere.faults import LoginRefused
from forkscale.vsphere.transport import Soap

log = logging.getLogger("forkscale")


@contextlib.asynccontextmanager
async def open_driver(vc: VCenter) -> AsyncIterator[Driver]:
    """A logged-in driver for `vc`; connection problems become ConnectionFailed, a refused login a SpecError."""
    password = vc.password()
    register_secret(password)
    if vc.url.startswith("http://"):
        log.warning("vCenter URL %s is plain HTTP (insecure: true): the password and the session cross the network "
                    "in clear", vc.url)
    soap = Soap(vc.url, user=vc.user, password=vc.password, ca_file=str(vc.ca_file) if vc.ca_file else None,
                insecure=vc.insecure)
    driver = Driver(soap)
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


def state_path(spec: Spec, state: str | None) -> Path:
    """The ledger file: `--state` (checked now, like the spec's `state:` was) or the spec's."""
    if not state:
        return spec.state
    return check_state_path(Path(state).expanduser(), "--state")


@contextlib.asynccontextmanager
async def open_engine(spec: Spec, *, state: str | None = None, progress: Progress | None = None,
                      telemetry: Any = None, check_pools: bool = False) -> AsyncIterator[Engine]:
    """Driver, ledger and engine; with `check_pools`, every pool is checked against vCenter's
    inventory (a SpecError, exit 2) before the ledger file is opened or created."""
    path = state_path(spec, state)
    async with open_driver(spec.vcenter) as driver:
        if check_pools:
            inv = await driver.inventory()
            for index, pool in enumerate(spec.pools):
                Engine.check_pool(pool, inv, index)
        with contextlib.closing(Ledger(path)) as ledger:
            yield Engine(spec, ledger, driver, progress=progress, telemetry=telemetry)


class ConnectionFailed(Exception):
    """vCenter could not be reached or verified (exit 1, with the reason)."""
