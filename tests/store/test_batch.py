"""Tests of the batcher: requests waiting together go in one batch, each gets its own answer."""

from __future__ import annotations

import outcome
import pytest
import trio
import trio.testing

from trioshop.runtime import Ticket
from trioshop.store import OperationAbandoned, StoreClosed, StoreError
from trioshop.store.batch import Batcher, Outcome


class FakeDatabase:
    """Records each batch; answers n → n * 10, refuses negative numbers alone; can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = trio.Event()
        self.release.set()
        self.failure: StoreError | None = None

    async def apply(self, requests: list[int]) -> list[Outcome]:
        self.batches.append(requests)
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return [outcome.Error(ValueError(n)) if n < 0 else outcome.Value(n * 10) for n in requests]


async def submit_all(batcher: Batcher[int], requests: list[int]) -> dict[int, object]:
    answers: dict[int, object] = {}

    async def one(n: int) -> None:
        try:
            answers[n] = await batcher.submit(n)
        except Exception as exc:
            answers[n] = exc

    async with trio.open_nursery() as nursery:
        for n in requests:
            nursery.start_soon(one, n)
    return answers


async def test_requests_waiting_together_go_in_one_batch() -> None:
    """Requests sent at once make one batch; each caller gets its own result or refusal."""
    # Trio runs tasks woken together in no fixed order, so batches are compared sorted.
    db = FakeDatabase()
    batcher = Batcher(db.apply)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        answers = await submit_all(batcher, [1, 2, -3, 4])
        nursery.cancel_scope.cancel()
    assert [sorted(batch) for batch in db.batches] == [[-3, 1, 2, 4]] and batcher.batches == 1
    assert answers[1] == 10 and answers[2] == 20 and answers[4] == 40
    assert isinstance(answers[-3], ValueError)


async def test_requests_arriving_during_a_batch_go_in_the_next() -> None:
    """While one batch is out, newcomers queue and then go together, not one by one."""
    db = FakeDatabase()
    db.release = trio.Event()
    batcher = Batcher(db.apply)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        nursery.start_soon(batcher.submit, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert db.batches == [[1]]
        for n in (2, 3, 4):
            nursery.start_soon(batcher.submit, n)
        await trio.testing.wait_all_tasks_blocked()
        db.release.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [sorted(batch) for batch in db.batches] == [[1], [2, 3, 4]]


async def test_max_batch_bounds_a_batch() -> None:
    """No batch holds more than max_batch requests."""
    db = FakeDatabase()
    batcher = Batcher(db.apply, max_batch=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        await submit_all(batcher, [1, 2, 3, 4, 5])
        nursery.cancel_scope.cancel()
    assert [len(batch) for batch in db.batches] == [2, 2, 1]


async def test_a_failed_batch_answers_every_caller() -> None:
    """A batch whose apply raises a StoreError answers that error to each of its callers."""
    db = FakeDatabase()
    db.failure = StoreError("the database is down; retry later")
    batcher = Batcher(db.apply)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        answers = await submit_all(batcher, [1, 2])
        nursery.cancel_scope.cancel()
    assert answers == {1: db.failure, 2: db.failure}


async def test_abandoned_request_is_never_applied() -> None:
    """A request whose ticket was abandoned before its batch is answered, never applied."""
    db = FakeDatabase()
    batcher = Batcher(db.apply)
    gone, kept = Ticket(), Ticket()
    assert gone.abandon()
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        with pytest.raises(OperationAbandoned):
            await batcher.submit(1, gone)
        assert await batcher.submit(2, kept) == 20
        nursery.cancel_scope.cancel()
    assert db.batches == [[2]] and kept.claimed


async def test_queued_requests_are_refused_when_the_batcher_stops() -> None:
    """Stopping answers StoreClosed to what is still queued; later submits are refused too."""
    db = FakeDatabase()
    db.release = trio.Event()
    batcher = Batcher(db.apply)
    answers: dict[int, object] = {}
    async with trio.open_nursery() as nursery:
        runner = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[None]) -> None:
            with runner:
                await batcher.run(task_status=task_status)

        await nursery.start(run)

        async def one(n: int) -> None:
            try:
                answers[n] = await batcher.submit(n)
            except StoreError as exc:
                answers[n] = exc

        nursery.start_soon(one, 1)
        await trio.testing.wait_all_tasks_blocked()  # 1 is out, held by the database
        nursery.start_soon(one, 2)
        await trio.testing.wait_all_tasks_blocked()  # 2 is queued
        runner.cancel()
        await trio.testing.wait_all_tasks_blocked()
        db.release.set()
    assert answers[1] == 10  # the batch that was out still got its answer
    assert isinstance(answers[2], StoreClosed)
    with pytest.raises(StoreClosed):
        await batcher.submit(3)


async def test_a_full_queue_is_a_store_error() -> None:
    """More requests waiting than queue_size: the next is refused at once, retry later."""
    db = FakeDatabase()
    db.release = trio.Event()
    batcher = Batcher(db.apply, queue_size=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        nursery.start_soon(batcher.submit, 1)
        await trio.testing.wait_all_tasks_blocked()  # 1 is out
        nursery.start_soon(batcher.submit, 2)
        await trio.testing.wait_all_tasks_blocked()  # 2 fills the queue
        with pytest.raises(StoreError, match="queue is full"):
            await batcher.submit(3)
        db.release.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert db.batches == [[1], [2]]


async def test_tickets_are_claimed_once_the_gate_is_held() -> None:
    """With a gate, a request can be abandoned while its batch waits for it: never applied."""
    db = FakeDatabase()
    gate = trio.CapacityLimiter(1)
    batcher = Batcher(db.apply, gate=lambda: gate)
    ticket = Ticket()
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        await gate.acquire_on_behalf_of("someone else")
        answer: list[object] = []

        async def submit() -> None:
            try:
                answer.append(await batcher.submit(1, ticket))
            except OperationAbandoned as exc:
                answer.append(exc)

        nursery.start_soon(submit)
        await trio.testing.wait_all_tasks_blocked()
        assert ticket.abandon()  # its batch waits for the gate: not claimed yet
        gate.release_on_behalf_of("someone else")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert db.batches == [] and isinstance(answer[0], OperationAbandoned)


async def test_a_batch_cancelled_while_waiting_for_the_gate_is_answered() -> None:
    """Stopping while a batch waits for its gate answers it StoreClosed; nothing is applied."""
    db = FakeDatabase()
    gate = trio.CapacityLimiter(1)
    await gate.acquire_on_behalf_of("someone else")
    batcher = Batcher(db.apply, gate=lambda: gate)
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        runner = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[None]) -> None:
            with runner:
                await batcher.run(task_status=task_status)

        async def submit() -> None:
            try:
                answers.append(await batcher.submit(1))
            except StoreClosed as exc:
                answers.append(exc)

        await nursery.start(run)
        nursery.start_soon(submit)
        await trio.testing.wait_all_tasks_blocked()
        runner.cancel()
    assert db.batches == [] and isinstance(answers[0], StoreClosed)


async def test_a_bug_in_apply_answers_its_batch_and_the_batcher_goes_on() -> None:
    """An apply that raises something unexpected fails its batch alone; later batches work."""
    calls: list[list[int]] = []

    async def apply(requests: list[int]) -> list[Outcome]:
        calls.append(requests)
        if len(calls) == 1:
            raise ZeroDivisionError("a bug")
        return [outcome.Value(n) for n in requests]

    batcher = Batcher(apply)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        with pytest.raises(StoreError, match="ZeroDivisionError"):
            await batcher.submit(1)
        assert await batcher.submit(2) == 2
        nursery.cancel_scope.cancel()


async def test_an_inline_batcher_applies_each_request_at_submit() -> None:
    """Inline, a request is a batch of one applied at submit, without a task or a checkpoint."""
    batches: list[list[int]] = []

    async def pure(requests: list[int]) -> list[Outcome]:  # never checkpoints
        batches.append(requests)
        return [outcome.Error(ValueError(n)) if n < 0 else outcome.Value(n * 10) for n in requests]

    batcher = Batcher(pure, inline=True)
    with trio.CancelScope() as scope:
        scope.cancel()  # any checkpoint in submit would raise Cancelled
        assert await batcher.submit(2) == 20
        with pytest.raises(ValueError):
            await batcher.submit(-1)
    assert batches == [[2], [-1]] and batcher.batches == 2 and batcher.running


async def test_an_inline_batcher_refuses_an_abandoned_ticket_and_answers_failures() -> None:
    """Inline, an abandoned ticket is never applied and apply's failure is the caller's."""
    db = FakeDatabase()
    batcher = Batcher(db.apply, inline=True)
    gone = Ticket()
    gone.abandon()
    with pytest.raises(OperationAbandoned):
        await batcher.submit(1, gone)
    kept = Ticket()
    assert await batcher.submit(3, kept) == 30 and kept.claimed
    db.failure = StoreError("disk full")
    with pytest.raises(StoreError, match="disk full"):
        await batcher.submit(4)
    assert db.batches == [[3], [4]]
    with pytest.raises(RuntimeError, match="no task"):
        await batcher.run()
