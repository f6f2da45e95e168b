"""`vmware-rpctool` stand-in: lets real guest scripts talk to the twin as if they ran inside a VM.

    vmware-rpctool-twin "info-get guestinfo.KEY"        print the value; exit 1 if unset
    vmware-rpctool-twin "info-set guestinfo.KEY VALUE"  store it in the VM's config.extraConfig
    vmware-rpctool-twin "instantclone.freeze"           freeze the VM; returns inside each clone
    vmware-rpctool-twin "log MESSAGE"                   accepted and ignored

Like the real tool the command is one argument; split arguments (`info-get guestinfo.KEY`) work
too. Runs as `vmware-rpctool-twin`, `python -m forkscale.sim.rpctool`, or by path
(`python3 -S .../forkscale/sim/rpctool.py`: standard library only, so it starts fastest that
way — a guest script calls it a dozen times per clone).

Environment:
  FORKSCALE_TWIN_URL        the twin (`https://127.0.0.1:8989`; a trailing `/sdk` is ignored)
  FORKSCALE_TWIN_CA         CA file the twin's certificate is verified against (https)
  FORKSCALE_TWIN_VM         the VM this "guest" runs in: name or moid
  FORKSCALE_TWIN_TOKEN      that VM's guest token (see forkscale/sim/guestrpc.py), or else
  FORKSCALE_TWIN_USER, FORKSCALE_TWIN_PASSWORD (or _PASSWORD_FILE)
                            the twin's admin login, exchanged for the token of FORKSCALE_TWIN_VM
  FORKSCALE_TWIN_FREEZE_TIMEOUT  seconds the source's freeze call blocks at most (default: forever)
  FORKSCALE_TWIN_RETRY      seconds to keep retrying an unreachable twin while frozen (default 10)
  FORKSCALE_TWIN_CONTINUE   what runs in each clone (below): unset/`replay`, `none`, or a command
  FORKSCALE_ROOT_PER_CLONE  a directory: each clone continues with FORKSCALE_ROOT=<dir>/<clone name>,
                            a copy of the source's FORKSCALE_ROOT tree (the clone's disk starts as
                            the source's); keep it outside FORKSCALE_ROOT

`instantclone.freeze` in the source: the VM is marked as having an external guest agent (the twin
then plays no guest for its clones), freezes after the `freeze` latency, and the call blocks. For
every instant clone made from it, the stand-in fork()s; the child (stdin/stdout/stderr inherited)
reports the clone's guest as running and continues *as that clone*: FORKSCALE_TWIN_VM (moid),
FORKSCALE_TWIN_VM_NAME and FORKSCALE_TWIN_TOKEN name the clone (the admin login is dropped), so
later `info-get`/`info-set` address the clone. The source's call never returns unless the source is power-cycled or destroyed
(exit 1), the timeout elapses (exit 1), or the twin stays unreachable (exit 1).

How the child continues the caller. A process cannot fork its parent, so the child re-runs it:
with FORKSCALE_TWIN_CONTINUE unset or `replay`, it execs the command line of the process that
called the stand-in (read from /proc, skipping `timeout`/`env`/`nice`-style wrappers), in its
working directory, with FORKSCALE_TWIN_RESUMED naming a one-shot marker file: the replayed
script's own `instantclone.freeze` then returns 0 at once — the call "returns inside the clone" —
and the script goes on from there. Everything before the freeze runs again in the clone, so it
must be repeatable (for `guest/linux/forkscale-guest freeze` it is: it sets status=frozen,
which the clone inherited anyway, and syncs). Without an explicit `replay`, only a shell running
a script or `-c` command is replayed (never an interactive shell or another program).
FORKSCALE_TWIN_CONTINUE=none: the child only reports the clone running and exits. Any other
value is a shell command run (`/bin/sh -c`) in each clone instead of the replay.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

PREFIX = "/forkscale-sim/guest"
SHELLS = {"sh", "dash", "bash", "ash", "ksh", "mksh", "zsh", "busybox", "yash", "posh"}
WRAPPERS = {"timeout", "env", "nice", "ionice", "stdbuf", "setsid", "nohup", "chrt", "taskset"}
POLL_S = 25.0
USAGE = """usage: vmware-rpctool-twin "info-get guestinfo.KEY" | "info-set guestinfo.KEY VALUE"
                           | "instantclone.freeze" | "log MESSAGE"
