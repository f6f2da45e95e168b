"""Run commands on guests over SSH (paramiko), for the freeze, drain hooks and rehearsals.

Why this shape:

* paramiko is blocking, so every call runs in a worker thread (`asyncio.to_thread`) with one
  wall-clock budget (`timeout`) for the whole call: connect, handshake, command. Without a pty,
  closing a channel leaves the command running on the guest, so on expiry (or cancellation) the
  command's process group is killed from a second channel: the login shell is the session
  leader sshd made with setsid(), and it prints its pid (= process group id) before running
  the command. (The SSH "signal" request would be simpler, but OpenSSH refuses it for root
  logins - the usual case for a freeze.) If the thread itself is stuck (DNS, a dead peer), the
  event loop closes the connection under it, so a caller's timeout or cancellation holds.
* Host keys are checked against known_hosts by default; an unknown key and a changed key are
  PermanentErrors with different messages, because the fixes differ (add the key vs.
  investigate). `insecure_host_key=True` accepts any key, never writes known_hosts, and logs a
  WARNING on every connection so it cannot go unnoticed. Instant clones of one source share its
  host key, and IPs get reused across generations, which is why that escape hatch exists.
* Error classes carry the decision (see forkscale.core.errors): auth, host-key and key-file problems
  are permanent; refused / unreachable / timed-out / dropped connections are temporary.
* The command text never appears in logs or exceptions: it may carry secrets (tokens for a
  join script, for instance). Messages name user@host:port and the timeout only.
* `launch_detached` exists for the instant-clone freeze: `vmware-rpctool "instantclone.freeze"`
  never returns in the source (the VM stops executing), so the command is started in its own
  session with HUP ignored and the call returns once the remote shell has echoed a marker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import select
import shlex
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import paramiko

from forkscale.core.errors import PermanentError, TemporaryError

__all__ = ["CommandResult", "SshTarget", "freeze_command", "launch_detached", "run"]

log = logging.getLogger("forkscale.ssh")
_T = TypeVar("_T")

DEFAULT_GUEST_SCRIPT = "/usr/local/sbin/forkscale-guest"
_CHUNK = 32768
# How long to wait for the kill of a timed-out command to be confirmed.
_KILL_WAIT_S = 3.0
# How long the event loop waits past the deadline before closing the connection under a stuck
# worker thread (the thread enforces the deadline itself in every normal case).
_BACKSTOP_S = 2.0
# Retry hints for TemporaryError: a refused/unreachable guest is usually still booting.
_NETWORK_RETRY_S = 5.0
_TIMEOUT_RETRY_S = 1.0


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect. Everything after `host` is keyword-only.

    `key_file` None means ssh-agent and the default ~/.ssh keys; a key file means that key only
    (like IdentitiesOnly), so a test or a pool never silently authenticates with something else.
    Encrypted key files are not supported: use ssh-agent for those.
    """

    host: str
    _: KW_ONLY
    user: str
    port: int = 22
    key_file: str | os.PathLike[str] | None = None
    known_hosts: str | os.PathLike[str] = "~/.ssh/known_hosts"
    insecure_host_key: bool = False
    connect_timeout: float = 10.0

    @property
    def where(self) -> str:
        """user@host:port, for messages."""
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name this host has in a known_hosts file (OpenSSH brackets non-22 ports)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """What a command did. `exit_status` is -1 if the server sent none (e.g. killed by a signal)."""

    exit_status: int
    stdout: bytes
    stderr: bytes
    duration_s: float


def freeze_command(script_path: str = DEFAULT_GUEST_SCRIPT) -> str:
    """The command line that prepares a source VM and freezes it (for `launch_detached`)."""
    q = shlex.quote(script_path)
    return f"{q} prepare && {q} freeze"


async def run(
    target: SshTarget, command: str, *, timeout: float, input: bytes | None = None
) -> CommandResult:
    """Run `command` (through the remote login shell) and collect its output.

    A non-zero exit status is returned, not raised. `timeout` bounds the whole call, connect
    included (`target.connect_timeout` caps the connect phase too); when it expires, or the
    caller is cancelled, the command's process group on the guest is killed (SIGKILL) and
    TemporaryError is raised. The login shell first echoes its pid for that; the line is
    removed from `stdout`. Processes the command detaches (setsid) are left alone.
    """
    conn = _Connection(target, timeout)
    return await _in_thread(conn, conn.run, command, input)


