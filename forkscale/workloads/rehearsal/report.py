"""A rehearsal's report: phases, step and check results with clipped output, text and JSON forms."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: bytes of each stream kept in the report: the first quarter and the last three quarters
#: (the end of an output is where the error usually is), with a marker for what was cut
OUTPUT_LIMIT = 8192
#: KB 67186: vSphere raises an alarm above this many redo-log levels; the hard limit is 255
CHAIN_ALARM = 100
#: how many trailing lines of a failed step's output the text report shows
TEXT_TAIL_LINES = 15

PASSED, FAILED, ERROR, INTERRUPTED = "passed", "failed", "error", "interrupted"
EXIT_CODES = {PASSED: 0, FAILED: 1, ERROR: 1, INTERRUPTED: 130}
REPORT_VERSION = 2


class HeadTail:
    """A stream's bytes as they arrive, keeping only what `clip` would keep (and the total count)."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def __call__(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit // 4 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        keep = self.limit - self.limit // 4
        if len(self.tail) > keep:
            del self.tail[: len(self.tail) - keep]

    def text(self) -> tuple[str, bool]:
        """(decoded text with a marker where bytes were cut, whether any were)."""
        if self.total <= self.limit:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace"), False
        cut = self.total - len(self.head) - len(self.tail)
        return (self.head.decode("utf-8", errors="replace") + f"\n[... {cut} bytes omitted ...]\n"
                + self.tail.decode("utf-8", errors="replace")), True


@dataclass
class StepResult:
    name: str
    status: str  # passed | failed | timeout | error | interrupted | skipped
    timeout_s: float
    exit_code: int | None = None
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False
    error: str | None = None

    def reason(self) -> str:
        if self.status == "failed":
            return f"exit status {self.exit_code}"
        if self.status == "timeout":
            return f"timed out after {self.timeout_s:g}s; {self.error or 'the command was killed'}"
        return self.error or self.status

    def take_output(self, out: HeadTail, err: HeadTail) -> None:
        self.stdout, cut_out = out.text()
        self.stderr, cut_err = err.text()
        self.stdout_bytes, self.stderr_bytes = out.total, err.total
        self.truncated = cut_out or cut_err


@dataclass
class Phase:
    name: str  # clone | wait | cleanup
    status: str = "skipped"  # ok | failed | interrupted | skipped
    duration_s: float = 0.0
    error: str | None = None


