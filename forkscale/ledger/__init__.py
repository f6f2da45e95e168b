"""The ledger: what a restarted controller trusts about every clone and source it made.

`records` (states, transitions, rows), `schema` (migrations, for both backends), `store` (the
`Ledger`), `backend` (what a database must offer) with `sqlite` (embedded default) and `postgres`
(several controllers on one ledger), `lease` (who may act: leases with fencing tokens).
"""

from forkscale.ledger.backend import LedgerUnavailable
from forkscale.ledger.lease import (
    LEDGER_SCOPE,
    Holder,
    Lease,
    LeaseHeld,
    LeaseLost,
    Leases,
    pool_scope,
)
from forkscale.ledger.postgres import is_postgres_url
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
from forkscale.ledger.retention import PruneResult
from forkscale.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from forkscale.ledger.sqlite import migrate, schema_version
from forkscale.ledger.store import Ledger

__all__ = [
    "LEDGER_SCOPE", "Holder", "Lease", "LeaseHeld", "LeaseLost", "Leases", "pool_scope",
    "HOLDING_STATES", "KINDS", "LIVE_STATES", "MIGRATIONS", "MUTABLE_FIELDS", "SCHEMA_VERSION", "STATES",
    "CloneRecord", "Event", "IllegalTransition", "Ledger", "LedgerError", "LedgerUnavailable", "PruneResult",
    "SourceRecord", "UnknownClone", "allowed_transition", "is_postgres_url", "migrate", "schema_version",
]
