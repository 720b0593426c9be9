"""Tests of the host's per-kind measures: mailbox wait, handling, activation, passivation."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trioshop.runtime import ActorContext, HostStatistics, open_actor_host
from trioshop.runtime.measures import KindStatistics

WORK_SECONDS = 2.0  # how long (virtual) one message takes in Worker
START_SECONDS = 3.0  # how long (virtual) Worker's on_start takes


class Worker:
    """Takes WORK_SECONDS per message after an on_start of START_SECONDS; sets an event when
    it ends."""

    def __init__(self) -> None:
        self.ended = trio.Event()

    async def on_start(self, ctx: ActorContext) -> None:
        await trio.sleep(START_SECONDS)

    async def on_stop(self, ctx: ActorContext, reason: str) -> None:
        self.ended.set()

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        await trio.sleep(WORK_SECONDS)
        return message


class Echo:
    """Replies with the message."""

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        return message


def kind(statistics: HostStatistics, name: str) -> KindStatistics:
    """The statistics of the kind *name*."""
    (found,) = [k for k in statistics.kinds if k.kind == name]
    return found


async def test_mailbox_wait_is_measured_while_the_actor_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request queued behind one that takes 2 s waits 2 s in the mailbox; handling is 2 s each."""
    async with open_actor_host() as host:
        actor = host.spawn(Worker(), name="cart:alice")
        await host.request(actor, "warm", timeout=60)  # past on_start: waits count from here
        async with trio.open_nursery() as nursery:
            for n in (1, 2):
                nursery.start_soon(partial(host.request, actor, n, timeout=60))
        carts = kind(host.statistics(), "cart")
    assert carts.messages == 3
    assert carts.handling.sum == pytest.approx(3 * WORK_SECONDS)
    # "warm" waited out on_start (3 s), the first of 1 and 2 nothing, the other the 2 s the
    # first took.
    assert carts.mailbox_wait.sum == pytest.approx(START_SECONDS + WORK_SECONDS)
    assert carts.mailbox_wait.cumulative[0] == 1  # one took no time at all
    assert carts.mailbox_wait.quantile(0.99) == pytest.approx(5.0, rel=0.1)


async def test_activation_is_recorded_once_per_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Activation runs from spawn to the first message handled, and is counted once per actor."""
    async with open_actor_host() as host:
        for user in ("alice", "bob"):
            actor = host.spawn(Worker(), name=f"cart:{user}")
            for n in range(3):
                await host.request(actor, n, timeout=60)
        carts = kind(host.statistics(), "cart")
    assert carts.activations == 2
    assert carts.activation.sum == pytest.approx(2 * (START_SECONDS + WORK_SECONDS))
    assert carts.messages == 6


async def test_passivation_is_counted_per_kind_on_idle_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An idle cart that ends is one passivation of kind cart, and no longer live."""
    async with open_actor_host(idle_check_interval=1) as host:
        behaviour = Worker()
        actor = host.spawn(behaviour, name="cart:alice", idle_timeout=10)
        host.spawn(Worker(), name="ledger:main")  # another kind, never idle
        await host.request(actor, "hello", timeout=60)
        assert kind(host.statistics(), "cart").live == 1
        await behaviour.ended.wait()
        statistics = host.statistics()
    carts, ledgers = kind(statistics, "cart"), kind(statistics, "ledger")
    assert (carts.passivated, carts.live) == (1, 0)
    assert (ledgers.passivated, ledgers.live) == (0, 1)
    assert statistics.passivated == 1


async def test_unnamed_actors_are_of_kind_actor() -> None:
    """An actor spawned without a name is measured under the kind ``actor``."""
    async with open_actor_host() as host:
        await host.request(host.spawn(Echo()), 1, timeout=5)
        assert [k.kind for k in host.statistics().kinds] == ["actor"]
        assert kind(host.statistics(), "actor").messages == 1
