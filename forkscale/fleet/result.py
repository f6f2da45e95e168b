"""What one converge (or destroy) did: counts, fallbacks taken, errors — printed and returned as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    pool: str
    desired: int
    ready: int = 0
    created: int = 0
    destroyed: int = 0
    failed: int = 0
    adopted: int = 0
    rolled_back: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    sources: dict[str, list[str]] | None = None  # destroy_pool: {"removed": [...], "remaining": [...]}
    replicas: dict[str, list[str]] | None = None  # destroy_pool: replicas for linked clones, likewise
    skipped: dict[str, str] = field(default_factory=dict)  # rung -> why this vCenter cannot do it (said once)

    def ok(self) -> bool:
        return self.failed == 0 and self.ready == self.desired

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "desired": self.desired, "ready": self.ready, "created": self.created,
                "destroyed": self.destroyed, "failed": self.failed, "adopted": self.adopted,
                "rolled_back": self.rolled_back, "fallbacks": dict(self.fallbacks), "errors": self.errors[:20], "skipped_rungs": self.skipped,
                "seconds": round(self.seconds, 3), **({"sources": self.sources} if self.sources is not None else {}),
                **({"replicas": self.replicas} if self.replicas is not None else {})}
