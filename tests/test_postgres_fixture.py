"""The private PostgreSQL cluster the PostgreSQL ledger is tested against (tests/fixtures/postgres.py).

Checks what the ledger will stand on: TLS verified against the session CA, password-only logins,
transactions, `FOR UPDATE SKIP LOCKED` (claims) and session advisory locks (leases), and that the
cluster leaves nothing running or on disk after the session, even when pytest is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from forkscale.sim.server import make_certificates

if TYPE_CHECKING:
    from tests.fixtures.postgres import PostgresDatabase

REPO = Path(__file__).resolve().parent.parent
LEASE_KEY = 180018


async def _ssl_state(dsn: str) -> tuple[bool, str, str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT ssl, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        return bool(row[0]), str(row[1]), str(row[2])


def test_connects_over_tls_verified_against_the_session_ca(postgres_db: PostgresDatabase):
    dsn = postgres_db.dsn
    assert "sslmode='verify-full'" in dsn and "sslrootcert=" in dsn
    ssl, version, user = asyncio.run(_ssl_state(dsn))
    assert ssl is True and version.startswith("TLSv1.")
    assert user == postgres_db.cluster.user


def test_the_password_is_never_in_the_dsn_and_is_required(postgres_db: PostgresDatabase, tmp_path: Path):
    cluster = postgres_db.cluster
    assert cluster.password not in postgres_db.dsn
    assert cluster.password not in repr(cluster)
    wrong = tmp_path / "pgpass"
    wrong.write_text(f"*:{cluster.port}:*:{cluster.user}:not-the-password\n")
    wrong.chmod(0o600)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        asyncio.run(_ssl_state(cluster.dsn(postgres_db.name, passfile=str(wrong))))


def test_a_server_not_signed_by_the_given_ca_is_refused(postgres_db: PostgresDatabase, tmp_path: Path):
    other_ca, _cert, _key = make_certificates(tmp_path / "other")
    dsn = postgres_db.cluster.dsn(postgres_db.name, sslrootcert=str(other_ca))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        asyncio.run(_ssl_state(dsn))


def test_plain_tcp_without_tls_is_refused(postgres_db: PostgresDatabase):
    dsn = postgres_db.cluster.dsn(postgres_db.name, sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        asyncio.run(_ssl_state(dsn))


async def _transactions(dsn: str) -> tuple[list[str], list[str]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE clones (name text PRIMARY KEY)")
        async with conn.transaction():
            await conn.execute("INSERT INTO clones VALUES ('web-001'), ('web-002')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await conn.execute("INSERT INTO clones VALUES ('web-003')")
                await conn.execute("INSERT INTO clones VALUES ('web-001')")  # aborts the whole transaction
    async with await psycopg.AsyncConnection.connect(dsn) as other:
        seen = [r[0] for r in await (await other.execute("SELECT name FROM clones ORDER BY name")).fetchall()]
        async with other.transaction(force_rollback=True):
            await other.execute("DELETE FROM clones")
        after = [r[0] for r in await (await other.execute("SELECT name FROM clones ORDER BY name")).fetchall()]
    return seen, after


def test_transactions_commit_and_roll_back_as_a_whole(postgres_db: PostgresDatabase):
    seen, after_rollback = asyncio.run(_transactions(postgres_db.dsn))
    assert seen == ["web-001", "web-002"]
    assert after_rollback == ["web-001", "web-002"]


CLAIM = "SELECT id FROM ready ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED"


async def _two_claims(dsn: str) -> tuple[list[int], list[int], list[int]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as setup:
        await setup.execute("CREATE TABLE ready (id int PRIMARY KEY)")
        await setup.execute("INSERT INTO ready SELECT generate_series(1, 5)")
    first = await psycopg.AsyncConnection.connect(dsn)
    second = await psycopg.AsyncConnection.connect(dsn)
    async with first, second:
        # Both transactions stay open: the first one's row locks are held while the second claims.
        mine = [r[0] for r in await (await first.execute(CLAIM)).fetchall()]
        theirs = [r[0] for r in await (await second.execute(CLAIM)).fetchall()]
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await second.execute("SELECT id FROM ready WHERE id = %s FOR UPDATE NOWAIT", (mine[0],))
        await second.rollback()
        await first.commit()  # releases the first claim
        again = [r[0] for r in await (await second.execute(CLAIM)).fetchall()]
        await second.rollback()
    return mine, theirs, again


def test_skip_locked_gives_concurrent_transactions_different_rows(postgres_db: PostgresDatabase):
    mine, theirs, again = asyncio.run(_two_claims(postgres_db.dsn))
    assert mine == [1, 2]
    assert theirs == [3, 4]
    assert again == [1, 2]


async def _try_lease(conn: psycopg.AsyncConnection) -> bool:
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEASE_KEY,))).fetchone()
    assert row is not None
    return bool(row[0])


async def _lease_handover(dsn: str) -> tuple[bool, bool, bool, float]:
    holder = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        held = await _try_lease(holder)
        refused = not await _try_lease(other)
        await holder.close()  # the backend ends and the session lock goes with it, shortly after
        started = time.monotonic()
        taken = False
        while not taken and time.monotonic() - started < 10:
            taken = await _try_lease(other)
            if not taken:
                await asyncio.sleep(0.02)
        return held, refused, taken, time.monotonic() - started


def test_a_session_advisory_lock_is_exclusive_and_dies_with_its_connection(postgres_db: PostgresDatabase):
    held, refused, taken, waited = asyncio.run(_lease_handover(postgres_db.dsn))
    assert held, "the first connection should get the free lock"
    assert refused, "a second connection must not get a lock another session holds"
    assert taken, f"the lock was not released {waited:.1f}s after its connection closed"


INNER_TEST = """
import json, os, time
pytest_plugins = ["tests.fixtures.postgres"]

