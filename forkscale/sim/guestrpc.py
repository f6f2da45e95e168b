"""Guest RPC endpoints for the `vmware-rpctool` stand-in (info-get, info-set, instantclone.freeze).

Placeholder routes: the stand-in protocol is completed in forkscale/sim/rpctool.py.
"""

from __future__ import annotations

from aiohttp import web

from .service import Twin


def add_routes(app: web.Application, twin: Twin) -> None:
    """No guest routes yet."""
