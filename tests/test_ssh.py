"""forkscale.remote.ssh against a real OpenSSH server (tests/fixtures/sshd.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.remote.ssh import CommandResult, SshTarget, freeze_command, launch_detached, run
from tests.fixtures import sshd as sshd_plugin
from tests.fixtures.sshd import SshServer, generate_ed25519_keypair

# The fixture, whether or not tests/conftest.py lists tests.fixtures.sshd in pytest_plugins.
sshd = sshd_plugin.sshd

pytestmark = pytest.mark.sshd

SECRET = "hunter2-do-not-log"


def _live_group_members(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is `pgid`; /proc, as PID 1 may not reap."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _wait_until(predicate, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _read_pid(pidfile: Path, within: float = 5.0) -> int:
    assert _wait_until(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(), within), (
        f"{pidfile} never written"
    )
    return int(pidfile.read_text().strip())


@pytest.fixture
def kill_groups() -> Iterator[list[int]]:
    """Process groups a test started on the 'remote' (this machine); SIGKILLed at teardown."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _run(target: SshTarget, command: str, timeout: float = 15.0, input: bytes | None = None) -> CommandResult:
    return asyncio.run(run(target, command, timeout=timeout, input=input))


# -- running commands ---------------------------------------------------------------------------


def test_run_captures_stdout_stderr_and_exit_status(sshd: SshServer) -> None:
    result = _run(sshd.target(), "printf 'to out\\n'; printf 'to err' >&2; exit 3")
    assert result.exit_status == 3
    assert result.stdout == b"to out\n"
    assert result.stderr == b"to err"
    assert 0 < result.duration_s < 15


def test_run_success_and_failure_statuses(sshd: SshServer) -> None:
    assert _run(sshd.target(), "true").exit_status == 0
    assert _run(sshd.target(), "false").exit_status == 1
    assert _run(sshd.target(), "exit 42").exit_status == 42


def test_run_runs_as_the_target_user_on_the_server(sshd: SshServer) -> None:
    result = _run(sshd.target(), "id -un; echo $SSH_CONNECTION")
    user, connection = result.stdout.decode().splitlines()
    assert user == sshd.user
    assert connection.split()[2:] == [sshd.host, str(sshd.port)]


def test_run_feeds_input_and_handles_large_output_both_ways(sshd: SshServer) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # larger than the SSH windows, so both directions block
    result = _run(sshd.target(), "cat; printf done >&2", input=payload)
    assert result.exit_status == 0
    assert result.stdout == payload
    assert result.stderr == b"done"


def test_run_input_ignored_by_command_does_not_hang(sshd: SshServer) -> None:
    result = _run(sshd.target(), "echo ignored", input=os.urandom(4 * 1024 * 1024), timeout=10)
    assert result.exit_status == 0
    assert result.stdout == b"ignored\n"


