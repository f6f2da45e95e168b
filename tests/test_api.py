"""The HTTP API of `forkscale serve`, run as a real process against the twin."""

from __future__ import annotations

import json
import time

import pytest

from forkscale.cli import main
from forkscale.ledger import Ledger
from tests.serve_helpers import base_pool, start_serve, token_file, write_pool_spec


def _pools():
    fixed = base_pool("fixed", count=2, on_release="keep", cidr="10.20.0.0/24",
                      policy={"strategy": "fixed", "evaluate_every_s": 0.2, "cooldown_up_s": 0,
                              "cooldown_down_s": 0})
    desk = base_pool("desk", cidr="10.21.0.0/24",
                     policy={"strategy": "headroom", "headroom": 1, "min": 0, "max": 6, "evaluate_every_s": 0.2,
                             "cooldown_up_s": 0, "cooldown_down_s": 0})
    return [fixed, desk]


@pytest.fixture
def served(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_pool_spec(tmp_path, twin, _pools())
    s = start_serve(tmp_path, spec, args=("--metrics-interval", "0.3"))
    try:
        yield s
    finally:
        s.stop()


def test_auth_errors_and_count(served, tmp_path):
    s = served
    s.wait_status("fixed", lambda d: d["spares"] == 2, what="2 ready in the fixed pool")
    s.wait_status("desk", lambda d: d["spares"] == 1, what="1 spare in the headroom pool")

    # open endpoints
    code, doc, _ = s.call("GET", "/healthz", token=None)
    assert code == 200 and doc["ok"] is True and doc["pools"] == 2
    code, text, _ = s.call("GET", "/metrics", token=None)
    assert code == 200
    assert 'forkscale_pool_desired{pool="fixed"} 2.0' in text
    assert 'forkscale_policy_decisions_total{direction="up",pool="desk",reason="headroom"}' in text

    # 401: no token, a wrong one, a different scheme; also for an unknown pool (no probing)
    for token in (None, "x" * 48, ""):
        code, doc, headers = s.call("GET", "/v1/pools", token=token)
        assert code == 401, (token, doc)
        assert "bearer token" in doc["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
    code, _, _ = s.call("POST", "/v1/pools/nope/claim", {"user": "a"}, token=None)
    assert code == 401

    # 404
    code, doc, _ = s.call("POST", "/v1/pools/nope/claim", {"user": "alice"})
    assert code == 404 and "no pool named 'nope'" in doc["error"] and "fixed, desk" in doc["error"]
    code, doc, _ = s.call("GET", "/v1/pools/nope")
    assert code == 404
    code, doc, _ = s.call("POST", "/v1/pools/fixed/release", {"vm": "fixed-999"})
    assert code == 404 and "fixed-999" in doc["error"]
    code, doc, _ = s.call("GET", "/v1/nothing-here")
    assert code == 404 and "error" in doc

    # 400
    code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", raw=b'{"user": "alice",')
    assert code == 400 and "not valid JSON" in doc["error"]
    code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", raw=b'["alice"]')
    assert code == 400 and "JSON object" in doc["error"]
    code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", {"wait_s": 1})
    assert code == 400 and "user is required" in doc["error"]
    code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", {"user": "a", "wait_s": 9999})
    assert code == 400 and "wait_s" in doc["error"]
    for bad in (-1, True, "3", 1.5):
        code, doc, _ = s.call("PUT", "/v1/pools/fixed/count", {"count": bad})
        assert code == 400 and "count must be a whole number" in doc["error"], bad

    # claims until the fixed pool is empty, then 503 + Retry-After after waiting wait_s
    claimed = []
    for user in ("alice", "bob"):
        code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", {"user": user})
        assert code == 200, doc
        assert set(doc) >= {"vm", "hostname", "ip", "claimed_at"} and doc["user"] == user
        claimed.append(doc)
    assert len({c["vm"] for c in claimed}) == 2 and len({c["ip"] for c in claimed}) == 2
    started = time.monotonic()
    code, doc, headers = s.call("POST", "/v1/pools/fixed/claim", {"user": "carol", "wait_s": 0.6})
    waited = time.monotonic() - started
    assert code == 503, doc
    assert int(headers["Retry-After"]) >= 1
    assert "within 0.6s" in doc["error"]
    assert waited >= 0.55

    # release: keep puts it back (claimable again); releasing a ready clone is a 409
    code, doc, _ = s.call("POST", "/v1/pools/fixed/release", {"vm": claimed[0]["vm"]})
    assert code == 202 and doc["action"] == "kept"
    code, doc, _ = s.call("POST", "/v1/pools/fixed/release", {"vm": claimed[0]["vm"]})
    assert code == 409 and "not claimed" in doc["error"]
    code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", {"user": "carol", "wait_s": 5})
    assert code == 200 and doc["vm"] == claimed[0]["vm"]

    # PUT count on a fixed pool: the new count, converged; the waiting claim is served by it
    code, doc, _ = s.call("PUT", "/v1/pools/fixed/count", {"count": 4})
    assert code == 202 and doc == {"pool": "fixed", "strategy": "fixed", "applied": "count", "count": 4}
    code, doc, _ = s.call("POST", "/v1/pools/fixed/claim", {"user": "dave", "wait_s": 20})
    assert code == 200, doc
    st = s.wait_status("fixed", lambda d: d["current"] == 4 and d["spares"] == 1, what="fixed pool at 4")
    assert st["policy"]["count"] == 4 and st["policy"]["override"] == {"count": 4}
    assert st["desired"] == 4

    # PUT count on a headroom pool sets its floor; above its max is a 409 naming the fix
    code, doc, _ = s.call("PUT", "/v1/pools/desk/count", {"count": 3})
    assert code == 202 and doc["applied"] == "min" and doc["min"] == 3
    # the clones are ready a moment before the round that made them records its action
    st = s.wait_status("desk", lambda d: d["current"] == 3 and d["spares"] == 3 and d["actions"]
                       and "raised to min 3" in d["actions"][-1]["reason"], what="desk floor 3, its action recorded")
    assert st["policy"]["min"] == 3
    deadline = time.monotonic() + 10  # the policy's desired count reaches /metrics
    while 'forkscale_pool_desired{pool="desk"} 3.0' not in s.call("GET", "/metrics", token=None)[1]:
        assert time.monotonic() < deadline, "forkscale_pool_desired for desk never became 3"
        time.sleep(0.1)
    code, doc, _ = s.call("PUT", "/v1/pools/desk/count", {"count": 7})
    assert code == 409 and "max 6" in doc["error"] and "policy.max" in doc["error"]

    # status: every pool, with its last decision and reason
    code, doc, _ = s.call("GET", "/v1/pools")
    assert code == 200 and [p["pool"] for p in doc["pools"]] == ["fixed", "desk"]
    for p in doc["pools"]:
        assert p["last_decision"]["reason"] and p["errors"] == []
        assert p["sources"][0]["source"] == "src-linux"

    # graceful stop; the token never reached the log; the ledger agrees with what was served
    assert s.stop() == 0
    log = s.log.read_text()
    assert s.token not in log
    assert "claimed by alice" in log
    with Ledger(tmp_path / "state.sqlite") as led:
        counts = led.counts("fixed")
        assert (counts["ready"], counts["claimed"]) == (1, 3)
        assert {r.claimed_by for r in led.clones("fixed", ["claimed"])} == {"bob", "carol", "dave"}


def test_token_file_must_be_private_and_a_token_is_required(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FORKSCALE_API_TOKEN", raising=False)
    spec = tmp_path / "never-read.yaml"  # the token is checked before the spec is loaded
    loose, _ = token_file(tmp_path, 0o644)
    assert main(["serve", "-f", str(spec), "--token-file", str(loose)]) == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and "mode 0644" in err and "chmod 600" in err

    assert main(["serve", "-f", str(spec)]) == 2
    assert "FORKSCALE_API_TOKEN" in capsys.readouterr().err

    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    assert main(["serve", "-f", str(spec), "--token-file", str(short)]) == 2
    assert "shorter than 16" in capsys.readouterr().err

    # the thin clients apply the same rule to their token file
    assert main(["claim", "vdi", "--token-file", str(loose), "--url", "http://127.0.0.1:9"]) == 2
    assert "mode 0644" in capsys.readouterr().err


def test_dry_run_logs_decisions_and_changes_nothing(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_pool_spec(tmp_path, twin, _pools()[1])
    s = start_serve(tmp_path, spec, args=("--dry-run",))
    try:
        st = s.wait_status("desk", lambda d: d["last_decision"] is not None, what="a decision")
        assert st["dry_run"] is True and st["last_decision"]["direction"] == "up"
        code, doc, _ = s.call("POST", "/v1/pools/desk/claim", {"user": "a"})
        assert code == 409 and "--dry-run" in doc["error"]
        time.sleep(0.5)
        assert s.status("desk")["current"] == 0
    finally:
        assert s.stop() == 0
    log = s.log.read_text()
    assert "decision (dry run) up: 0 claimed + headroom 1 = 1" in log
    assert "(dry run) pool desk: desired 1, create 1" in log
    from tests.spine_helpers import pool_vms

    assert pool_vms(si, "desk") == []
    assert json.loads(json.dumps(st))  # status is plain JSON


def _raw_request(url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client library would send a raw non-ASCII header byte)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_hostile_headers_and_bodies_are_400_or_401_never_500(served):
    s = served
    status, body = _raw_request(s.url, b"GET /v1/pools HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                                       b"Connection: close\r\n\r\n")
    assert status == 401 and b"invalid bearer token" in body
    deep = b"[" * 30000 + b"]" * 30000
    body_bytes = b'{"user": ' + deep + b"}"
    request = (b"POST /v1/pools/fixed/claim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.token.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body_bytes)).encode()
               + b"\r\nConnection: close\r\n\r\n" + body_bytes)
    status, body = _raw_request(s.url, request)
    assert status == 400 and b"nested too deeply" in body
    assert "Traceback" not in s.log_tail(200)
