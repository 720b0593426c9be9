"""Tests of how an idle service waits for news of orders: cheaply on an exclusive store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import trio
import trio.lowlevel
import trio.testing

from tests.helpers import open_shop_client
from trioshop.registry import load_registry


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    """Every task of the run, from the root down."""
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        assert task is not None
        yield task
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)


async def test_idle_services_on_an_exclusive_store_start_no_waiting_tasks(
    registry_copy: Path,
) -> None:
    """On the memory store a waiting service runs no helper task (no poll, no wake-up)."""
    async with open_shop_client(load_registry(registry_copy)) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert client.shop.services.names == ["delivery", "notifier"]
        helpers = [task.name for task in all_tasks() if "_wait_for_news" in task.name]
        assert helpers == []
