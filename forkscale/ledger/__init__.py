"""The ledger: what a restarted controller trusts about every clone and source it made.

`records` (states, transitions, rows), `schema` (migrations), `store` (the SQLite ledger); the
day-2 tables: `images` (a pool's image generations), `operations` (long operations as persisted
plans), `reservations` (identities held for a clone being replaced), `userdisks` (users'
persistent disks).
"""

from forkscale.ledger.images import IMAGE_STATES, ImageRecord
from forkscale.ledger.operations import (
    OP_STATES,
    OPEN_STATES,
    STEP_STATES,
    Operation,
    OperationBusy,
    PlannedStep,
    Step,
)
from forkscale.ledger.records import (
    HOLDING_STATES,
    KINDS,
    LIVE_STATES,
    MUTABLE_FIELDS,
    STATES,
    CloneRecord,
    Event,
    IllegalTransition,
    LedgerError,
    SourceRecord,
    UnknownClone,
    allowed_transition,
)
from forkscale.ledger.reservations import Reservation
from forkscale.ledger.retention import PruneResult
from forkscale.ledger.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from forkscale.ledger.store import Ledger, ReservationTaken
from forkscale.ledger.userdisks import UserDisk

__all__ = [
    "HOLDING_STATES", "KINDS", "LIVE_STATES", "MIGRATIONS", "MUTABLE_FIELDS", "SCHEMA_VERSION", "STATES",
    "CloneRecord", "Event", "IllegalTransition", "Ledger", "LedgerError", "PruneResult", "SourceRecord", "UnknownClone",
    "allowed_transition", "migrate", "schema_version",
    "IMAGE_STATES", "OP_STATES", "OPEN_STATES", "STEP_STATES", "ImageRecord", "Operation", "OperationBusy",
    "PlannedStep", "Reservation", "ReservationTaken", "Step", "UserDisk",
]
