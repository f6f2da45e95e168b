"""DevTest live-clone upgrade rehearsals: `plan` (the spec against the inventory), `guest` (how steps
reach the clone: guest operations or SSH), `run` (the flow) and `report` (what it tells)."""

from forkscale.workloads.rehearsal.plan import TAG_REHEARSAL
from forkscale.workloads.rehearsal.report import OUTPUT_LIMIT, HeadTail, Report, clip
from forkscale.workloads.rehearsal.run import Rehearsal, RehearsalFailed

__all__ = ["OUTPUT_LIMIT", "TAG_REHEARSAL", "HeadTail", "Rehearsal", "RehearsalFailed", "Report", "clip"]
