"""What the shop keeps beyond a process's life, and the interface every store implements."""

from __future__ import annotations

import abc
from collections.abc import Mapping

import attrs

from trioshop.domain import CartLine, Order, Placement, ServiceOutcome
from trioshop.runtime import Ticket


class StoreError(Exception):
    """The store could not carry out an operation (disk full, database locked, closed).

    Nothing the operation would have changed was changed; the caller may retry later.
    """


class StoreClosed(StoreError):
    """The store is shut down; no more operations are accepted."""


class OperationAbandoned(StoreError):
    """The caller gave up (its ticket was abandoned) before the operation started: nothing
    was changed, and nothing will be."""

    def __init__(self) -> None:
        super().__init__("the caller gave up before the change started; nothing was changed")


# How long an add's Idempotency-Key is remembered: a retry later than this adds again.
ADD_KEY_RETENTION_SECONDS = 24 * 3600


@attrs.frozen
class OutboxEntry:
    """An order waiting to be delivered to the services, in commit order (``seq``)."""

    seq: int
    order: Order


@attrs.frozen
class StoredOrder:
    """An order as stored, with what each service has done with it so far."""

    order: Order
    services: Mapping[str, ServiceOutcome]


@attrs.frozen
class StoreStatistics:
    """Totals since the store opened: transactions committed and the operations in them."""

    transactions: int
    operations: int


@attrs.define
class Store(abc.ABC):
    """Carts, live stock, orders and their outbox, and each service's delivery cursor.

    Every method is atomic: it happens whole or not at all. Two views are kept in memory
    because every request needs them and only this process writes: ``stock`` (live stock per
    SKU) and ``cart_owners`` (users with a stored, non-empty cart). Both are updated only
    after the change they mirror is committed. Refusals are the domain's errors
    (``InsufficientStock``, ``IdempotencyKeyReused``); trouble with the storage itself is a
    :class:`StoreError`.
    """

    stock: dict[str, int] = attrs.field(factory=dict, init=False)
    cart_owners: set[str] = attrs.field(factory=set, init=False)

    @abc.abstractmethod
    async def load_cart(self, user_id: str) -> tuple[CartLine, ...]:
        """The user's stored cart lines, in the order first added (empty if none)."""

    @abc.abstractmethod
    async def save_cart(
        self,
        user_id: str,
        lines: tuple[CartLine, ...],
        *,
        ticket: Ticket | None = None,
        add_key: tuple[str, CartLine] | None = None,
    ) -> None:
        """Replace the user's stored cart with *lines* (none: the cart is deleted).

        With *add_key* ``(key, answer)``, the add's idempotency key and its answer are stored
        in the same transaction (see :meth:`added_with_key`). With a *ticket*, the change is
        made only if the ticket can be claimed when it starts; else
        :class:`OperationAbandoned`, nothing changed.
        """

    @abc.abstractmethod
    async def added_with_key(self, user_id: str, key: str) -> CartLine | None:
        """The answer of the user's add made with *key* (within the retention), or ``None``."""

    @abc.abstractmethod
    async def checkout(self, order: Order, *, ticket: Ticket | None = None) -> Placement:
        """Store *order*, reserve its stock, delete the cart and queue it for the services.

        One transaction applying :func:`~trioshop.domain.replay` and
        :func:`~trioshop.domain.reserve_stock`: raises ``InsufficientStock`` (nothing
        changed) when a line asks for more than is in stock; with an idempotency key already
        used by the same user, returns that earlier order as a replay and changes nothing;
        used by another user, raises ``IdempotencyKeyReused``. A *ticket* is claimed as in
        :meth:`save_cart`.
        """

    @abc.abstractmethod
    async def order(self, order_id: str) -> StoredOrder | None:
        """The order with *order_id*, or ``None``."""

    @abc.abstractmethod
    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        """The user's orders, newest first."""

    @abc.abstractmethod
    async def order_by_key(self, idempotency_key: str) -> Order | None:
        """The order placed with *idempotency_key*, or ``None``."""

    @abc.abstractmethod
    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        """Up to *limit* outbox entries *service* has not acknowledged yet, oldest first."""

    @abc.abstractmethod
    async def ack(self, service: str, seq: int, order_id: str, status: str) -> None:
        """Record that *service* handled entry *seq* (order *order_id*) with *status*."""

    @abc.abstractmethod
    async def add_stock(self, initial: Mapping[str, int]) -> None:
        """Give SKUs the store has never seen their *initial* stock; known SKUs keep theirs."""

    @abc.abstractmethod
    def statistics(self) -> StoreStatistics:
        """Transactions and operations since the store opened."""