(a stand-in for vmware-rpctool that talks to the forkscale twin; see FORKSCALE_TWIN_* in
`python -m forkscale.sim.rpctool --help`)"""


class RpcError(Exception):
    """A failed call: message for stderr, and the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Channel:
    """The stand-in's backdoor: HTTP(S) to the twin as one VM."""

    def __init__(self, env: Mapping[str, str]) -> None:
        url = env.get("FORKSCALE_TWIN_URL", "").strip()
        if not url:
            raise RpcError("FORKSCALE_TWIN_URL is not set")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RpcError(f"FORKSCALE_TWIN_URL is not an http(s) URL: {url}")
        path = parts.path.rstrip("/")
        if path.endswith("/sdk"):
            path = path[: -len("/sdk")]
        self.base = f"{parts.scheme}://{parts.netloc}{path}{PREFIX}"
        self.ctx: ssl.SSLContext | None = None
        if parts.scheme == "https":
            ca = env.get("FORKSCALE_TWIN_CA") or None
            self.ctx = ssl.create_default_context(cafile=ca)
        self.vm = env.get("FORKSCALE_TWIN_VM", "")
        self.token = env.get("FORKSCALE_TWIN_TOKEN", "")
        self._env = env

    def login(self) -> None:
        """Have a token for the VM: the given one, or one exchanged for the admin login."""
        if self.token:
            return
        user = self._env.get("FORKSCALE_TWIN_USER", "")
        password = self._env.get("FORKSCALE_TWIN_PASSWORD")
        pw_file = self._env.get("FORKSCALE_TWIN_PASSWORD_FILE")
        if password is None and pw_file:
            try:
                with open(pw_file, encoding="utf-8") as fh:
                    password = fh.read().strip()
            except OSError as exc:
                raise RpcError(f"cannot read FORKSCALE_TWIN_PASSWORD_FILE: {exc}") from exc
        if not user or password is None:
            raise RpcError("set FORKSCALE_TWIN_TOKEN, or FORKSCALE_TWIN_USER and FORKSCALE_TWIN_PASSWORD")
        if not self.vm:
            raise RpcError("FORKSCALE_TWIN_VM is not set")
        import base64

        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        answer = self.call("POST", "/token", {"vm": self.vm}, auth=f"Basic {basic}")
        self.token = str(answer["token"])

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 15.0,
             auth: str | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", auth or f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as resp:
                result: dict[str, Any] = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            try:
                message = str(json.loads(exc.read() or b"{}").get("error") or exc.reason)
            except ValueError:
                message = str(exc.reason)
            raise RpcError(message, exc.code) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RpcError(f"cannot reach the twin at {self.base}: {reason}") from exc


