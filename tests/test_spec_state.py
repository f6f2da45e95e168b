"""The spec's `state:` (a SQLite path or a PostgreSQL database) and `ha:`: refused with the field named."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from forkscale.core.errors import SpecError
from forkscale.spec import PostgresState, parse_spec
from tests.test_spec import PW_ENV, base

SECRET = "db-pw-Hunter2-never-print-me"


def spec_with(tmp_path: Path, state: object = None, ha: object = None):
    doc = base()
    if state is not None:
        doc["state"] = state
    if ha is not None:
        doc["ha"] = ha
    return parse_spec(doc, base_dir=tmp_path)


def refused(tmp_path: Path, state: object, path: str, match: str) -> str:
    with pytest.raises(SpecError) as info:
        spec_with(tmp_path, state)
    assert info.value.path == path, str(info.value)
    assert match in info.value.message, str(info.value)
    return str(info.value)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    file = tmp_path / "db-ca.pem"
    file.write_text("-----BEGIN CERTIFICATE-----\n")
    return file


def query(state: PostgresState) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(state.url).query).items()}


def test_a_plain_path_is_a_sqlite_file_relative_to_the_spec(tmp_path: Path):
    assert spec_with(tmp_path).state == tmp_path / ".forkscale" / "state.sqlite"
    assert spec_with(tmp_path, "ledger/db.sqlite").state == tmp_path / "ledger" / "db.sqlite"


def test_a_url_is_verified_with_tls_by_default(tmp_path: Path, ca: Path):
    state = spec_with(tmp_path, f"postgresql://forkscale@db.example.com:6432/ledger?sslrootcert={ca.name}").state
    assert isinstance(state, PostgresState)
    assert query(state) == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    assert state.display == "postgresql://forkscale@db.example.com:6432/ledger"
    assert state.secret is None  # libpq's passfile, then


def test_the_mapping_form_takes_the_password_by_reference_and_a_ca_file(tmp_path: Path, ca: Path, monkeypatch):
    monkeypatch.setenv("FORKSCALE_DB_PW", SECRET)
    state = spec_with(tmp_path, {"url": "postgresql://forkscale@db/ledger", "password_env": "FORKSCALE_DB_PW",
                                 "ca_file": str(ca)}).state
    assert isinstance(state, PostgresState)
    assert state.password() == SECRET
    assert SECRET not in state.url and SECRET not in repr(state)
    assert query(state)["sslrootcert"] == str(ca)


@pytest.mark.parametrize("url", [f"postgresql://forkscale:{SECRET}@db/ledger",
                                 f"postgresql://forkscale@db/ledger?password={SECRET}"])
def test_a_password_in_the_url_is_refused_and_not_echoed(tmp_path: Path, url: str):
    message = refused(tmp_path, url, "state", "must not contain a password")
    assert SECRET not in message


def test_an_inline_password_in_the_mapping_is_refused(tmp_path: Path):
    refused(tmp_path, {"url": "postgresql://u@db/ledger", "password": SECRET}, "state.password",
            "inline passwords are not accepted")


def test_an_unverified_sslmode_needs_insecure(tmp_path: Path):
    refused(tmp_path, "postgresql://u@db/ledger?sslmode=require", "state", "does not verify the database server")
    state = spec_with(tmp_path, {"url": "postgresql://u@db/ledger?sslmode=require", "insecure": True}).state
    assert isinstance(state, PostgresState) and query(state)["sslmode"] == "require"


def test_no_ca_to_verify_with_is_refused_before_connecting(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    refused(tmp_path, "postgresql://u@db/ledger", "state", "cannot verify the database server")
    refused(tmp_path, "postgresql://u@db/ledger?sslrootcert=missing.pem", "state.sslrootcert", "no such file")
    refused(tmp_path, {"url": "postgresql://u@db/ledger", "ca_file": "nope.pem"}, "state.ca_file", "no such file")
    state = spec_with(tmp_path, "postgresql://u@db/ledger?sslrootcert=system").state
    assert isinstance(state, PostgresState)


def test_a_unix_socket_needs_no_tls(tmp_path: Path):
    state = spec_with(tmp_path, "postgresql://u@/ledger?host=/run/postgresql").state
    assert isinstance(state, PostgresState) and "sslmode" not in query(state)


def test_a_loose_passfile_is_refused(tmp_path: Path, ca: Path):
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:u:pw\n")
    os.chmod(passfile, 0o644)
    url = f"postgresql://u@db/ledger?sslrootcert={ca}&passfile={passfile}"
    refused(tmp_path, url, "state.passfile", "mode 0644")
    os.chmod(passfile, 0o600)
    state = spec_with(tmp_path, url).state
    assert isinstance(state, PostgresState) and query(state)["passfile"] == str(passfile)


@pytest.mark.parametrize(("state", "path", "match"), [
    ("postgresql://u@db/?sslrootcert=system", "state", "must name one database"),
    ("postgresql://u@db/ledger?sslrootcert=system&sslmode=sometimes", "state", "is not one of"),
    ("postgresql://u@db/ledger?sslrootcert=system&options=-c%20x", "state", "unknown parameter 'options'"),
    ("postgresql://u@db:99999/ledger", "state", "invalid port"),
    ("mysql://u@db/ledger", "state", "mysql:// is not a ledger"),
    ({"url": "state.sqlite"}, "state.url", "must start with postgresql://"),
    ({"password_env": PW_ENV}, "state.url", "required"),
    ({"url": "postgresql://u@db/x", "ca": "x"}, "state.ca", "unknown key"),
])
def test_bad_state_is_refused_with_its_field(tmp_path: Path, state: object, path: str, match: str):
    refused(tmp_path, state, path, match)


def test_ha_failover_defaults_to_15_s_and_is_bounded(tmp_path: Path):
    assert spec_with(tmp_path).ha.failover_s == 15.0
    assert spec_with(tmp_path, ha={"failover_s": 6}).ha.failover_s == 6.0
    for bad, match in ((1, "between 2 and 600"), (1e30, "between 2 and 600"), ("x", "must be a number")):
        with pytest.raises(SpecError, match=match) as info:
            spec_with(tmp_path, ha={"failover_s": bad})
        assert info.value.path == "ha.failover_s"
    with pytest.raises(SpecError) as info:
        spec_with(tmp_path, ha={"failover": 5})
    assert info.value.path == "ha.failover"
