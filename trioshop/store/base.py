"""What the shop keeps beyond a process's life, and the interface every store implements."""

from __future__ import annotations

import abc
import enum
import logging
import math
from collections.abc import Collection, Mapping
from typing import ClassVar

import attrs
import trio

from trioshop.domain import CartLine, Order, Placement, ServiceOutcome, check_stock
from trioshop.logs import log_event
from trioshop.runtime import Ticket

logger = logging.getLogger("trioshop.store")


class FailureKind(enum.Enum):
    """What kind of failure a :class:`StoreError` is: what trying the operation again can do."""

    REFUSED = "refused"  # refused for what this operation held (a constraint, its data, a bug)
    UNAVAILABLE = "unavailable"  # the store is closed, unreachable or out of resources
    TRANSIENT = "transient"  # nothing was applied and another try can succeed (a deadlock
    # victim, a serialization failure, a link lost before the commit)
    LOCKED = "locked"  # gave up waiting for a lock (or for its statement) another holds
    OUTCOME_UNKNOWN = "outcome unknown"  # the change may have been applied


class StoreError(Exception):
    """The store could not carry out an operation (disk full, database locked, closed).

    Nothing the operation would have changed was changed; the caller may retry later.
    ``kind`` says what kind of failure it was, set where the cause was translated.
    """

    kind: FailureKind = FailureKind.REFUSED

    def __init__(self, *args: object, kind: FailureKind | None = None) -> None:
        super().__init__(*args)
        if kind is not None:
            self.kind = kind


class StoreClosed(StoreError):
    """The store is shut down; no more operations are accepted."""

    kind = FailureKind.UNAVAILABLE


class OutcomeUnknown(StoreError):
    """The store lost the database while committing: the change may or may not have
    happened. Retry with the same idempotency key; reloading shows which it was."""

    kind = FailureKind.OUTCOME_UNKNOWN


class OperationAbandoned(StoreError):
    """The caller gave up (its ticket was abandoned) before the operation started: nothing
    was changed, and nothing will be."""

    def __init__(self) -> None:
        super().__init__("the caller gave up before the change started; nothing was changed")


def claim(ticket: Ticket | None) -> None:
    """Take the caller's change on now; :class:`OperationAbandoned` if it has given up."""
    if ticket is not None and not ticket.claim():
        raise OperationAbandoned()


def unexpected(exc: Exception) -> StoreError:
    """What no store operation should raise (a bug): logged with its traceback, and answered
    to its caller as a :class:`StoreError`."""
    log_event(logger, "store operation failed", logging.ERROR, error=repr(exc), exc_info=exc)
    return StoreError(
        f"the store could not carry out the operation ({type(exc).__name__}: {exc}); "
        "nothing was changed"
    )


# How long an add's Idempotency-Key is remembered: a retry later than this adds again.
ADD_KEY_RETENTION_SECONDS = 24 * 3600
# How often an open store deletes the add keys past their retention (also done when it opens).
ADD_KEY_PRUNE_SECONDS = 3600.0


@attrs.frozen
class OutboxEntry:
    """An order waiting to be delivered to the services, in commit order (``seq``).

    ``trace_parent`` is the W3C ``traceparent`` of the checkout that placed the order (what
    links a service's handling of it to that trace): ``None`` if it was placed untraced, or
    before orders kept one.
    """

    seq: int
    order: Order
    trace_parent: str | None = None


@attrs.frozen
class StoredOrder:
    """An order as stored, with what each service has done with it so far."""

    order: Order
    services: Mapping[str, ServiceOutcome]


@attrs.frozen
class StoredCart:
    """A user's cart as stored: its lines and its version (0: never stored).

    Every change makes the version one higher, and it never goes back (a cleared or checked
    out cart keeps its row, empty): a write conditional on an old version can never match.
    """

    lines: tuple[CartLine, ...]
    version: int


# A cart never stored (what loading one answers for a user without a row).
NO_CART = StoredCart((), 0)


