"""Helpers for tests of `forkscale serve`: write a spec for the twin, run serve as a real process, call its API."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.spine_helpers import REPO


def write_pool_spec(tmp_path: Path, twin, pool: dict[str, Any] | list[dict[str, Any]], *,
                    name: str = "pool.yaml", state: str | None = None, **top: Any) -> Path:
    """A spec with these pools (given whole) against the running twin, password in a 0600 file.
    `state`: the ledger (default: state.sqlite in tmp_path); `top`: more top-level keys (ha, ...)."""
    pw = tmp_path / "vc-password"
    pw.write_text(twin.password)
    os.chmod(pw, 0o600)
    spec = {"vcenter": {"url": twin.url, "user": twin.user, "password_file": str(pw), "ca_file": twin.ca_file},
            "state": state or str(tmp_path / "state.sqlite"), "pools": pool if isinstance(pool, list) else [pool],
            **top}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def base_pool(name: str, *, source: str = "src-linux", port_group: str = "VM Network",
              cidr: str = "10.20.0.0/22", **extra: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "name": name, "source": source, "freeze": "none",
        "network": {"port_group": port_group, "cidr": cidr},
        "placement": {"datastores": ["ds-ssd"], "folder": "forkscale"},
        "budgets": {"vcenter": 64, "per_host": 16, "per_datastore": 64, "rate_per_s": 1000},
        "guest_ready": {"timeout_s": 60, "required": True},
    }
    pool.update(extra)
    return pool


def token_file(tmp_path: Path, mode: int = 0o600) -> tuple[Path, str]:
    token = secrets.token_hex(24)
    path = tmp_path / f"api-token-{mode:o}"
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path, token


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    token: str
    log: Path

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = "default",
             raw: bytes | None = None, timeout: float = 60.0) -> tuple[int, Any, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        tok = self.token if token == "default" else token
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read()
                return resp.status, _json(text), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read()), dict(exc.headers)

    def status(self, pool: str) -> dict[str, Any]:
        code, doc, _ = self.call("GET", f"/v1/pools/{pool}")
        assert code == 200, doc
        return doc

    def wait_status(self, pool: str, predicate: Any, timeout: float = 30.0, what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status(pool)
            if predicate(doc):
                return doc
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"timed out waiting for {what or predicate}: {json.dumps(doc)[:3000]}\n"
                                     f"log tail:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not stop within {timeout}s on SIGTERM:\n{self.log_tail()}") from None


def _json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.decode(errors="replace")


def start_serve(tmp_path: Path, spec: Path, *, token_path: Path | None = None, token: str | None = None,
                args: tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: float = 30.0) -> Served:
    """`python -m forkscale.cli -v serve -f SPEC --listen 127.0.0.1:0`, waiting for its "listening on" line."""
    if token_path is None:
        token_path, token = token_file(tmp_path)
    assert token is not None
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    full_env.pop("FORKSCALE_API_TOKEN", None)
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forkscale.cli", "-v", "serve", "-f", str(spec), "--listen", "127.0.0.1:0",
             "--token-file", str(token_path), *args],
            stdout=subprocess.PIPE, stderr=err, text=True, env=full_env, cwd=str(tmp_path))
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            return Served(proc, url, token, log)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise AssertionError(f"serve did not start (exit {proc.returncode}); last line {line!r}; log:\n"
                         f"{log.read_text(errors='replace')[-4000:]}")


def check_example(name: str, twin, tmp_path: Path, monkeypatch) -> Any:
    """Load examples/NAME with the env vars it references, and check every pool against the twin's
    default world (source, port group, datastores, hosts) the way the engine does before cloning."""
    import asyncio
    import dataclasses

    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec

    monkeypatch.setenv("FORKSCALE_PASSWORD", twin.password)
    monkeypatch.setenv("FORKSCALE_GUEST_PASSWORD", "vmfork-guest")
    monkeypatch.setenv("FORKSCALE_CA_FILE", twin.ca_file)
    spec = load_spec(REPO / "examples" / name)
    at_twin = dataclasses.replace(spec, vcenter=dataclasses.replace(spec.vcenter, url=twin.url),
                                  state=tmp_path / f"{name}.sqlite")

    async def check() -> None:
        async with open_engine(at_twin) as engine:
            inv = await engine.driver.inventory()
            for index, pool in enumerate(at_twin.pools):
                engine.check_pool(pool, inv, index)

    asyncio.run(check())
    return spec
