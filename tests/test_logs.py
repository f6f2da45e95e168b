"""Secrets never reach the log: messages, arguments, attached tracebacks and stacks are redacted."""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkscale.core.logs import make_handler, redact, register_secret
from forkscale.spec import parse_spec


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through forkscale's own handler into a buffer."""
    out = io.StringIO()
    log = logging.getLogger(f"forkscale.test-logs.{secrets.token_hex(4)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(make_handler(out))
    yield log, out
    log.handlers.clear()


def _secret() -> str:
    return "pw-" + secrets.token_urlsafe(16)


def _fail_with(secret: str) -> None:
    raise RuntimeError(f"guest login refused for password {secret!r}")


def test_exception_traceback_carrying_a_secret_is_redacted(captured):
    log, out = captured
    secret = _secret()
    register_secret(secret)
    try:
        _fail_with(secret)
    except RuntimeError:
        log.exception("freeze failed (password %s)", secret)
    try:
        _fail_with(secret)
    except RuntimeError as exc:
        log.warning("retrying", exc_info=exc, stack_info=True)
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text and "_fail_with" in text  # the traceback is there...
    assert "RuntimeError: guest login refused for password '***'" in text
    assert "freeze failed (password ***)" in text and "Stack (most recent call last)" in text
    assert secret not in text  # ...without the secret


def test_a_record_shared_by_two_handlers_is_redacted_for_both(captured):
    """The filter formats the traceback once, redacted, so a plain second handler prints it clean too."""
    log, out = captured
    plain = io.StringIO()
    other = logging.StreamHandler(plain)
    other.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(other)  # after ours, as a second handler on the root logger would be
    secret = _secret()
    register_secret(secret)
    try:
        _fail_with(secret)
    except RuntimeError:
        log.error("failed", exc_info=True)
    assert "RuntimeError" in plain.getvalue() and secret not in plain.getvalue() + out.getvalue()


def test_guest_operations_password_is_registered_when_read(captured, tmp_path: Path, monkeypatch):
    log, out = captured
    guest_pw, vc_pw = _secret(), _secret()
    pw_file = tmp_path / "guest-pw"
    pw_file.write_text(guest_pw + "\n")
    os.chmod(pw_file, 0o600)
    monkeypatch.setenv("FORKSCALE_TEST_LOGS_VC_PW", vc_pw)
    spec = parse_spec({
        "vcenter": {"url": "https://vc.example/sdk", "user": "u", "password_env": "FORKSCALE_TEST_LOGS_VC_PW"},
        "state": str(tmp_path / "state.sqlite"),
        "pools": [{"name": "g", "source": "gold", "count": 1, "freeze": "guestops",
                   "guestops": {"user": "root", "password_file": str(pw_file)},
                   "network": {"port_group": "VM Network", "cidr": "10.20.0.0/24"}}],
    }, base_dir=tmp_path)
    guestops = spec.pools[0].guestops
    assert guestops is not None
    assert guestops.password() == guest_pw and spec.vcenter.password() == vc_pw
    log.info("ran vmware-rpctool as root/%s on vCenter %s", guest_pw, vc_pw)
    assert out.getvalue().rstrip().endswith("ran vmware-rpctool as root/*** on vCenter ***")
    assert redact(f"{guest_pw}|{vc_pw}") == "***|***"