async def launch_detached(target: SshTarget, command: str, *, timeout: float) -> None:
    """Start `command` on the guest so that it outlives this connection, and return at once.

    The command runs in its own session (setsid, when the guest has it) with HUP ignored and
    stdio on /dev/null; this returns as soon as the remote shell has forked it and echoed a
    marker. Whatever happens to the connection after that (a frozen VM stops answering) is fine.
    """
    conn = _Connection(target, timeout)
    await _in_thread(conn, conn.launch, command)


async def _in_thread(conn: _Connection, fn: Callable[..., _T], *args: object) -> _T:
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), conn.timeout + _BACKSTOP_S)
    except TimeoutError:
        raise _timeout_error(conn.target, conn.timeout) from None
    finally:
        # Kills a command still running (timeout, cancellation), which also unblocks the worker
        # thread. In a thread because it waits for the guest; runs to the end even if cancelled.
        await asyncio.to_thread(conn.close)


def _timeout_error(target: SshTarget, timeout: float) -> TemporaryError:
    return TemporaryError(
        f"ssh {target.where}: no result within the {timeout:g}s timeout; "
        "the connection was closed and the remote command (if it had started) killed",
        fault="SshTimeout",
        delay=_TIMEOUT_RETRY_S,
    )


# What a dropped, refused or cut-short connection raises (the guest may be booting or rebooting).
_NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)


def _network_error(message: str, *, fault: str) -> TemporaryError:
    return TemporaryError(message, fault=fault, delay=_NETWORK_RETRY_S)


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("host key not in known_hosts")
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(key)


