"""The ledger: what a restarted controller trusts about every clone and source it made.

`records` (states, transitions, rows), `schema` (migrations), `store` (the SQLite ledger).
"""

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
from forkscale.ledger.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from forkscale.ledger.store import Ledger

__all__ = [
    "HOLDING_STATES", "KINDS", "LIVE_STATES", "MIGRATIONS", "MUTABLE_FIELDS", "SCHEMA_VERSION", "STATES",
    "CloneRecord", "Event", "IllegalTransition", "Ledger", "LedgerError", "PruneResult", "SourceRecord", "UnknownClone",
    "allowed_transition", "migrate", "schema_version",
]
