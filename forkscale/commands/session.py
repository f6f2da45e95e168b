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
from forkscale.spec import PostgresState, Spec, VCenter
from forkscale.spec.state import parse_state
from forkscale.vsphere.driver import Driver
from forkscale.vsphere.faults import LoginRefused
from forkscale.vsphere.transport import Soap

log = logging.getLogger("forkscale")


@contextlib.asynccontextmanager
async def open_driver(vc: VCenter) -> AsyncIterator[Driver]:
    """A logged-in driver for `vc`; connection problems become ConnectionFailed, a refused login a SpecError."""
    password = vc.password()
    register_secret(password)
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


def open_ledger(spec: Spec, state: str | None = None) -> Ledger:
    """The spec's ledger (`--state` overrides it: a path or a postgresql:// URL, checked like the spec's)."""
    target = parse_state(state, "--state", Path.cwd()) if state else spec.state
    if isinstance(target, PostgresState):
        password = None
        if target.secret is not None:
            register_secret(target.password())
            password = target.password
        return Ledger(target.url, password=password)
    return Ledger(target)


@contextlib.asynccontextmanager
async def open_engine(spec: Spec, *, state: str | None = None, progress: Progress | None = None,
                      telemetry: Any = None) -> AsyncIterator[Engine]:
    with contextlib.closing(open_ledger(spec, state)) as ledger:
        async with open_driver(spec.vcenter) as driver:
            yield Engine(spec, ledger, driver, progress=progress, telemetry=telemetry)


class ConnectionFailed(Exception):
    """vCenter could not be reached or verified (exit 1, with the reason)."""