@dataclass
class Report:
    source: str
    clone_name: str
    network_mode: str
    port_group: str | None
    disconnect: bool
    transport: str  # guestops | ssh
    target: str  # how the guest is reached, for people: "root@host:22", "guest operations as root"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    duration_s: float = 0.0
    outcome: str = ERROR
    error: str | None = None
    source_moref: str | None = None
    source_host: str | None = None
    power_before: str | None = None
    power_after: str | None = None
    chains_before: dict[int, int] = field(default_factory=dict)
    chains_after: dict[int, int] = field(default_factory=dict)
    clone_moref: str | None = None
    clone_nics: list[dict[str, Any]] = field(default_factory=list)
    kept: bool = False
    destroyed: bool = False
    cleanup_error: str | None = None
    phases: dict[str, Phase] = field(default_factory=lambda: {n: Phase(n) for n in ("clone", "wait", "cleanup")})
    steps: list[StepResult] = field(default_factory=list)
    checks: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pool: str | None = None  # `rehearse --pool`: the pool whose new image this is
    snapshot: str | None = None
    write_error: str | None = None  # the JSON report file could not be written

    def settle(self) -> None:
        """The outcome from the results: passed only when every step and check passed."""
        if self.outcome in (ERROR, INTERRUPTED) and self.error is not None:
            return
        results = self.steps + self.checks
        self.outcome = PASSED if results and all(r.status == "passed" for r in results) else FAILED

    @property
    def ok(self) -> bool:
        return self.outcome == PASSED and self.cleanup_error is None and self.write_error is None

    @property
    def exit_code(self) -> int:
        if self.outcome == PASSED and not self.ok:
            return 1  # every check passed but a clone was left behind (or no report): not a clean run
        return EXIT_CODES[self.outcome]

    @property
    def push_safe(self) -> bool | None:
        """For a pool's new image: whether pushing it is safe (every check passed); None otherwise."""
        return None if self.pool is None else self.outcome == PASSED

    @staticmethod
    def depth(chains: dict[int, int]) -> int | None:
        return max(chains.values()) if chains else None

    def failures(self) -> list[dict[str, str]]:
        out = [{"phase": p.name, "name": p.name, "status": p.status, "reason": p.error or p.status}
               for p in self.phases.values() if p.status == "failed"]
        for phase, results in (("step", self.steps), ("check", self.checks)):
            out += [{"phase": phase, "name": r.name, "status": r.status, "reason": r.reason()}
                    for r in results if r.status not in ("passed", "skipped")]
        return out

    def as_dict(self) -> dict[str, Any]:
        keys = sorted(set(self.chains_before) | set(self.chains_after))
        return {
            "kind": "forkscale.rehearsal",
            "version": REPORT_VERSION,
            "outcome": self.outcome,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "error": self.error,
            "report_error": self.write_error,
            "image": None if self.pool is None else {"pool": self.pool, "snapshot": self.snapshot,
                                                     "push_safe": self.push_safe},
            "failures": self.failures(),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
            "duration_s": round(self.duration_s, 3),
            "source": {
                "name": self.source, "moref": self.source_moref, "host": self.source_host,
                "power_before": self.power_before, "power_after": self.power_after,
                "chain_depth_before": self.depth(self.chains_before),
                "chain_depth_after": self.depth(self.chains_after),
                "disks": [{"key": k, "chain_before": self.chains_before.get(k), "chain_after": self.chains_after.get(k)}
                          for k in keys],
            },
            "clone": {
                "name": self.clone_name, "moref": self.clone_moref,
                "network": {"mode": self.network_mode, "port_group": self.port_group, "disconnect": self.disconnect},
                "nics": self.clone_nics, "kept": self.kept, "destroyed": self.destroyed,
                "cleanup_error": self.cleanup_error,
            },
            "transport": {"kind": self.transport, "target": self.target},
            "phases": [_rounded(asdict(p)) for p in self.phases.values()],
            "steps": [_rounded(asdict(s)) for s in self.steps],
            "checks": [_rounded(asdict(s)) for s in self.checks],
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def render_text(self) -> str:
        verdict = {PASSED: "PASSED", FAILED: "FAILED", ERROR: "ERROR", INTERRUPTED: "INTERRUPTED"}[self.outcome]
        if self.outcome == PASSED and self.cleanup_error:
            verdict = "PASSED, but the clone was not cleaned up"
        what = f"pool {self.pool}'s snapshot {self.snapshot!r} of {self.source}" if self.pool else self.source
        lines = [f"rehearsal of {what} as {self.clone_name}: {verdict} in {self.duration_s:.1f}s"]
        if self.error:
            lines.append(f"  error: {self.error}")
        lines += self._text_vms()
        lines.append("  phases   " + ", ".join(
            f"{p.name} {p.status}" + (f" {p.duration_s:.2f}s" if p.status != "skipped" else "")
            for p in self.phases.values()))
        lines += self._text_results()
        failures = self.failures()
        if failures:
            lines.append("  failed: " + "; ".join(f"{f['phase']} {f['name']!r}: {f['reason']}" for f in failures))
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.write_error:
            lines.append(f"  error: {self.write_error}")
        if self.pool is not None:
            lines.append(f"  push of snapshot {self.snapshot!r} to pool {self.pool}: "
                         + ("SAFE (every check passed)" if self.push_safe else "NOT SAFE (see above)"))
        return "\n".join(lines)

    def _text_vms(self) -> list[str]:
        nics = ", ".join(f"{n['label']} -> {n['port_group'] or '?'} ({'connected' if n['connected'] else 'disconnected'})"
                         for n in self.clone_nics) or "-"
        if self.kept and self.clone_moref:
            fate = "KEPT (--keep): destroy it when done"
        elif self.destroyed:
            fate = "destroyed"
        elif self.clone_moref:
            fate = f"NOT destroyed: {self.cleanup_error}"
        else:
            fate = "not created"
        before, after = self.depth(self.chains_before), self.depth(self.chains_after)
        return [f"  clone    {self.clone_moref or '-'} [{self.network_mode}] NICs: {nics}; {fate}",
                f"  guest    {self.transport} {self.target}",
                f"  source   {self.source_moref or '-'} power {self.power_before or '?'} -> {self.power_after or '?'}; "
                f"delta chain depth {before if before is not None else '?'} -> "
                f"{after if after is not None else '?'} (layoutEx)"]

    def _text_results(self) -> list[str]:
        lines: list[str] = []
        width = max((len(r.name) for r in self.steps + self.checks), default=0)
        for title, results in (("steps", self.steps), ("checks", self.checks)):
            if not results:
                continue
            lines.append(f"  {title}")
            for r in results:
                mark = {"passed": "ok", "failed": "FAILED", "timeout": "TIMEOUT", "error": "ERROR",
                        "interrupted": "STOPPED", "skipped": "skipped"}[r.status]
                code = f"exit {r.exit_code}" if r.exit_code is not None else "-"
                timing = f"{r.duration_s:6.2f}s" if r.status != "skipped" else ""
                extra = f"  ({r.reason()})" if r.status in ("timeout", "error", "interrupted") else ""
                lines.append(f"    {mark:<8} {r.name:<{width}}  {code:<8} {timing}{extra}".rstrip())
                if r.status in ("failed", "timeout"):
                    for stream in (r.stdout, r.stderr):
                        tail = stream.rstrip("\n").splitlines()[-TEXT_TAIL_LINES:]
                        lines += [f"             | {t}" for t in tail]
        return lines

    def write(self, path: Path) -> None:
        """Write the JSON report atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json() + "\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def clip(data: bytes, limit: int = OUTPUT_LIMIT) -> tuple[str, bool]:
    """Decode `data` (UTF-8, invalid bytes replaced), keeping head and tail within `limit` bytes."""
    if len(data) <= limit:
        return data.decode("utf-8", errors="replace"), False
    head, tail = limit // 4, limit - limit // 4
    cut = len(data) - head - tail
    text = (data[:head].decode("utf-8", errors="replace") + f"\n[... {cut} bytes omitted ...]\n"
            + data[-tail:].decode("utf-8", errors="replace"))
    return text, True


