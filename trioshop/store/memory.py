"""The in-memory store (``--memory``): the store contract in dictionaries, kept for nothing.

It applies the same domain rules as the other stores; every method completes without a
checkpoint, which makes each one atomic under Trio. Cart writes go behind the stores' one
:class:`~trioshop.store.batch.Batcher`, inline: a loop over the pure :meth:`MemoryStore._apply`.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import attrs
import outcome

from trioshop.domain import (
    CartLine,
    DomainError,
    Order,
    Placement,
    ServiceOutcome,
    replay,
    reserve_stock,
)
from trioshop.runtime import Ticket
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    NO_CART,
    CartConflict,
    CartWrite,
    OutboxEntry,
    Store,
    StoredCart,
    StoredOrder,
    StoreStatistics,
    check_write_stock,
    claim,
    settle_write,
)
from trioshop.store.batch import Batcher, Outcome


@attrs.define
class MemoryStore(Store):
    """Dictionaries instead of tables; every operation counts as a transaction of its own."""

    _carts: dict[str, StoredCart] = attrs.field(factory=dict, init=False)
    _stock: dict[str, int] = attrs.field(factory=dict, init=False)
    _orders: dict[str, Order] = attrs.field(factory=dict, init=False)
    _by_key: dict[str, Order] = attrs.field(factory=dict, init=False)
    _outbox: list[OutboxEntry] = attrs.field(factory=list, init=False)
    _cursors: dict[str, int] = attrs.field(factory=dict, init=False)
    _outcomes: dict[str, dict[str, ServiceOutcome]] = attrs.field(factory=dict, init=False)
    _writes: int = attrs.field(default=0, init=False)
    # (user_id, key) -> (answer, when), oldest first: pruned as new keys arrive.
    _add_keys: dict[tuple[str, str], tuple[CartLine, float]] = attrs.field(
        factory=dict, init=False
    )
    _cart_writes: Batcher[CartWrite] = attrs.field(init=False, repr=False)

    @_cart_writes.default
    def _cart_writer(self) -> Batcher[CartWrite]:
        return Batcher(self._apply_all, inline=True, kind="memory", operation="cart writes")

    # -- carts ----------------------------------------------------------------------------

    async def load_cart(self, user_id: str) -> StoredCart:
        return self._carts.get(user_id, NO_CART)

    async def cart_version(self, user_id: str) -> int:
        return self._carts.get(user_id, NO_CART).version

    async def has_cart(self, user_id: str) -> bool:
        return bool(self._carts.get(user_id, NO_CART).lines)

    def _apply(self, write: CartWrite) -> int:
        """Apply one write to the dictionaries, whole or not at all (no checkpoint)."""
        check_write_stock(write, self._stock)
        user_id = write.user_id
        key = None if write.add_key is None else write.add_key[0]
        key_used = key is not None and self._key_answer(user_id, key) is not None
        version = settle_write(write, self._stored_cart(user_id), key_used=key_used)
        self._put(write, version)
        if write.add_key is not None:
            self._prune(ADD_KEY_RETENTION_SECONDS)
            self._add_keys[user_id, write.add_key[0]] = (write.add_key[1], time.time())
        return version

    def _stored_cart(self, user_id: str) -> StoredCart:
        return self._carts.get(user_id, NO_CART)

    def _put(self, write: CartWrite, version: int) -> None:
        """Store *write*'s lines at *version* (what :func:`settle_write` answered), if the
        version moved: a write that changed nothing stores nothing."""
        if version != write.version:  # an emptied cart keeps its row
            self._carts[write.user_id] = StoredCart(write.lines, version)

    async def _apply_all(self, writes: list[CartWrite]) -> list[Outcome]:
        """Each of *writes* in turn, a refusal its own outcome (no checkpoint: atomic)."""
        outcomes: list[Outcome] = []
        for write in writes:
            self._writes += 1
            try:
                outcomes.append(outcome.Value(self._apply(write)))
            except (DomainError, CartConflict) as refusal:
                outcomes.append(outcome.Error(refusal))
        return outcomes

    async def save_cart(self, write: CartWrite, *, ticket: Ticket | None = None) -> int:
        return int(await self._cart_writes.submit(write, ticket))

    def _prune(self, retention: float) -> int:
        now, pruned = time.time(), 0
        while self._add_keys:  # oldest first: stop at the first key still kept
            oldest = next(iter(self._add_keys))
            if now - self._add_keys[oldest][1] < retention:
                break
            del self._add_keys[oldest]
            pruned += 1
        return pruned

    async def prune_add_keys(self, retention: float = ADD_KEY_RETENTION_SECONDS) -> int:
        return self._prune(retention)

    def _key_answer(self, user_id: str, key: str) -> CartLine | None:
        found = self._add_keys.get((user_id, key))
        if found is None or time.time() - found[1] >= ADD_KEY_RETENTION_SECONDS:
            return None
        return found[0]

    async def added_with_key(self, user_id: str, key: str) -> CartLine | None:
        return self._key_answer(user_id, key)

    # -- stock ----------------------------------------------------------------------------

    async def stock_levels(self) -> dict[str, int]:
        return dict(self._stock)

    async def add_stock(self, initial: Mapping[str, int]) -> None:
        self._writes += 1
        for sku, stock in initial.items():
            self._stock.setdefault(sku, stock)

    # -- orders ---------------------------------------------------------------------------

    async def checkout(
        self,
        order: Order,
        *,
        version: int,
        ticket: Ticket | None = None,
        trace_parent: str | None = None,
    ) -> Placement:
        claim(ticket)
        self._writes += 1
        key = order.idempotency_key
        if key is not None:
            earlier = replay(self._by_key.get(key), order.user_id)
            if earlier is not None:
                return Placement(earlier, replayed=True)
        emptied = CartWrite(user_id=order.user_id, lines=(), version=version)
        settled = settle_write(emptied, self._stored_cart(order.user_id))
        self._stock.update(reserve_stock(order.lines, self._stock))  # refused: nothing changed
        self._put(emptied, settled)
        self._orders[order.order_id] = order
        if key is not None:
            self._by_key[key] = order
        self._outbox.append(OutboxEntry(len(self._outbox) + 1, order, trace_parent))
        return Placement(order)

    def _stored(self, order: Order) -> StoredOrder:
        return StoredOrder(order, dict(self._outcomes.get(order.order_id, {})))

    async def order(self, order_id: str) -> StoredOrder | None:
        order = self._orders.get(order_id)
        return None if order is None else self._stored(order)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        mine = [o for o in self._orders.values() if o.user_id == user_id]
        return [self._stored(o) for o in reversed(mine)]

    async def order_by_key(self, idempotency_key: str) -> Order | None:
        return self._by_key.get(idempotency_key)

    # -- the outbox -----------------------------------------------------------------------

    async def register_service(self, service: str) -> None:
        self._cursors.setdefault(service, len(self._outbox))  # new: from the next order

    async def unregister_service(self, service: str) -> None:
        self._cursors.pop(service, None)

    async def keep_services(self, services: Collection[str]) -> list[str]:
        gone = sorted(set(self._cursors) - set(services))
        for service in gone:
            del self._cursors[service]
        return gone

    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        cursor = self._cursors.get(service, 0)
        return self._outbox[cursor : cursor + limit]  # seq n sits at index n - 1

    async def ack(self, service: str, entry: OutboxEntry, status: str) -> None:
        self._writes += 1
        self._cursors[service] = max(self._cursors.get(service, 0), entry.seq)
        outcome = ServiceOutcome(status, time.time())
        self._outcomes.setdefault(entry.order.order_id, {})[service] = outcome

    async def ping(self) -> None:
        return None

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._writes, self._writes)
