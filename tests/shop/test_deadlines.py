"""A timeout tells the truth: a change abandoned at its deadline never happens, a started one
is waited for; and an add retried with its Idempotency-Key happens once."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioshop.config import Settings
from trioshop.domain import CartLine
from trioshop.registry import Registry
from trioshop.runtime import ActorContext, ActorTimeout, Ticket
from trioshop.shop.assembly import open_shop
from trioshop.shop.cart_actor import Cart, CartDeps, ViewCart
from trioshop.store import DATABASE_FILE

KEYBOARD = CartLine("KB-002", "Mechanical Keyboard", 14999, 1)


class GatedCart(Cart):
    """A cart whose views wait for a gate: whatever is queued behind one waits too."""

    gate = trio.Event()

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        if isinstance(message, ViewCart):
            await GatedCart.gate.wait()
        return await super().handle(ctx, message)


def gated(user_id: str, deps: CartDeps) -> Cart:
    return GatedCart(user_id, deps)


async def test_add_abandoned_at_its_deadline_never_happens(
    registry: Registry, autojump_clock: trio.testing.MockClock
) -> None:
    """An add still queued at its deadline answers 'nothing changed', and indeed never lands."""
    GatedCart.gate = trio.Event()
    async with open_shop(registry, Settings(), cart_factory=gated) as shop:
        await shop.carts.add_item("alice", KEYBOARD)

        async def stuck_view() -> None:
            with pytest.raises(ActorTimeout):
                await shop.carts.view("alice")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck_view)  # holds the cart at the gate
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorTimeout) as timed_out:
                await shop.carts.add_item("alice", KEYBOARD)
            assert timed_out.value.maybe_applied is False
        GatedCart.gate.set()  # the cart now reaches the late add: it must not apply it
        await trio.testing.wait_all_tasks_blocked()
        view = await shop.carts.view("alice")
        assert view is not None
        assert [line.quantity for line in view.lines] == [1]


def record_ticket_decisions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """From now on, in this test, each claim and abandon of a ticket and its answer, in order."""
    decisions: list[tuple[str, bool]] = []
    claim, abandon = Ticket.claim, Ticket.abandon

    def recorded_claim(ticket: Ticket) -> bool:
        decisions.append(("claim", answer := claim(ticket)))
        return answer

    def recorded_abandon(ticket: Ticket) -> bool:
        decisions.append(("abandon", answer := abandon(ticket)))
        return answer

    monkeypatch.setattr(Ticket, "claim", recorded_claim)
    monkeypatch.setattr(Ticket, "abandon", recorded_abandon)
    return decisions


async def test_add_started_before_its_deadline_is_waited_for(
    registry: Registry,
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An add whose transaction waits on a database lock past the deadline answers the truth."""
    # Trio's clock stands still (mock_clock: no autojump, which would also run out the settle
    # time while the writer's thread waits) and the test moves it past the deadline itself,
    # once the add is claimed: claim, deadline, lock released happen in that order whatever
    # the load. Only SQLite's busy wait (5 s, in the writer's thread) runs in real time, and
    # the lock is released a few scheduler passes after it starts.
    settings = Settings(data_dir=str(tmp_path), read_timeout=0.3, settle_timeout=10.0)
    async with open_shop(registry, settings) as shop:
        await shop.carts.add_item("alice", KEYBOARD)  # the cart and its database exist
        decisions = record_ticket_decisions(monkeypatch)
        added: list[CartLine] = []

        async def add() -> None:
            added.append(await shop.carts.add_item("alice", KEYBOARD))

        other = sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(add)
                try:
                    await trio.testing.wait_all_tasks_blocked()
                    # The writer took the add into its transaction: it waits for the lock.
                    assert decisions == [("claim", True)]
                    mock_clock.jump(settings.read_timeout)  # the request's deadline passes
                    await trio.testing.wait_all_tasks_blocked()
                    # Too late to abandon: the caller waits for the outcome (settle time).
                    assert decisions == [("claim", True), ("abandon", False)]
                    assert added == []  # and the write still waits for the lock
                finally:
                    # The writer gets the lock on its next try (also when a check failed):
                    # the add ends within SQLite's busy wait, however it ends.
                    other.execute("COMMIT")
        finally:
            other.close()
        assert added == [KEYBOARD]  # late, but the truth: it was applied
        view = await shop.carts.view("alice")
        assert view is not None and view.lines[0].quantity == 2


async def test_add_not_settled_in_time_says_it_may_have_happened(
    registry: Registry,
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the settle time too, the 504 says the add may have happened, and it may have."""
    # As above: the test moves Trio's clock once the add is claimed, so the order of claim,
    # deadline, settle deadline and lock release does not depend on the machine's load.
    settings = Settings(data_dir=str(tmp_path), read_timeout=0.2, settle_timeout=0.2)
    async with open_shop(registry, settings) as shop:
        await shop.carts.add_item("alice", KEYBOARD)
        decisions = record_ticket_decisions(monkeypatch)
        timeouts: list[ActorTimeout] = []

        async def add() -> None:
            with pytest.raises(ActorTimeout) as timed_out:
                await shop.carts.add_item("alice", KEYBOARD)
            timeouts.append(timed_out.value)

        other = sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(add)
                try:
                    await trio.testing.wait_all_tasks_blocked()
                    assert decisions == [("claim", True)]
                    mock_clock.jump(settings.read_timeout)  # the request's deadline
                    await trio.testing.wait_all_tasks_blocked()
                    mock_clock.jump(settings.settle_timeout)  # and the settle time after it
                    await trio.testing.wait_all_tasks_blocked()
                    assert len(timeouts) == 1 and timeouts[0].maybe_applied is True
                finally:
                    other.execute("COMMIT")
        finally:
            other.close()
        view = await shop.carts.view("alice")  # and it was applied, after the answer
        assert view is not None and view.lines[0].quantity == 2


async def test_add_retried_with_its_key_happens_once(registry: Registry, tmp_path: Path) -> None:
    """The same Idempotency-Key answers the first add again; another key adds again."""
    async with open_shop(registry, Settings(data_dir=str(tmp_path))) as shop:
        first = await shop.carts.add_item("alice", KEYBOARD, "key-1")
        again = await shop.carts.add_item("alice", KEYBOARD, "key-1")
        assert again == first
        await shop.carts.add_item("alice", KEYBOARD, "key-2")
        await shop.carts.add_item("bob", KEYBOARD, "key-1")  # keys belong to their user
        view = await shop.carts.view("alice")
        assert view is not None and view.lines[0].quantity == 2
    async with open_shop(registry, Settings(data_dir=str(tmp_path))) as shop:
        await shop.carts.add_item("alice", KEYBOARD, "key-1")  # remembered across restarts
        view = await shop.carts.view("alice")
        assert view is not None and view.lines[0].quantity == 2
