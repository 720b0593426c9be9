"""The in-memory store (``--memory``): same behaviour as SQLite, nothing survives the process."""

from __future__ import annotations

import time
from collections.abc import Iterable

import attrs

from trioshop.registry import Product
from trioshop.shop.model import (
    CartLine,
    IdempotencyKeyReused,
    InsufficientStock,
    Order,
    ServiceStatus,
)
from trioshop.store.base import OutboxEntry, Store, StoredOrder


@attrs.define
class MemoryStore(Store):
    """Dictionaries instead of tables; every method completes without a checkpoint."""

    _carts: dict[str, tuple[CartLine, ...]] = attrs.field(factory=dict, init=False)
    _orders: dict[str, Order] = attrs.field(factory=dict, init=False)
    _by_key: dict[str, Order] = attrs.field(factory=dict, init=False)
    _outbox: list[OutboxEntry] = attrs.field(factory=list, init=False)
    _cursors: dict[str, int] = attrs.field(factory=dict, init=False)
    _statuses: dict[str, dict[str, ServiceStatus]] = attrs.field(factory=dict, init=False)

    async def load_cart(self, user_id: str) -> tuple[CartLine, ...]:
        return self._carts.get(user_id, ())

    async def save_cart(self, user_id: str, lines: tuple[CartLine, ...]) -> None:
        if lines:
            self._carts[user_id] = lines
            self.cart_owners.add(user_id)
        else:
            self._carts.pop(user_id, None)
            self.cart_owners.discard(user_id)

    async def checkout(self, order: Order) -> Order:
        if order.idempotency_key is not None:
            earlier = self._by_key.get(order.idempotency_key)
            if earlier is not None:
                if earlier.user_id != order.user_id:
                    raise IdempotencyKeyReused()
                return earlier
        for line in order.lines:
            available = self.stock.get(line.sku, 0)
            if line.quantity > available:
                raise InsufficientStock(line.sku, line.quantity, available)
        for line in order.lines:
            self.stock[line.sku] -= line.quantity
        self._orders[order.order_id] = order
        if order.idempotency_key is not None:
            self._by_key[order.idempotency_key] = order
        self._outbox.append(OutboxEntry(len(self._outbox) + 1, order))
        await self.save_cart(order.user_id, ())
        return order

    def _stored(self, order: Order) -> StoredOrder:
        return StoredOrder(order, dict(self._statuses.get(order.order_id, {})))

    async def order(self, order_id: str) -> StoredOrder | None:
        order = self._orders.get(order_id)
        return None if order is None else self._stored(order)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        mine = [o for o in self._orders.values() if o.user_id == user_id]
        return [self._stored(o) for o in reversed(mine)]

    async def order_by_key(self, idempotency_key: str) -> Order | None:
        return self._by_key.get(idempotency_key)

    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        cursor = self._cursors.get(service, 0)
        return self._outbox[cursor : cursor + limit]  # seq n sits at index n - 1

    async def ack(self, service: str, seq: int, order_id: str, status: str) -> None:
        self._cursors[service] = max(self._cursors.get(service, 0), seq)
        self._statuses.setdefault(order_id, {})[service] = ServiceStatus(status, time.time())

    async def add_products(self, products: Iterable[Product]) -> None:
        for product in products:
            self.stock.setdefault(product.sku, product.stock)