class CartConflict(Exception):
    """The stored cart is not at the version the writer expected: another writer changed it.

    Nothing was changed. ``current`` is the cart as stored now: reload it, re-apply the
    command, and write again conditional on its version.
    """

    def __init__(self, current: StoredCart) -> None:
        super().__init__(f"the stored cart is at version {current.version}")
        self.current = current


@attrs.frozen(kw_only=True)
class CartWrite:
    """One write of a user's cart, as every store applies it (see :meth:`Store.save_cart`).

    ``lines`` are stored if the cart is still at ``version``. With ``add_key``
    ``(key, answer)``, the add's idempotency key and its answer are stored with the cart; a
    key already stored (within the retention) makes the write a conflict. With
    ``stock_check`` ``(sku, quantity)``, the cart may hold that many of the SKU only if the
    stock on hand has them, read in the write's transaction.
    """

    user_id: str
    lines: tuple[CartLine, ...]
    version: int
    add_key: tuple[str, CartLine] | None = None
    stock_check: tuple[str, int] | None = None


def check_write_stock(write: CartWrite, stock: Mapping[str, int]) -> None:
    """``InsufficientStock`` if *write*'s stock check asks for more than *stock* holds (a SKU
    missing from it has none): an add is checked on the figure its transaction read."""
    if write.stock_check is not None:
        sku, quantity = write.stock_check
        check_stock(sku, quantity, stock.get(sku, 0))


def settle_write(write: CartWrite, current: StoredCart, *, key_used: bool = False) -> int:
    """The version *write* leaves the cart at, over the cart as stored (*current*).

    :class:`CartConflict` (with *current*) if the cart is no longer at the write's version
    or its add key was used already. An empty write over a cart never stored stores
    nothing: the version stays 0 (no row); any other write makes it one higher.
    """
    if key_used or current.version != write.version:
        raise CartConflict(current)
    if not write.lines and not write.version:
        return 0
    return write.version + 1


@attrs.frozen
class StoreStatistics:
    """Totals since the store opened: write transactions run and the operations in them
    (refused ones included: a batch's refusals go in its transaction)."""

    transactions: int
    operations: int


