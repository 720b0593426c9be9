"""Tests of the node's registry reloads: one at a time, at most one queued, cancelled by a stop."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trioshop.http.app import ShopLifetime
from trioshop.node import Reloads


@attrs.define
class SlowShop:
    """A shop whose reloads each wait to be let through; counts them."""

    started: int = 0
    finished: int = 0
    go: trio.Event = attrs.field(factory=trio.Event)

    async def reload_from_disk(self) -> None:
        self.started += 1
        await self.go.wait()
        self.go = trio.Event()
        self.finished += 1


def _reloads(shop: SlowShop) -> Reloads:
    lifetime: Any = ShopLifetime(shop=shop)  # type: ignore[arg-type]
    return Reloads(lifetime)


async def test_reloads_asked_during_a_reload_queue_at_most_one_more() -> None:
    """Three asks during a reload make one more reload after it, not three."""
    shop = SlowShop()
    reloads = _reloads(shop)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reloads.run)
        reloads.ask()
        await trio.testing.wait_all_tasks_blocked()
        assert shop.started == 1
        for _ in range(3):
            reloads.ask()
        shop.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert (shop.started, shop.finished) == (2, 1)
        shop.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert (shop.started, shop.finished) == (2, 2)
        reloads.cancel()


async def test_cancel_ends_a_reload_in_progress_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stop cancels the reload in progress (and the queued one) and says so in one line."""
    shop = SlowShop()
    reloads = _reloads(shop)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reloads.run)
        reloads.ask()
        reloads.ask()
        await trio.testing.wait_all_tasks_blocked()
        reloads.cancel()
    assert (shop.started, shop.finished) == (1, 0)
    cancelled = [r for r in caplog.records if r.getMessage().startswith("registry reload cancel")]
    assert len(cancelled) == 1 and cancelled[0].levelno == logging.WARNING


async def test_cancel_while_idle_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A stop with no reload in progress ends the reloads quietly."""
    reloads = _reloads(SlowShop())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reloads.run)
        await trio.testing.wait_all_tasks_blocked()
        reloads.cancel()
    assert not [r for r in caplog.records if "reload" in r.getMessage()]
