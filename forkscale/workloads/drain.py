"""Worker scale-down with a drain hook: let a clone finish its work before it is destroyed.

The engine picks scale-down victims (`forkscale.fleet.plan.victims`: idle clones first -- unfinished, then
ready --, then the oldest source generation, then the newest-created; busy, i.e. claimed,
workers last) and, for a pool with a `drain:` block, calls a `Drainer` on each before the
destroy. The drainer:

1. marks the clone `draining` in the ledger -- synchronously, before its first await, so a claim
   cannot take it in between and a crash leaves a row that says what was going on;
2. runs the pool's drain command over SSH (`forkscale.remote.ssh.run`, the spec's command and timeout)
   on the clone itself, at its IP from the ledger (or `drain.ssh.host` when the spec names one:
   a bastion, or a test's loopback sshd). `{name}`, `{hostname}`, `{ip}` and `{pool}` in the
   command are replaced by the clone's values, shell-quoted;
3. on exit status 0, returns True and the engine destroys the clone; on anything else (non-zero
   exit, SSH failure, timeout) the failure is reported -- an event in the ledger, the clone's
   `error`, a line in the converge result's errors (the pool's status) -- and the clone is put back as it was
   (`ready`, or `claimed` for a busy worker), so it keeps serving until the policy asks again.

A drain cancelled by shutdown puts the clone back too: the ledger never keeps a `draining` row
that nobody is working on.

The command text is never logged (it may carry tokens); messages name the clone and the status.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.ledger import CloneRecord, Ledger
from forkscale.remote import ssh
from forkscale.spec import Drain, Pool

log = logging.getLogger("forkscale.drain")

#: Called with (pool name, clone name, message) when a drain fails (the controller's status).
FailureSink = Callable[[str, str, str], None]

PLACEHOLDERS = ("name", "hostname", "ip", "pool")


def render_command(command: str, rec: CloneRecord) -> str:
    """The drain command with `{name}`, `{hostname}`, `{ip}`, `{pool}` replaced (shell-quoted).

    Only these four tokens are replaced, so shell and awk braces in the command stay as they are.
    """
    values = {"name": rec.name, "hostname": rec.hostname, "ip": rec.ip, "pool": rec.pool}
    for key in PLACEHOLDERS:
        command = command.replace("{" + key + "}", shlex.quote(values[key]))
    return command


def drain_target(drain: Drain, rec: CloneRecord) -> ssh.SshTarget:
    """Where the drain command runs: the clone's IP, unless the spec's `drain.ssh.host` says otherwise."""
    cfg = drain.ssh
    if cfg is None:
        return ssh.SshTarget(rec.ip, user="root")
    return ssh.SshTarget(
        cfg.host or rec.ip,
        user=cfg.user,
        port=cfg.port,
        key_file=cfg.key_file,
        known_hosts=cfg.known_hosts or "~/.ssh/known_hosts",
        insecure_host_key=cfg.insecure_host_key,
        connect_timeout=min(10.0, drain.timeout_s),
    )


class Drainer:
    """The engine's drain hook (`Engine.drainer`): drain one clone, True when it may be destroyed."""

    def __init__(self, ledger: Ledger, *, on_failure: FailureSink | None = None,
                 on_success: Callable[[str, str], None] | None = None) -> None:
        self.ledger = ledger
        self.on_failure = on_failure
        self.on_success = on_success

    async def __call__(self, pool: Pool, rec: Any, result: Any = None) -> bool:
        drain = pool.drain
        if drain is None:
            return True
        before: str = rec.state
        claimed_by: str | None = rec.claimed_by
        # Synchronous, before any await: from here on nobody can claim it.
        self.ledger.transition(rec.id, "draining")
        target = drain_target(drain, rec)
        started = time.monotonic()
        log.info("pool %s: draining %s (%s) on %s, timeout %gs", pool.name, rec.name, before, target.where,
                 drain.timeout_s)
        why = ""
        try:
            out = await ssh.run(target, render_command(drain.command, rec), timeout=drain.timeout_s)
            if out.exit_status == 0:
                seconds = time.monotonic() - started
                self.ledger.note(rec.id, "drained", {"seconds": round(seconds, 3), "via": target.where})
                log.info("pool %s: drained %s in %.1fs", pool.name, rec.name, seconds)
                if self.on_success is not None:
                    self.on_success(pool.name, rec.name)
                return True
            tail = out.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            why = f"drain command exited with status {out.exit_status}" + (f": {tail[0][:200]}" if tail[0] else "")
        except (PermanentError, TemporaryError) as exc:
            why = f"drain failed: {exc}"
        except asyncio.CancelledError:
            self._put_back(rec.id, before, claimed_by, "drain abandoned: controller shutting down")
            raise
        except Exception as exc:  # a bug or an unexpected paramiko error: keep the clone, say why
            log.exception("pool %s: drain of %s failed unexpectedly", pool.name, rec.name)
            why = f"drain failed: {type(exc).__name__}: {exc}"
        self._put_back(rec.id, before, claimed_by, why)
        log.warning("pool %s: %s kept: %s", pool.name, rec.name, why)
        if result is not None and hasattr(result, "errors"):
            result.errors.append(f"{rec.name}: {why} (kept)")
        if self.on_failure is not None:
            self.on_failure(pool.name, rec.name, why)
        return False

    def _put_back(self, clone_id: int, before: str, claimed_by: str | None, why: str) -> None:
        self.ledger.note(clone_id, "drain-failed", {"error": why})
        if before == "claimed" and claimed_by:
            self.ledger.transition(clone_id, "claimed", claimed_by=claimed_by, error=why)
        else:
            self.ledger.transition(clone_id, "ready", error=why)