def test_inner(postgres_db):
    import psycopg
    with psycopg.connect(postgres_db.dsn) as conn:
        conn.execute("SELECT 1")
    c = postgres_db.cluster
    info = {"pid": c.pid, "workdir": str(c.workdir), "port": c.port, "timings": c.timings}
    os.write(os.open(os.environ["INFO"], os.O_WRONLY | os.O_CREAT), json.dumps(info).encode())
    time.sleep(float(os.environ.get("LINGER", "0")))
"""


def _server_alive(pid: int) -> bool:
    """A zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _inner_pytest(tmp_path: Path, linger: float) -> tuple[subprocess.Popen[str], Path]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    info = tmp_path / "info.json"
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "INFO": str(info), "LINGER": str(linger), "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'base'}",
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, info


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.usefixtures("postgres_bindir")
def test_the_cluster_is_stopped_and_removed_after_the_session(tmp_path: Path):
    proc, info_file = _inner_pytest(tmp_path, linger=0)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    info = json.loads(info_file.read_text())
    assert not _server_alive(info["pid"])
    assert not Path(info["workdir"]).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(make_conninfo(host="127.0.0.1", port=info["port"], connect_timeout=3))


@pytest.mark.usefixtures("postgres_bindir")
def test_the_cluster_dies_with_a_killed_pytest(tmp_path: Path):
    proc, info_file = _inner_pytest(tmp_path, linger=60)
    try:
        assert _wait_until(lambda: info_file.exists() and info_file.stat().st_size > 0, 60), "inner test never ran"
        info = json.loads(info_file.read_text())
        assert _server_alive(info["pid"])
        proc.send_signal(signal.SIGKILL)  # no teardown runs
        proc.wait(timeout=10)
        assert _wait_until(lambda: not _server_alive(info["pid"]), 20), "postgres outlived a killed pytest"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _clean_up_after(info_file)


def _clean_up_after(info_file: Path) -> None:
    """What a killed session cannot do: remove its cluster's dir (and stop it, should it have survived)."""
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return
    if _server_alive(info["pid"]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGQUIT)
    shutil.rmtree(info["workdir"], ignore_errors=True)
