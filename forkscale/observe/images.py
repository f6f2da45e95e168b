"""The image series of the fleet sample: live clones per image generation, the active and target
generation, and the open operation's steps per state -- read from the ledger."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from forkscale.ledger import LIVE_STATES, CloneRecord, Ledger
from forkscale.observe.fleet import ImageState


def image_states(ledger: Ledger, pools: Iterable[str], records: Iterable[CloneRecord]) -> list[ImageState]:
    """One `ImageState` per pool; `records`: the clone rows already read (live ones are counted)."""
    per: dict[str, Counter[str]] = {}
    for r in records:
        if r.state in LIVE_STATES:
            key = str(r.image_generation) if r.image_generation is not None else "unknown"
            per.setdefault(r.pool, Counter())[key] += 1
    out = []
    for pool in pools:
        generations = {}
        active, target = ledger.images.active(pool), ledger.images.target(pool)
        if active is not None:
            generations["active"] = active.generation
        if target is not None:
            generations["target"] = target.generation
        op = ledger.operations.open(pool)
        operation = None if op is None else (op.kind, ledger.operations.progress(op.id))
        out.append(ImageState(pool, dict(per.get(pool, Counter())), generations, operation))
    return out