def parse(argv: list[str]) -> tuple[str, str, str | None]:
    """(command, key, value) from one argument string or split arguments."""
    text = " ".join(argv)
    command, _, rest = text.strip().partition(" ")
    rest = rest.lstrip(" ")
    if command == "info-set":
        key, sep, value = rest.partition(" ")
        return command, key, value if sep else None
    return command, rest.strip() if command == "info-get" else rest, None


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if env is None else env
    if not args:
        print(USAGE, file=sys.stderr)
        return 1
    if args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command, key, value = parse(args)
    try:
        if command == "log":
            return 0
        if command not in ("info-get", "info-set", "instantclone.freeze"):
            print("Unknown command", file=sys.stderr)
            return 1
        if command == "instantclone.freeze":
            marker = environ.get("FORKSCALE_TWIN_RESUMED")
            if marker and _consume(marker):
                return 0  # this process tree continues a clone: the call returns here
        channel = Channel(environ)
        channel.login()
        if command == "info-get":
            if not key.startswith("guestinfo."):
                print("Invalid key (only guestinfo.* is readable)", file=sys.stderr)
                return 1
            try:
                answer = channel.call("GET", "/info?" + urllib.parse.urlencode({"key": key}))
            except RpcError as exc:
                if exc.status == 404:
                    print("No value found", file=sys.stderr)
                    return 1
                raise
            sys.stdout.write(str(answer.get("value", "")) + "\n")
            return 0
        if command == "info-set":
            if value is None or not key.startswith("guestinfo."):
                print("Two and exactly two arguments expected: info-set guestinfo.KEY VALUE", file=sys.stderr)
                return 1
            channel.call("POST", "/info", {"key": key, "value": value})
            return 0
        return freeze(channel, environ)
    except RpcError as exc:
        print(f"vmware-rpctool-twin: {command}: {exc}", file=sys.stderr)
        return 1


def _consume(marker: str) -> bool:
    try:
        os.unlink(marker)
    except FileNotFoundError:
        return False
    return True


