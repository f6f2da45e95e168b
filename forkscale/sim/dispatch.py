"""The method registry: vSphere method wsdl name -> handler(ctx, this, **arguments)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mo import MO
    from .service import Session, Twin

Handler = Callable[..., Any]
HANDLERS: dict[str, Handler] = {}
# Methods a client may call before logging in.
# (vCenter answers NotAuthenticated to anything else, property reads included.)
ANONYMOUS = {"RetrieveServiceContent", "Login", "LoginByToken", "LoginExtensionByCertificate", "CurrentTime",
             "SessionIsActive"}


def method(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for one or more wsdl method names."""

    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


@dataclass
class Ctx:
    twin: Twin
    session: Session | None
    this: MO
    method: str

    @property
    def user(self) -> str:
        return self.session.user if self.session else ""
