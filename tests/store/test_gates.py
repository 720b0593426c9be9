"""Tests of the connection places of a shared store: the read reserve and the places a row."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioshop.store import StoreError
from trioshop.store.postgres.gates import READ_RESERVE, ROW_PLACES, ROW_WAIT, Gates


async def test_writes_never_take_the_read_reserve() -> None:
    """With every writer's place taken, a read still gets a connection at once."""
    gates = Gates(2 + READ_RESERVE)
    release = trio.Event()

    async def write(row: str) -> None:
        async with gates.writing([row]):
            await release.wait()

    async with trio.open_nursery() as nursery:
        for row in ("cart:a", "cart:b", "cart:c"):  # the third waits for a writer's place
            nursery.start_soon(write, row)
        await trio.testing.wait_all_tasks_blocked()
        assert gates.writers.available_tokens == 0
        with trio.fail_after(0.1):
            async with gates.reading():
                assert gates.connections.available_tokens == READ_RESERVE - 1
        release.set()


async def test_a_rows_places_are_capped_and_a_late_write_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ROW_PLACES writes of one row hold connections; another waits ROW_WAIT, then fails."""
    gates = Gates(8)
    release = trio.Event()
    refused: list[tuple[StoreError, float]] = []

    async def hold(*, task_status: trio.TaskStatus[None]) -> None:
        async with gates.writing(["stock:A"]):
            task_status.started()
            await release.wait()

    async def late() -> None:
        started = trio.current_time()
        with pytest.raises(StoreError) as caught:
            async with gates.writing(["stock:A", "cart:u"]):
                pass
        refused.append((caught.value, trio.current_time() - started))

    async with trio.open_nursery() as nursery:
        for _ in range(ROW_PLACES):
            await nursery.start(hold)
        async with gates.writing(["stock:B"]):  # another row is not held up
            pass
        await late()
        release.set()
    [(error, waited)] = refused
    assert waited == pytest.approx(ROW_WAIT) and "another transaction holds it" in str(error)
    assert gates.writers.borrowed_tokens == 0 and gates.rows_waited_on() == 0