# instantclone.freeze ---------------------------------------------------------------------------
def _proc_argv(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        raw = fh.read()
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0") if a] if raw else []


def _proc_ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read().decode(errors="replace")
    return int(stat.rsplit(")", 1)[1].split()[1])


def caller(pid: int | None = None) -> tuple[list[str], str] | None:
    """(argv, cwd) of the process that called the stand-in, past wrappers; None if unknown."""
    try:
        cur = os.getppid() if pid is None else pid
        for _ in range(8):
            argv = _proc_argv(cur)
            if not argv:
                return None
            if os.path.basename(argv[0]).lstrip("-") in WRAPPERS:
                cur = _proc_ppid(cur)
                continue
            return argv, os.readlink(f"/proc/{cur}/cwd")
    except (OSError, ValueError, IndexError):
        return None
    return None


class Continuation:
    """What each clone runs: the replayed caller, a command, or nothing."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.kind = "none"
        self.argv: list[str] = []
        self.cwd: str | None = None
        self.note = ""
        mode = env.get("FORKSCALE_TWIN_CONTINUE", "").strip()
        if mode == "none":
            return
        if mode and mode != "replay":
            self.kind, self.argv = "command", ["/bin/sh", "-c", mode]
            return
        found = caller()
        if found is None:
            self.note = "cannot read the caller's command line from /proc; set FORKSCALE_TWIN_CONTINUE"
            return
        argv, cwd = found
        is_script = os.path.basename(argv[0]).lstrip("-") in SHELLS and len(argv) >= 2
        if mode == "replay" or is_script:
            self.kind, self.argv, self.cwd = "replay", argv, cwd
        else:
            self.note = (f"the caller ({argv[0]}) is not a shell running a script: clones will not continue it "
                         "(set FORKSCALE_TWIN_CONTINUE=replay or a command)")

    def run(self, env: dict[str, str]) -> None:
        """Replace this (child) process with the continuation; returns only for `none`."""
        if self.kind == "none":
            return
        if self.cwd:
            os.chdir(self.cwd)
        if self.kind == "replay":
            fd, marker = tempfile.mkstemp(prefix="forkscale-twin-resumed-")
            os.close(fd)
            env["FORKSCALE_TWIN_RESUMED"] = marker
        os.execvpe(self.argv[0], self.argv, env)


def clone_env(env: Mapping[str, str], clone: dict[str, Any]) -> dict[str, str]:
    """The environment a clone's continuation runs with."""
    out = dict(env)
    for key in ("FORKSCALE_TWIN_USER", "FORKSCALE_TWIN_PASSWORD", "FORKSCALE_TWIN_PASSWORD_FILE",
                "FORKSCALE_TWIN_RESUMED"):
        out.pop(key, None)
    out["FORKSCALE_TWIN_VM"] = str(clone["vm"])
    out["FORKSCALE_TWIN_VM_NAME"] = str(clone["name"])
    out["FORKSCALE_TWIN_TOKEN"] = str(clone["token"])
    base = env.get("FORKSCALE_ROOT_PER_CLONE")
    if base:
        name = str(clone["name"]).replace("/", "_").replace("\0", "_") or str(clone["vm"])
        dest = os.path.abspath(os.path.join(base, name))
        src = env.get("FORKSCALE_ROOT")
        if src and os.path.isdir(src) and not os.path.exists(dest):
            src = os.path.abspath(src)
            if os.path.commonpath([src, dest]) == src:
                raise RpcError(f"FORKSCALE_ROOT_PER_CLONE ({base}) must be outside FORKSCALE_ROOT ({src})")
            shutil.copytree(src, dest, symlinks=True)
        os.makedirs(dest, exist_ok=True)
        out["FORKSCALE_ROOT"] = dest
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _spawn(channel: Channel, env: Mapping[str, str], clone: dict[str, Any], cont: Continuation) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() != 0:
        return
    code = 0
    try:
        child_env = clone_env(env, clone)
        channel.token, channel.vm = child_env["FORKSCALE_TWIN_TOKEN"], child_env["FORKSCALE_TWIN_VM"]
        try:
            channel.call("POST", "/resumed")
        except RpcError as exc:
            print(f"vmware-rpctool-twin: clone {clone['name']}: {exc}", file=sys.stderr)
        cont.run(child_env)
    except BaseException as exc:  # the child must never fall back into the source's loop
        print(f"vmware-rpctool-twin: clone {clone.get('name')}: cannot continue: {exc}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def freeze(channel: Channel, env: Mapping[str, str]) -> int:
    """Freeze the VM and block; fork a continuation for each clone. Returns only in the source, on failure."""
    timeout = float(env.get("FORKSCALE_TWIN_FREEZE_TIMEOUT") or 0) or None
    retry = float(env.get("FORKSCALE_TWIN_RETRY") or 10)
    cont = Continuation(env)
    if cont.note:
        print(f"vmware-rpctool-twin: instantclone.freeze: {cont.note}", file=sys.stderr)
    answer = channel.call("POST", "/freeze")
    since, boot = int(answer["since"]), answer["boot"]
    start = time.monotonic()
    unreachable_since: float | None = None
    while True:
        _reap()
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if left is not None and left <= 0:
            print(f"vmware-rpctool-twin: instantclone.freeze: still frozen after {timeout:g} s "
                  "(FORKSCALE_TWIN_FREEZE_TIMEOUT)", file=sys.stderr)
            return 1
        wait = POLL_S if left is None else max(0.0, min(POLL_S, left))
        query = urllib.parse.urlencode({"since": since, "boot": repr(boot), "wait": f"{wait:.3f}"})
        try:
            poll = channel.call("GET", f"/clones?{query}", timeout=wait + 15)
        except RpcError as exc:
            if exc.status is not None:  # the twin answered: the source VM (or the twin) is gone
                print(f"vmware-rpctool-twin: instantclone.freeze: {exc}", file=sys.stderr)
                return 1
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > retry:
                print(f"vmware-rpctool-twin: instantclone.freeze: {exc}", file=sys.stderr)
                return 1
            time.sleep(min(1.0, max(wait, 0.05)))
            continue
        unreachable_since = None
        for clone in poll.get("clones", []):
            since = max(since, int(clone["seq"]))
            _spawn(channel, env, clone, cont)
        src = poll.get("source", {})
        if not src.get("alive") or src.get("power") != "poweredOn" or src.get("boot") != boot:
            print("vmware-rpctool-twin: instantclone.freeze: the source was powered off or reset; "
                  "the frozen state is lost", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
