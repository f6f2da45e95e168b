"""Identity allocation in O(1) per clone: counters and free lists instead of scans over live rows.

A *scope* is one sequence of values: a pool's name indexes under one name pattern
(`name:<pool>:<pattern>`), or the addresses of one range on one port group
(`ip:<port group>:<first>-<last>`, as integers). Per scope the ledger keeps the next value never
handed out (`identity_next`) and the values handed out and given back since (`identity_free`);
which values each clone holds is in `identity_held`, so entering `gone` gives them back.
Taking a value is the smallest free one, else the next: the same lowest-free answer the old
scan gave, found through two index lookups. Each candidate is still checked against the live
rows through the partial unique indexes (another pool's pattern, a row from before this table
existed), so a counter can never hand out what is taken; only a candidate found taken costs a
further lookup.

A scope seen for the first time (a new pool, a new pattern, a ledger from before these tables)
is set up once from the live rows: O(live rows) once, then O(1) per clone.

MACs stay random (two controllers with separate ledgers rarely collide); each candidate is
looked up in the live-MAC index instead of reading every live MAC.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

from forkscale.core import identity
from forkscale.core.identity import ExhaustedError, NetworkAlloc

#: Candidates found taken in a row before giving up on the counter and scanning (a pattern that
#: renders the same name for many indexes, or a scope shared with rows the counter never saw).
MAX_TAKEN_IN_A_ROW = 64


class Tx(Protocol):
    """The statements of one open write transaction."""

    def one(self, sql: str, params: Sequence[object] = ()) -> Any: ...

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Any]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int: ...


def name_scope(pool: str, pattern: str) -> str:
    return f"name:{pool}:{pattern}"


def ip_scope(port_group: str, net: NetworkAlloc) -> str:
    return f"ip:{port_group}:{int(net.range[0])}-{int(net.range[1])}"


def allocate_name(tx: Tx, pool: str, pattern: str) -> tuple[int, str, str]:
    """(index, name, scope): the lowest free index of `pattern` whose name no live clone holds."""
    scope = name_scope(pool, pattern)
    for _ in range(MAX_TAKEN_IN_A_ROW):
        index = _take(tx, scope, lambda: _name_start(tx, pool, pattern, scope))
        name = identity.render_name(pattern, index, pool=pool)
        if not _live(tx, "SELECT 1 FROM clones WHERE name = ? AND state <> 'gone' LIMIT 1", (name,)):
            return index, name, scope
    names = {r[0] for r in tx.rows("SELECT name FROM clones WHERE state <> 'gone'")}
    index, name = identity.next_name(pattern, names, pool=pool)  # raises ExhaustedError when none is left
    tx.run("DELETE FROM identity_free WHERE scope = ? AND value = ?", (scope, index))
    return index, name, scope


def allocate_ip(tx: Tx, net: NetworkAlloc, port_group: str) -> tuple[str, int, str]:
    """(address, its integer, scope): the lowest free address of `net`'s range on `port_group`."""
    scope = ip_scope(port_group, net)
    first, last = int(net.range[0]), int(net.range[1])
    skip = identity.reserved(net)
    taken_in_a_row = 0
    while True:
        value = _take(tx, scope, lambda: _ip_start(tx, net, port_group))
        if value > last:  # the transaction rolls the counter back with this error
            raise ExhaustedError(f"no free address in {net.range_text()} ({net.cidr}): all {net.capacity()} "
                                 "assignable addresses are in use")
        if value < first or value in skip:
            continue
        address = socket.inet_ntoa(value.to_bytes(4, "big"))
        if not _live(tx, "SELECT 1 FROM clones WHERE port_group = ? AND ip = ? AND state <> 'gone' LIMIT 1",
                     (port_group, address)):
            return address, value, scope
        taken_in_a_row += 1
        if taken_in_a_row >= MAX_TAKEN_IN_A_ROW:
            used = [r[0] for r in tx.rows("SELECT ip FROM clones WHERE port_group = ? AND state <> 'gone'",
                                          (port_group,))]
            address = str(identity.next_ip(net, used))
            value = _ip_int(address)
            tx.run("DELETE FROM identity_free WHERE scope = ? AND value = ?", (scope, value))
            return address, value, scope


def random_mac(tx: Tx, taken: Collection[str], rng: Any) -> str:
    """A random MAC that no live clone holds and that is not in `taken` (e.g. the inventory's)."""
    return identity.random_mac(identity.TakenMacs(_LiveMacs(tx), taken), rng)


def hold(tx: Tx, clone_id: int, held: Sequence[tuple[str, int]]) -> None:
    """Record which (scope, value) pairs a new clone holds."""
    for scope, value in held:
        tx.run("INSERT INTO identity_held (clone_id, scope, value) VALUES (?, ?, ?)", (clone_id, scope, value))