class Store(abc.ABC):
    """Carts, stock, orders and their outbox, and what each service did with each order.

    Every method is atomic: it happens whole or not at all. Refusals are the domain's errors
    (``InsufficientStock``, ``IdempotencyKeyReused``); a write conditional on a cart version
    that is no longer stored raises :class:`CartConflict`; trouble with the storage itself is
    a :class:`StoreError`. Memory use is bounded by what is live, never by what is stored.

    Exclusive stores (memory, SQLite) are written by this process only: a cart actor's copy
    is then the truth and reads need not ask the store. A shared store (PostgreSQL) is
    written by many nodes: it overrides :meth:`changed_elsewhere`, :meth:`wait_for_outbox`
    and the outbox attributes below, and reads check the stored version first.
    """

    # How many outbox entries a service takes at a look (see :meth:`pending`).
    outbox_batch: ClassVar[int] = 100
    # How often a service with no news looks at the outbox anyway: never on an exclusive
    # store, where only this process's checkouts (which ring the bus) queue orders.
    outbox_poll_seconds: ClassVar[float] = math.inf
    # How long entries handed out by :meth:`pending` stay this process's: for ever on an
    # exclusive store; on a shared one, a service must acknowledge them well within it.
    outbox_claim_seconds: float = math.inf

    # -- carts ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def load_cart(self, user_id: str) -> StoredCart:
        """The user's stored cart (no lines, version 0, if it was never stored)."""

    @abc.abstractmethod
    async def cart_version(self, user_id: str) -> int:
        """The stored version of the user's cart (0 if none): one cheap read."""

    @abc.abstractmethod
    async def has_cart(self, user_id: str) -> bool:
        """Whether the user has a stored cart with lines."""

    async def changed_elsewhere(self, user_id: str, version: int) -> bool:
        """Whether another writer stored the user's cart since *version*: one cheap read on a
        shared store; ``False`` at once, without I/O, on an exclusive one."""
        return False

    @abc.abstractmethod
    async def save_cart(self, write: CartWrite, *, ticket: Ticket | None = None) -> int:
        """Apply *write* atomically (:func:`check_write_stock`, then :func:`settle_write` on
        the stored cart); returns the cart's new version.

        Raises ``InsufficientStock`` or :class:`CartConflict` (nothing changed); the add key
        is stored with the cart (see :meth:`added_with_key`). With a *ticket*, the change is
        made only if the ticket can be claimed when it starts; else
        :class:`OperationAbandoned`, nothing changed.
        """

    @abc.abstractmethod
    async def added_with_key(self, user_id: str, key: str) -> CartLine | None:
        """The answer of the user's add made with *key* (within the retention), or ``None``."""

    # -- stock ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def stock_levels(self) -> dict[str, int]:
        """Stock on hand for every known SKU."""

    @abc.abstractmethod
    async def add_stock(self, initial: Mapping[str, int]) -> None:
        """Give SKUs the store has never seen their *initial* stock; known SKUs keep theirs."""

    # -- orders ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def checkout(
        self,
        order: Order,
        *,
        version: int,
        ticket: Ticket | None = None,
        trace_parent: str | None = None,
    ) -> Placement:
        """Store *order*, reserve its stock, empty the cart and queue it for the services.

        One transaction applying :func:`~trioshop.domain.replay` and
        :func:`~trioshop.domain.reserve_stock`: raises ``InsufficientStock`` (nothing
        changed) when a line asks for more than is in stock; with an idempotency key already
        used by the same user, returns that earlier order as a replay and changes nothing;
        used by another user, raises ``IdempotencyKeyReused``. The cart must still be at
        *version* (else :class:`CartConflict`). A *ticket* is claimed as in :meth:`save_cart`.
        *trace_parent* (the checkout's W3C ``traceparent``) is stored with the order and
        handed back with each of its :class:`OutboxEntry`; a replay keeps the first one's.
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

    # -- the outbox -----------------------------------------------------------------------

    @abc.abstractmethod
    async def register_service(self, service: str) -> None:
        """Queue the orders this node places from now on for *service* too.

        A service new to the store starts from the next order, not from a backlog of every
        order placed before; one known already (a restart) goes on from where it was.
        """

    @abc.abstractmethod
    async def unregister_service(self, service: str) -> None:
        """Queue no more orders for *service* (a reload removed it).

        What it had not handled is dropped on an exclusive store (memory, SQLite); on a
        shared one, nodes still running it go on handling what they queued. Registered
        again, it starts from the next order.
        """

    @abc.abstractmethod
    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        """Up to *limit* outbox entries *service* has not acknowledged yet, oldest first.

        On a shared store the entries are claimed for this process for a while, so that no
        other node hands them to its copy of the service meanwhile.
        """

    @abc.abstractmethod
    async def ack(self, service: str, entry: OutboxEntry, status: str) -> None:
        """Record that *service* handled *entry* with *status* (``dispatched``, ``sent``)."""

    async def wait_for_outbox(self) -> None:
        """Return when other processes may have queued orders; never, for exclusive stores."""
        await trio.sleep_forever()

    # -- the store itself -----------------------------------------------------------------

    @abc.abstractmethod
    async def keep_services(self, services: Collection[str]) -> list[str]:
        """Unregister every service this store queues orders for but *services* (a node
        started with a registry that no longer has them); the names unregistered, sorted."""

    @abc.abstractmethod
    async def prune_add_keys(self, retention: float = ADD_KEY_RETENTION_SECONDS) -> int:
        """Delete the add idempotency keys older than *retention* seconds; how many went."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return once the store answers a trivial query; :class:`StoreError` if it cannot."""

    @abc.abstractmethod
    def statistics(self) -> StoreStatistics:
        """Transactions and operations since the store opened."""
