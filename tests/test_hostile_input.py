"""Hostile input through the real CLI: exit 2, one line on stderr, no file created, no connection made.

Every case starts from a spec that works against the twin (tests/spine_helpers.write_spec) and
breaks one thing. The twin's request counter (admin `stats`) proves nothing reached vCenter, and
a listing of the working directory before and after proves nothing was created (the ledger
above all).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.spine_helpers import REPO, cli, write_spec


@dataclass
class Case:
    """What to run (`argv`, `env`) and the phrase the one error line must hold."""

    argv: list[str]
    phrase: str
    env: dict[str, str] = field(default_factory=dict)


def _spec(tmp: Path, twin, mutate: Callable[[dict], None] | None = None, **kw) -> Path:
    path = write_spec(tmp, twin, count=2, **kw)
    if mutate is not None:
        doc = yaml.safe_load(path.read_text())
        mutate(doc)
        path.write_text(yaml.safe_dump(doc))
    return path


def apply(path: Path | str, *extra: str) -> list[str]:
    return ["apply", "-f", str(path), *extra]


def _pool(doc: dict) -> dict:
    return doc["pools"][0]


def _write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _password_link(tmp: Path, twin, mode: int) -> Path:
    target = tmp / "secrets" / "real-password"
    target.parent.mkdir(exist_ok=True)
    target.write_text(twin.password)
    os.chmod(target, mode)
    link = tmp / "password-link"
    link.symlink_to(target)
    return link


# -- the eleven inputs the issue found -----------------------------------------------------------

def nesting_600(tmp: Path, twin) -> Case:
    return Case(apply(_write(tmp, "deep.yaml", "pools: " + "[" * 600 + "]" * 600 + "\n")), "nested more than 64")


def dev_zero(tmp: Path, twin) -> Case:
    return Case(apply("/dev/zero"), "/dev/zero is a character device; a spec")


def fifo_spec(tmp: Path, twin) -> Case:
    os.mkfifo(tmp / "spec.fifo")
    return Case(apply(tmp / "spec.fifo"), "is a FIFO; a spec")


def state_directory(tmp: Path, twin) -> Case:
    (tmp / "ledger-dir").mkdir()
    return Case(apply(_spec(tmp, twin, state=str(tmp / "ledger-dir"))), "state: ")


def state_under_proc(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin, state="/proc/self/forkscale.sqlite")), "is under /proc")


def garbage_ca_file(tmp: Path, twin) -> Case:
    ca = _write(tmp, "garbage-ca.pem", os.urandom(2048))
    return Case(apply(_spec(tmp, twin, lambda d: d["vcenter"].update(ca_file=str(ca)))),
                "vcenter.ca_file: ")


def oversized_spec(tmp: Path, twin) -> Case:
    text = _spec(tmp, twin).read_text() + "# " + "x" * (2 << 20) + "\n"
    return Case(apply(_write(tmp, "big.yaml", text)), "a spec may be at most 1048576 bytes (FORKSCALE_SPEC_MAX_BYTES)")


def nul_byte(tmp: Path, twin) -> Case:
    text = _spec(tmp, twin).read_text().replace("quickstart", "quick\0start", 1)
    return Case(apply(_write(tmp, "nul.yaml", text)), "contains a NUL byte")


def budget_1e30(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin, lambda d: _pool(d)["budgets"].update(vcenter=10**30))),
                "pools[0].budgets.vcenter: must be between 1 and 640, not 1e+30")


def password_symlink_to_0644(tmp: Path, twin) -> Case:
    link = _password_link(tmp, twin, 0o644)
    return Case(apply(_spec(tmp, twin, lambda d: d["vcenter"].update(password_file=str(link)))),
                "password-link -> ")


def http_url(tmp: Path, twin) -> Case:
    url = twin.url.replace("https://", "http://")
    return Case(apply(_spec(tmp, twin, lambda d: d["vcenter"].update(url=url))), "plain HTTP")


# -- and more ------------------------------------------------------------------------------------

def spec_is_directory(tmp: Path, twin) -> Case:
    (tmp / "a-dir").mkdir()
    return Case(apply(tmp / "a-dir"), "is a directory; a spec")


def alias_bomb(tmp: Path, twin) -> Case:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return Case(apply(_write(tmp, "bomb.yaml", "\n".join(lines) + "\n")), "expands to more than")


def not_utf8(tmp: Path, twin) -> Case:
    return Case(apply(_write(tmp, "latin1.yaml", _spec(tmp, twin).read_bytes() + b"# caf\xe9\n")), "not UTF-8")


def huge_integer(tmp: Path, twin) -> Case:
    text = _spec(tmp, twin).read_text().replace("count: 2", "count: " + "9" * 5000)
    return Case(apply(_write(tmp, "digits.yaml", text)), "a number of 5000 characters")


def state_parent_is_a_file(tmp: Path, twin) -> Case:
    _write(tmp, "plain-file", "x")
    return Case(apply(_spec(tmp, twin, state=str(tmp / "plain-file" / "state.sqlite"))), "is not a directory")


def state_not_sqlite(tmp: Path, twin) -> Case:
    notes = _write(tmp, "notes.txt", "my notes, not a ledger\n")
    return Case(apply(_spec(tmp, twin, state=str(notes))), "is not a ledger (not an SQLite file)")


def state_flag_directory(tmp: Path, twin) -> Case:
    (tmp / "ledger-dir").mkdir()
    return Case(["scale", "quickstart", "3", "-f", str(_spec(tmp, twin)), "--state", str(tmp / "ledger-dir")],
                "--state: ")


def ca_file_directory(tmp: Path, twin) -> Case:
    (tmp / "ca-dir").mkdir()
    return Case(apply(_spec(tmp, twin, lambda d: d["vcenter"].update(ca_file=str(tmp / "ca-dir")))),
                "is a directory; a CA file must be a regular file")


def rate_tiny(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin, lambda d: _pool(d)["budgets"].update(rate_per_s=1e-300))),
                "rate_per_s: must be between 0.01 and 10000")


def guest_timeout_huge(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin, lambda d: _pool(d)["guest_ready"].update(timeout_s=1e30))),
                "guest_ready.timeout_s: must be more than 0 and at most 86400, not 1e+30")


def evaluate_every_tiny(tmp: Path, twin) -> Case:
    policy = {"strategy": "fixed", "count": 2, "evaluate_every_s": 1e-6}
    return Case(apply(_spec(tmp, twin, lambda d: _pool(d).update(policy=policy))),
                "policy.evaluate_every_s: must be between 0.05 and 86400 seconds")


def password_file_fifo(tmp: Path, twin) -> Case:
    os.mkfifo(tmp / "pw.fifo", 0o600)
    return Case(apply(_spec(tmp, twin, lambda d: d["vcenter"].update(password_file=str(tmp / "pw.fifo")))),
                "is a FIFO; a password file must be a regular file")


def spec_max_bytes_garbage(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin)), "FORKSCALE_SPEC_MAX_BYTES: must be a number of bytes",
                env={"FORKSCALE_SPEC_MAX_BYTES": "lots"})


def spec_max_bytes_lowered(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin)), "may be at most 100 bytes", env={"FORKSCALE_SPEC_MAX_BYTES": "100"})


def too_many_pools(tmp: Path, twin) -> Case:
    def mutate(doc: dict) -> None:
        doc["pools"] = [dict(_pool(doc), name=f"p{i}") for i in range(300)]
    return Case(apply(_spec(tmp, twin, mutate)), "pools: has 300 pools; one spec holds at most 256")


def retention_zero(tmp: Path, twin) -> Case:
    return Case(apply(_spec(tmp, twin, ledger={"retention_days": 0})), "ledger.retention_days: must be a positive")


def scale_beyond_capacity(tmp: Path, twin) -> Case:
    return Case(["scale", "quickstart", "5000", "-f", str(_spec(tmp, twin))], "count: 5000 clones need 5000 addresses")


def serve_state_under_sys(tmp: Path, twin) -> Case:
    token = _write(tmp, "token", "t" * 40)
    os.chmod(token, 0o600)
    return Case(["serve", "-f", str(_spec(tmp, twin, state="/sys/forkscale.sqlite")), "--listen", "127.0.0.1:0",
                 "--token-file", str(token)], "is under /sys")


ISSUE = [nesting_600, dev_zero, fifo_spec, state_directory, state_under_proc, garbage_ca_file, oversized_spec,
         nul_byte, budget_1e30, password_symlink_to_0644, http_url]
MORE = [spec_is_directory, alias_bomb, not_utf8, huge_integer, state_parent_is_a_file, state_not_sqlite,
        state_flag_directory, ca_file_directory, rate_tiny, guest_timeout_huge, evaluate_every_tiny,
        password_file_fifo, spec_max_bytes_garbage, spec_max_bytes_lowered, too_many_pools, retention_zero,
        scale_beyond_capacity, serve_state_under_sys]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", ISSUE + MORE, ids=[f.__name__ for f in ISSUE + MORE])
def test_hostile_input_is_one_line_exit_2_nothing_created_nothing_sent(make, module_twin, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = make(tmp_path, module_twin)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before_files, before = _tree(tmp_path), module_twin.admin("stats")["requests"]
    capsys.readouterr()
    code = cli(*case.argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.phrase in lines[0], lines[0]
    assert _tree(tmp_path) == before_files, "a file was created"
    assert module_twin.admin("stats")["requests"] == before, "something was sent to vCenter"


def test_at_least_ten_hostile_inputs_beyond_the_issues_eleven():
    assert len(ISSUE) == 11 and len(MORE) >= 10


@pytest.mark.timeout(60)
def test_fifo_spec_in_a_real_process_exits_at_once(tmp_path):
    """A FIFO with no writer used to hang `open` (and SIGTERM with it)."""
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "forkscale.cli", "status", "-f", str(fifo)], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "is a FIFO" in proc.stderr
    assert proc.returncode != -signal.SIGTERM


def test_password_symlink_to_a_private_file_is_followed_and_logs_in(twin, tmp_path, capsys, monkeypatch):
    """Symlinked secrets (Kubernetes, Vault agent) work: the target is checked, 0600, and used."""
    monkeypatch.chdir(tmp_path)
    link = _password_link(tmp_path, twin, 0o600)
    spec = _spec(tmp_path, twin, lambda d: d["vcenter"].update(password_file=str(link)))
    assert cli("status", "-f", str(spec)) == 0, capsys.readouterr().err
    assert twin.admin("stats")["methods"].get("Login", 0) >= 1


def test_dangling_password_symlink_names_the_target(module_twin, tmp_path, capsys):
    link = tmp_path / "pw-link"
    link.symlink_to(tmp_path / "gone")
    spec = _spec(tmp_path, module_twin, lambda d: d["vcenter"].update(password_file=str(link)))
    assert cli("status", "-f", str(spec)) == 2
    assert f"{link} -> {tmp_path / 'gone'}: no such file" in capsys.readouterr().err


def test_a_spec_refused_by_vcenter_leaves_no_ledger(twin, tmp_path, capsys, monkeypatch):
    """A source VM vCenter does not have is found after the login, before the ledger is created."""
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, twin, lambda d: _pool(d).update(source="no-such-golden"))
    assert cli("apply", "-f", str(spec)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pools[0].source: no VM named 'no-such-golden' in vCenter"]
    assert not (tmp_path / "state.sqlite").exists()


def test_http_url_with_insecure_true_is_accepted_loudly(tmp_path, capsys, monkeypatch):
    """`insecure: true` allows http:// -- and every connection says the password crosses in clear."""
    from forkscale.sim import start_in_thread

    handle = start_in_thread(time_scale=0.001, state_dir=str(tmp_path / "sim"), http=True)
    try:
        monkeypatch.chdir(tmp_path)
        spec = _spec(tmp_path, handle, lambda d: d["vcenter"].update(insecure=True))
        assert cli("status", "-f", str(spec)) == 0
        err = capsys.readouterr().err
        assert "is plain HTTP (insecure: true): the password and the session cross the network in clear" in err
    finally:
        handle.stop()