def release(tx: Tx, clone_id: int) -> None:
    """A clone is gone: its values are free again (for the next clone of their scope)."""
    for scope, value in tx.rows("SELECT scope, value FROM identity_held WHERE clone_id = ?", (clone_id,)):
        tx.run("INSERT INTO identity_free (scope, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (scope, value))
    tx.run("DELETE FROM identity_held WHERE clone_id = ?", (clone_id,))


def keep_for_replacement(tx: Tx, pool: str, name: str) -> bool:
    """Whether a clone entering `gone` keeps its values: its identity is reserved for its replacement
    (forkscale/ledger/reservations.py), which takes them over (`take_over`)."""
    return tx.one("SELECT 1 FROM reservations WHERE name = ? AND pool = ?", (name, pool)) is not None


def take_over(tx: Tx, pool: str, name: str, clone_id: int) -> None:
    """A replacement planned for a reserved identity holds the values its gone predecessor kept."""
    tx.run("UPDATE identity_held SET clone_id = ? WHERE clone_id IN "
           "(SELECT id FROM clones WHERE pool = ? AND name = ? AND state = 'gone' AND id <> ?)",
           (clone_id, pool, name, clone_id))


def release_reserved(tx: Tx, pool: str, name: str) -> None:
    """A reservation given up: the values its gone clone kept are free again."""
    for row in tx.rows("SELECT DISTINCT h.clone_id FROM identity_held h JOIN clones c ON c.id = h.clone_id "
                       "WHERE c.pool = ? AND c.name = ? AND c.state = 'gone'", (pool, name)):
        release(tx, int(row[0]))


class Either(Collection[str]):
    """`a` or `b` (asked only `in`): the inventory's MACs and the reserved ones, without a copy."""

    def __init__(self, a: Collection[str], b: Collection[str]) -> None:
        self.a, self.b = a, b

    def __contains__(self, item: object) -> bool:
        return item in self.a or item in self.b

    def __len__(self) -> int:
        return len(self.a) + len(self.b)

    def __iter__(self) -> Iterator[str]:
        yield from self.a
        yield from self.b


# -- inside ------------------------------------------------------------------------------------

def _take(tx: Tx, scope: str, start: Callable[[], tuple[int, list[int], list[tuple[int, int]]]]) -> int:
    row = tx.one("SELECT next_value FROM identity_next WHERE scope = ?", (scope,))
    if row is None:
        nxt, free, held = start()
        tx.run("INSERT INTO identity_next (scope, next_value) VALUES (?, ?)", (scope, nxt))
        for value in free:
            tx.run("INSERT INTO identity_free (scope, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (scope, value))
        for clone_id, value in held:
            tx.run("INSERT INTO identity_held (clone_id, scope, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                   (clone_id, scope, value))
        row = (nxt,)
    low = tx.one("SELECT MIN(value) FROM identity_free WHERE scope = ?", (scope,))
    if low is not None and low[0] is not None:
        tx.run("DELETE FROM identity_free WHERE scope = ? AND value = ?", (scope, low[0]))
        return int(low[0])
    tx.run("UPDATE identity_next SET next_value = next_value + 1 WHERE scope = ?", (scope,))
    return int(row[0])


def _live(tx: Tx, sql: str, params: Sequence[object]) -> bool:
    return tx.one(sql, params) is not None


#: The only reads of many rows: a scope's setup, once in its lifetime (and the fallbacks above).
SETUP_NAMES = "SELECT name, id, pool FROM clones WHERE state <> 'gone'"
SETUP_IPS = "SELECT id, ip FROM clones WHERE port_group = ? AND state <> 'gone'"


def _name_start(tx: Tx, pool: str, pattern: str, scope: str) -> tuple[int, list[int], list[tuple[int, int]]]:
    """A scope's first use: which of indexes 1..N+1 (N live names) are free, and which this pool holds."""
    live = {r[0]: (r[1], r[2]) for r in tx.rows(SETUP_NAMES)}
    top = identity.FIRST_INDEX + len(live)
    free, held = [], []
    for index in range(identity.FIRST_INDEX, top + 1):
        owner = live.get(identity.render_name(pattern, index, pool=pool))
        if owner is None:
            free.append(index)
        elif owner[1] == pool:
            held.append((int(owner[0]), index))
    return top + 1, free, held


def _ip_start(tx: Tx, net: NetworkAlloc, port_group: str) -> tuple[int, list[int], list[tuple[int, int]]]:
    """A scope's first use: the range's free addresses below the highest one held, and who holds which."""
    first, last = int(net.range[0]), int(net.range[1])
    held = [(int(r[0]), v) for r in tx.rows(SETUP_IPS, (port_group,)) if first <= (v := _ip_int(r[1])) <= last]
    taken = {v for _, v in held}
    nxt = max(taken) + 1 if taken else first
    return nxt, [v for v in range(first, nxt) if v not in taken], held


def _ip_int(address: str) -> int:
    return int.from_bytes(socket.inet_aton(address), "big")


class _LiveMacs(Collection[str]):
    """Live MACs as a collection that is only ever asked `in` (one indexed lookup per candidate)."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self._last: tuple[str, bool] = ("", False)

    def __contains__(self, mac: object) -> bool:
        """The ledger writes MACs in lower case: each candidate (asked in both cases) is one lookup."""
        if not isinstance(mac, str):
            return False
        mac = mac.lower()
        if self._last[0] != mac:
            self._last = (mac, _live(self.tx, "SELECT 1 FROM clones WHERE mac = ? AND state <> 'gone' LIMIT 1", (mac,)))
        return self._last[1]

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[str]:
        return iter(())