class _AcceptAnyLoudly(paramiko.MissingHostKeyPolicy):
    """insecure_host_key=True: accept, keep nothing, and say so every time."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning(
            "ssh %s: host key checking is OFF (insecure_host_key=True); accepting %s key %s "
            "without verification",
            self.target.where,
            key.get_name(),
            _fingerprint(key),
        )


class _Connection:
    """One SSH connection for one call; all methods but close() run in the worker thread."""

    def __init__(self, target: SshTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.client = paramiko.SSHClient()
        self.pgid: int | None = None  # process group of the command while it may be running
        self.header_seen = False

    def close(self) -> None:
        """Close the connection; a command still running is killed first (timeout, cancellation)."""
        self._kill()
        try:
            self.client.close()
        except Exception:  # closing a half-open or dropped connection; nothing to act on
            log.debug("ssh %s: error while closing", self.target.where, exc_info=True)

    # -- connecting -----------------------------------------------------------------------------

    def _load_key(self) -> paramiko.PKey | None:
        t = self.target
        if t.key_file is None:
            return None
        path = Path(t.key_file).expanduser()
        try:
            return paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            raise PermanentError(
                f"ssh {t.where}: key file {path} is encrypted; use ssh-agent for encrypted keys",
                fault="SshKeyFile",
            ) from None
        except (OSError, ValueError, paramiko.SSHException) as e:
            raise PermanentError(
                f"ssh {t.where}: cannot load key file {path}: {type(e).__name__}: {e}",
                fault="SshKeyFile",
            ) from None

    def _set_host_key_policy(self) -> Path:
        t = self.target
        path = Path(t.known_hosts).expanduser()
        if t.insecure_host_key:
            # Accept any key: load nothing (a stale entry would still be enforced), save nothing.
            self.client.set_missing_host_key_policy(_AcceptAnyLoudly(t))
            return path
        if path.exists():
            try:
                self.client.load_host_keys(str(path))
            except (OSError, paramiko.SSHException) as e:
                raise PermanentError(
                    f"ssh {t.where}: cannot read known_hosts {path}: {type(e).__name__}: {e}",
                    fault="SshKnownHosts",
                ) from None
        self.client.set_missing_host_key_policy(_RejectUnknown())
        return path

    def connect(self) -> paramiko.Transport:
        t = self.target
        pkey = self._load_key()
        known_hosts = self._set_host_key_policy()
        budget = max(0.1, min(t.connect_timeout, self.deadline - time.monotonic()))
        try:
            self.client.connect(
                t.host,
                port=t.port,
                username=t.user,
                pkey=pkey,
                allow_agent=pkey is None,
                look_for_keys=pkey is None,
                timeout=budget,
                banner_timeout=budget,
                auth_timeout=budget,
                channel_timeout=budget,
            )
        except _UnknownHostKey as e:
            raise PermanentError(
                f"host key for {t.host}:{t.port} is not in {known_hosts} (server offered "
                f"{e.key.get_name()} {_fingerprint(e.key)}); add it with "
                f"`ssh-keyscan -p {t.port} {t.host} >> {known_hosts}` after checking that "
                "fingerprint out of band, or set insecure_host_key",
                fault="HostKeyUnknown",
            ) from None
        except paramiko.BadHostKeyException as e:
            raise PermanentError(
                f"host key for {t.host}:{t.port} has CHANGED: {known_hosts} has "
                f"{e.expected_key.get_name()} {_fingerprint(e.expected_key)}, the server offered "
                f"{e.key.get_name()} {_fingerprint(e.key)}. This may be a man-in-the-middle "
                "attack, or the guest was reinstalled; refusing to connect. If the change is "
                f"expected, remove the old entry (`ssh-keygen -R '{t.known_hosts_name}' -f "
                f"{known_hosts}`) and add the new one",
                fault="HostKeyMismatch",
            ) from None
        except paramiko.AuthenticationException as e:
            how = f"key {t.key_file}" if t.key_file is not None else "ssh-agent / default keys"
            raise PermanentError(
                f"ssh {t.where}: authentication failed with {how}: {e}",
                fault="SshAuthFailed",
            ) from None
        except paramiko.ssh_exception.IncompatiblePeer as e:
            raise PermanentError(
                f"ssh {t.where}: no common algorithms with the server: {e}", fault="SshIncompatible"
            ) from None
        except _NETWORK_ERRORS as e:
            # refused, unreachable, DNS, timeouts, banner/kex cut short: the guest may be booting.
            raise _network_error(
                f"ssh {t.where}: cannot connect: {type(e).__name__}: {e}",
                fault="SshConnect",
            ) from None
        transport = self.client.get_transport()
        assert transport is not None
        log.debug("ssh %s: connected", t.where)
        return transport

    def _open(self, command: str) -> paramiko.Channel:
        transport = self.connect()
        try:
            chan = transport.open_session(timeout=max(0.1, self.deadline - time.monotonic()))
            chan.exec_command(command)
        except _NETWORK_ERRORS as e:
            raise _network_error(
                f"ssh {self.target.where}: cannot start the command: {type(e).__name__}: {e}",
                fault="SshExec",
            ) from None
        return chan

    def _kill(self) -> None:
        """SIGKILL the running command's process group, from a second channel on this connection."""
        pgid, self.pgid = self.pgid, None
        transport = self.client.get_transport()
        if pgid is None or transport is None or not transport.is_active():
            return
        try:
            chan = transport.open_session(timeout=_KILL_WAIT_S)
            chan.exec_command(f"kill -9 -{pgid}")  # dash's kill takes no `--`
            if not chan.status_event.wait(_KILL_WAIT_S):
                log.debug("ssh %s: no answer to the kill of process group %d", self.target.where, pgid)
            chan.close()
        except Exception:  # the connection may be going away; the timeout error still stands
            log.debug("ssh %s: could not kill process group %d", self.target.where, pgid, exc_info=True)

    def _take_pgid(self, out: bytearray, tag: bytes) -> bytearray:
        """Find `<tag><pgid>\\n` in the output so far (a chatty .bashrc may come first), cut it out."""
        start = out.find(tag)
        end = out.find(b"\n", start)
        if start < 0 or end < 0:
            return out
        digits = bytes(out[start + len(tag) : end])
        # Never `kill -9 -1` (everything) or `-0` (the killer's own group): only a real leader.
        if digits.isdigit() and int(digits) > 1:
            self.pgid = int(digits)
        self.header_seen = True
        return out[:start] + out[end + 1 :]

    # -- the two calls ---------------------------------------------------------------------------

    def run(self, command: str, input: bytes | None) -> CommandResult:
        started = time.monotonic()
        tag = f"forkscale-pgid-{secrets.token_hex(6)}:".encode()
        # The login shell (session leader = process group) prints its pid, then runs the command.
        chan = self._open(f"echo {tag.decode()}$$\n{command}")
        pending = memoryview(input or b"")
        out, err = bytearray(), bytearray()
        try:
            if not pending:
                chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(_CHUNK)
                    if not self.header_seen:
                        out = self._take_pgid(out, tag)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(_CHUNK)
                if pending and chan.send_ready():
                    try:
                        pending = pending[chan.send(bytes(pending[:_CHUNK])) :]
                    except OSError:  # the command exited without reading all its input
                        pending = memoryview(b"")
                    if not pending:
                        chan.shutdown_write()
                if chan.closed or (chan.eof_received and chan.status_event.is_set()):
                    self.pgid = None  # finished: nothing to kill any more
                    break
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self._kill()
                    raise _timeout_error(self.target, self.timeout)
                if chan.eof_received:  # output done, exit status not yet in
                    chan.status_event.wait(min(remaining, 0.2))
                else:
                    select.select([chan], [], [], min(remaining, 0.01 if pending else 0.2))
            while chan.recv_ready():
                out += chan.recv(_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_CHUNK)
            if not self.header_seen:
                out = self._take_pgid(out, tag)
            self.pgid = None
        except _NETWORK_ERRORS as e:
            raise _network_error(
                f"ssh {self.target.where}: connection lost while the command ran: {type(e).__name__}",
                fault="SshConnectionLost",
            ) from None
        result = CommandResult(chan.exit_status, bytes(out), bytes(err), time.monotonic() - started)
        log.debug("ssh %s: exit %d in %.2fs", self.target.where, result.exit_status, result.duration_s)
        return result

    def launch(self, command: str) -> None:
        marker = f"forkscale-launched-{secrets.token_hex(8)}"
        # Runs under `sh` whatever the login shell is. `$1` is the command. setsid takes it out
        # of the SSH session's process group; `trap '' HUP` survives exec; no stdio ties it to
        # the channel. `$!` is the detached process (setsid does not fork when not a leader).
        script = (
            'if command -v setsid >/dev/null 2>&1; then set -- setsid sh -c "$1"; '
            'else set -- sh -c "$1"; fi; '
            "( trap '' HUP; exec \"$@\" ) </dev/null >/dev/null 2>&1 & "
            f'echo "{marker} $!"'
        )
        wrapped = f"sh -c {shlex.quote(script)} forkscale-launch {shlex.quote(command)}"
        chan = self._open(wrapped)
        out = bytearray()
        try:
            chan.shutdown_write()
            while marker.encode() not in out or not out.endswith(b"\n"):
                if chan.recv_ready():
                    out += chan.recv(_CHUNK)
                    continue
                if chan.closed or chan.eof_received:
                    status = chan.recv_exit_status() if chan.status_event.wait(1.0) else -1
                    raise PermanentError(
                        f"ssh {self.target.where}: the remote shell exited with status {status} "
                        "before confirming the launch",
                        fault="SshLaunchFailed",
                    )
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:  # the launcher is stuck before forking; nothing to kill
                    raise _timeout_error(self.target, self.timeout)
                select.select([chan], [], [], min(remaining, 0.2))
        except _NETWORK_ERRORS as e:
            raise _network_error(
                f"ssh {self.target.where}: connection lost before the launch was confirmed "
                f"({type(e).__name__}); the command may or may not have started",
                fault="SshConnectionLost",
            ) from None
        pid = out[out.index(marker.encode()) + len(marker) :].split(b"\n", 1)[0].strip()
        log.debug("ssh %s: launched detached command, pid %s", self.target.where, pid.decode(errors="replace"))