def test_timeout_kills_remote_command_and_keeps_secrets_out(
    sshd: SshServer, tmp_path: Path, kill_groups: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    pidfile, marker = tmp_path / "pid", tmp_path / "marker"
    command = f"echo $$ > {pidfile}; TOKEN={SECRET}; sleep 30; touch {marker}"
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(TemporaryError) as err:
        _run(sshd.target(), command, timeout=1.5)
    elapsed = time.monotonic() - started
    pgid = _read_pid(pidfile)
    kill_groups.append(pgid)

    assert 1.4 < elapsed < 3.0, elapsed
    assert err.value.fault == "SshTimeout"
    assert f"{sshd.host}:{sshd.port}" in str(err.value) and "1.5s" in str(err.value)
    assert SECRET not in str(err.value) and "sleep" not in str(err.value)
    assert SECRET not in caplog.text
    # The remote shell and its `sleep 30` are really gone, not just our channel.
    assert _wait_until(lambda: not _live_group_members(pgid), within=5), _live_group_members(pgid)
    assert not marker.exists()


def test_cancelling_the_caller_kills_the_remote_command(
    sshd: SshServer, tmp_path: Path, kill_groups: list[int]
) -> None:
    pidfile = tmp_path / "pid"

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(run(sshd.target(), f"echo $$ > {pidfile}; sleep 30", timeout=60), 1.5)
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    pgid = _read_pid(pidfile)
    kill_groups.append(pgid)
    assert elapsed < 3.0
    assert _wait_until(lambda: not _live_group_members(pgid), within=5), _live_group_members(pgid)


def test_timeout_covers_a_server_that_never_sends_a_banner() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
        thread.start()
        target = SshTarget("127.0.0.1", user="nobody", port=listener.getsockname()[1], connect_timeout=60)
        started = time.monotonic()
        with pytest.raises(TemporaryError) as err:
            _run(target, "true", timeout=1.0)
        elapsed = time.monotonic() - started
        for s in accepted:
            s.close()
    assert elapsed < 2.5, elapsed
    assert err.value.fault in {"SshConnect", "SshTimeout"}


# -- host keys ----------------------------------------------------------------------------------


def test_host_key_mismatch_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    other = generate_ed25519_keypair(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{sshd.known_hosts_name} {' '.join(other.split()[:2])}\n")
    with pytest.raises(PermanentError) as err:
        _run(sshd.target(known_hosts=str(known_hosts)), "true")
    message = str(err.value)
    assert err.value.fault == "HostKeyMismatch"
    assert "CHANGED" in message and "man-in-the-middle" in message
    assert f"{sshd.host}:{sshd.port}" in message
    assert paramiko.Ed25519Key(filename=str(tmp_path / "impostor")).fingerprint in message  # what known_hosts says ...
    assert _server_fingerprint(sshd) in message  # ... and what the server offered


def _server_fingerprint(sshd: SshServer) -> str:
    return paramiko.Ed25519Key(filename=str(sshd.workdir / "ssh_host_ed25519_key")).fingerprint


@pytest.mark.parametrize("state", ["empty", "missing", "other-port"])
def test_unknown_host_is_refused_by_default(sshd: SshServer, tmp_path: Path, state: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    if state == "empty":
        known_hosts.write_text("")
    elif state == "other-port":  # the right key, filed under another port, is not this host
        known_hosts.write_text(f"[{sshd.host}]:{sshd.port + 1} {sshd.host_public_key}\n")
    with pytest.raises(PermanentError) as err:
        _run(sshd.target(known_hosts=str(known_hosts)), "true")
    message = str(err.value)
    assert err.value.fault == "HostKeyUnknown"
    assert f"host key for {sshd.host}:{sshd.port} is not in {known_hosts}" in message
    assert "ssh-keyscan" in message and "insecure_host_key" in message
    assert _server_fingerprint(sshd) in message
    if state == "missing":
        assert not known_hosts.exists()


def test_default_known_hosts_is_home_ssh_known_hosts(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    target = SshTarget(sshd.host, user=sshd.user, port=sshd.port, key_file=str(sshd.client_key))
    with pytest.raises(PermanentError, match="is not in .*/.ssh/known_hosts"):
        _run(target, "true")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts.read_text())
    assert _run(target, "echo ok").stdout == b"ok\n"


def test_hashed_known_hosts_entries_work(sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host(sshd.known_hosts_name)
    known_hosts.write_text(f"{hashed} {sshd.host_public_key}\n")
    assert _run(sshd.target(known_hosts=str(known_hosts)), "echo ok").stdout == b"ok\n"


def test_insecure_host_key_connects_and_warns_every_time(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known_hosts = tmp_path / "known_hosts"
    other = generate_ed25519_keypair(tmp_path / "impostor")
    known_hosts.write_text(f"{sshd.known_hosts_name} {' '.join(other.split()[:2])}\n")  # stale
    before = known_hosts.read_text()
    target = sshd.target(known_hosts=str(known_hosts), insecure_host_key=True)
    caplog.set_level(logging.WARNING, logger="forkscale.ssh")
    assert _run(target, "echo one").stdout == b"one\n"
    assert _run(target, "echo two").stdout == b"two\n"
    warnings = [r for r in caplog.records if r.name == "forkscale.ssh" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "host key checking is OFF" in warnings[0].getMessage()
    assert _server_fingerprint(sshd) in warnings[0].getMessage()
    assert known_hosts.read_text() == before  # accepting never writes known_hosts


def test_checked_connection_does_not_warn(sshd: SshServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="forkscale.ssh")
    assert _run(sshd.target(), "true").exit_status == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- auth and network ---------------------------------------------------------------------------


def test_wrong_key_is_a_permanent_auth_failure(sshd: SshServer, tmp_path: Path) -> None:
    generate_ed25519_keypair(tmp_path / "stranger")
    with pytest.raises(PermanentError) as err:
        _run(sshd.target(key_file=str(tmp_path / "stranger")), "true")
    assert err.value.fault == "SshAuthFailed"
    assert "authentication failed" in str(err.value)


def test_wrong_user_is_a_permanent_auth_failure(sshd: SshServer) -> None:
    with pytest.raises(PermanentError) as err:
        _run(sshd.target(user="forkscale-no-such-user"), "true")
    assert err.value.fault == "SshAuthFailed"


def test_missing_key_file_is_permanent(sshd: SshServer, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as err:
        _run(sshd.target(key_file=str(tmp_path / "nope")), "true")
    assert err.value.fault == "SshKeyFile"


def test_closed_port_is_temporary(sshd: SshServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        started = time.monotonic()
        with pytest.raises(TemporaryError) as err:
            _run(sshd.target(port=port), "true", timeout=10)
    assert time.monotonic() - started < 5
    assert err.value.fault == "SshConnect"
    assert f"127.0.0.1:{port}" in str(err.value)
    assert err.value.delay > 0


# -- detached launch and the freeze command -----------------------------------------------------


def test_launch_detached_returns_while_the_command_keeps_running(
    sshd: SshServer, tmp_path: Path, kill_groups: list[int]
) -> None:
    pidfile, marker = tmp_path / "pid", tmp_path / "marker"
    started = time.monotonic()
    asyncio.run(launch_detached(sshd.target(), f"echo $$ > {pidfile}; sleep 600; touch {marker}", timeout=10))
    elapsed = time.monotonic() - started
    pid = _read_pid(pidfile)
    kill_groups.append(pid)

    assert elapsed < 3.0, elapsed
    assert os.getsid(pid) == pid  # its own session: nothing of the SSH session reaches it
    time.sleep(0.5)  # the connection is closed by now
    assert _live_group_members(pid), "the detached command died with the connection"
    assert b"sleep" in b" ".join(
        Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ") for p in _live_group_members(pid)
    )
    assert not marker.exists()


def test_launch_detached_needs_a_working_connection(sshd: SshServer, tmp_path: Path) -> None:
    generate_ed25519_keypair(tmp_path / "stranger")
    with pytest.raises(PermanentError):
        asyncio.run(launch_detached(sshd.target(key_file=str(tmp_path / "stranger")), "true", timeout=10))


def test_freeze_command_quotes_the_script_path() -> None:
    assert freeze_command() == "/usr/local/sbin/forkscale-guest prepare && /usr/local/sbin/forkscale-guest freeze"
    assert freeze_command("/opt/fork scale/g") == "'/opt/fork scale/g' prepare && '/opt/fork scale/g' freeze"


@pytest.mark.parametrize("prepare_status", [0, 1])
def test_freeze_command_runs_prepare_then_freeze_detached(
    sshd: SshServer, tmp_path: Path, prepare_status: int
) -> None:
    script = tmp_path / "guest dir" / "forkscale-guest"
    script.parent.mkdir()
    log = tmp_path / "calls"
    script.write_text(f'#!/bin/sh\necho "$1" >> {log}\n[ "$1" = prepare ] && exit {prepare_status}\nexit 0\n')
    script.chmod(0o755)
    asyncio.run(launch_detached(sshd.target(), freeze_command(str(script)), timeout=10))
    expected = "prepare\nfreeze\n" if prepare_status == 0 else "prepare\n"
    assert _wait_until(lambda: log.exists() and log.read_text() == expected, within=5), (
        log.read_text() if log.exists() else None
    )
    time.sleep(0.3)  # freeze must not follow a failed prepare, even late
    assert log.read_text() == expected
