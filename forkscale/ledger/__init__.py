"""The ledger: what a restarted controller trusts about every clone and source it made.

`records` (states, transitions, rows), `schema` (migrations, for both backends), `store` (the
`Ledger`), `backend` (what a database must offer) with `sqlite` (embedded default) and `postgres`
(several controllers on one ledger), `lease` (who may act: leases with fencing tokens); the day-2
tables: `images` (a pool's image generations), `operations` (long operations as persisted plans),
`reservations` (identities held for a clone being replaced), `userdisks` (users' persistent disks).
"""

from forkscale.ledger.backend import LedgerUnavailable
from forkscale.ledger.images import IMAGE_STATES, ImageRecord
from forkscale.ledger.lease import (
    LEDGER_SCOPE,
    Holder,
    Lease,
    LeaseHeld,
    LeaseLost,
    Leases,
    pool_scope,
)
from forkscale.ledger.operations import (
    OP_STATES,
    OPEN_STATES,
    STEP_STATES,
    Operation,
    OperationBusy,
    PlannedStep,
    Step,
)
from forkscale.ledger.postgres import is_postgres_url
from forkscale.ledger.records import (
    HOLDING_STATES,
    KINDS,
    LIVE_STATES,
    MUTABLE_FIELDS,
    REPLICA_STATES,
    STATES,
    USABLE_REPLICA_STATES,
    CloneRecord,
    Event,
    IllegalTransition,
    LedgerError,
    ReplicaRecord,
    SourceRecord,
    UnknownClone,
    allowed_transition,
)
from forkscale.ledger.reservations import Reservation
from forkscale.ledger.retention import PruneResult
from forkscale.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from forkscale.ledger.sqlite import migrate, schema_version
from forkscale.ledger.store import Ledger, ReservationTaken
from forkscale.ledger.userdisks import UserDisk

__all__ = [
    "LEDGER_SCOPE", "Holder", "Lease", "LeaseHeld", "LeaseLost", "Leases", "pool_scope",
    "HOLDING_STATES", "KINDS", "LIVE_STATES", "MIGRATIONS", "MUTABLE_FIELDS", "REPLICA_STATES", "SCHEMA_VERSION",
    "STATES", "USABLE_REPLICA_STATES",
    "CloneRecord", "Event", "IllegalTransition", "Ledger", "LedgerError", "LedgerUnavailable", "PruneResult",
    "ReplicaRecord", "SourceRecord", "UnknownClone", "allowed_transition", "is_postgres_url", "migrate",
    "schema_version",
    "IMAGE_STATES", "OP_STATES", "OPEN_STATES", "STEP_STATES", "ImageRecord", "Operation", "OperationBusy",
    "PlannedStep", "Reservation", "ReservationTaken", "Step", "UserDisk",
]
