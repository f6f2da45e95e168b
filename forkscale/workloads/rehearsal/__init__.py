"""DevTest live-clone upgrade rehearsals: `run` (the flow) and `report` (what it tells)."""

from forkscale.workloads.rehearsal.report import OUTPUT_LIMIT, Report, clip
from forkscale.workloads.rehearsal.run import TAG_REHEARSAL, Rehearsal, RehearsalFailed

__all__ = ["OUTPUT_LIMIT", "TAG_REHEARSAL", "Rehearsal", "RehearsalFailed", "Report", "clip"]
