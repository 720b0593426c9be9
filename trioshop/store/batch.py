"""Group the operations many callers send at once into one trip to the database: a batcher."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio
from opentelemetry import trace
from opentelemetry.context import Context

from trioshop.runtime import Ticket
from trioshop.store.base import OperationAbandoned, StoreClosed, StoreError, claim, unexpected
from trioshop.store.tracing import capture, default_tracer, end_batch, start_batch

R = TypeVar("R")
# One request's answer: its result, or the exception its caller raises. An Error can be
# unwrapped once: a batch failing whole makes one for each request.
Outcome = outcome.Outcome[Any]


@attrs.define(eq=False)
class _Pending(Generic[R]):
    request: R
    reply: trio.MemorySendChannel[Outcome]
    ticket: Ticket | None
    # The caller's OpenTelemetry context: the batch's span continues the first one's trace.
    context: Context
    answered: bool = False

    def answer(self, result: Outcome) -> None:
        """Send *result*, once; a caller cancelled meanwhile has closed its end."""
        self.answered = True
        with contextlib.suppress(trio.BrokenResourceError):
            self.reply.send_nowait(result)


@attrs.define(eq=False)
class Batcher(Generic[R]):
    """Callers :meth:`submit` requests; one task takes every request waiting (up to
    ``max_batch``), claims their tickets, and hands the batch to ``apply`` at once.

    ``apply`` gets the requests in arrival order and answers one outcome each, in the same
    order; if it raises, every request of the batch gets that exception. While a batch is
    out, new requests queue up and go together in the next: the busier the store, the
    larger the batches (group commit). Requests whose callers gave up before their batch
    was taken are answered :class:`OperationAbandoned` and never reach ``apply``.

    With a ``gate`` (what makes the async context holding e.g. a store's connection) the
    batcher holds one from before the tickets are claimed until the batch is answered: a
    caller can still give up while its batch waits for a connection, and ``apply`` runs
    holding it.

    Run it with ``await nursery.start(batcher.run)``; when that task ends (cancelled, or
    after :meth:`close` once the queue is drained), queued requests are answered
    :class:`StoreClosed`.

    An ``inline`` batcher has no task and no queue: :meth:`submit` claims the ticket and
    hands ``apply`` a batch of one at once, with the same answers and failures. It is for a
    store whose ``apply`` is pure and never checkpoints (memory): there is no trip to
    share, so grouping would only add a task hop per write, and applying in place keeps each
    of that store's operations free of checkpoints (atomic under Trio) and usable without a
    running task (the registry check, benches and tests build one bare).

    Each batch runs in a span ``store.batch`` of ``tracer`` (the global provider's
    ``trioshop.store`` unless given) with the store's ``kind`` and the batch's ``operation``
    (what its requests are): a child of the first request's caller's context, linked to the
    others' (see :mod:`trioshop.store.tracing`).
    """

    apply: Callable[[list[R]], Awaitable[list[Outcome]]]
    gate: Callable[[], AbstractAsyncContextManager[object]] | None = None
    max_batch: int = 256
    queue_size: int = 10_000
    inline: bool = False
    kind: str = "store"
    operation: str = "changes"
    tracer: trace.Tracer = attrs.field(factory=default_tracer, repr=False)
    _send: trio.MemorySendChannel[_Pending[R]] | None = attrs.field(default=None, init=False)
    _batches: int = attrs.field(default=0, init=False)

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is serving requests (an inline batcher always is)."""
        return self.inline or self._send is not None

    @property
    def batches(self) -> int:
        """Batches handed to ``apply`` so far."""
        return self._batches

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve requests until cancelled or closed; ready at once (never for an inline one)."""
        if self.inline:
            raise RuntimeError("an inline batcher applies at submit; it has no task to run")
        send, receive = trio.open_memory_channel[_Pending[R]](self.queue_size)
        self._send = send
        task_status.started()
        try:
            async for first in receive:
                taken = [first]
                while len(taken) < self.max_batch:
                    try:
                        taken.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    async with self.gate() if self.gate else contextlib.nullcontext():
                        batch = _claimed(taken)
                        if batch:
                            # Shielded: a batch whose tickets are claimed gets its answers.
                            with trio.CancelScope(shield=True):
                                await self._answer(batch)
                finally:  # cancelled while waiting for the gate: nothing was claimed
                    for pending in taken:
                        if not pending.answered:
                            pending.answer(outcome.Error(StoreClosed("the store is shut down")))
        finally:
            self._send = None
            send.close()
            _refuse_queued(receive)
            receive.close()

    async def _answer(self, batch: list[_Pending[R]]) -> None:
        outcomes = await self._outcomes(
            [pending.request for pending in batch], [pending.context for pending in batch]
        )
        for pending, result in zip(batch, outcomes, strict=True):
            pending.answer(result)

    async def _outcomes(self, requests: list[R], contexts: list[Context]) -> list[Outcome]:
        """``apply``'s outcomes for *requests* (queued in *contexts*), in the batch's span;
        its failure as every request's outcome."""
        span = start_batch(self.tracer, self.kind, self.operation, contexts)
        failure: Exception | None = None
        outcomes: list[Outcome] = []
        cancelled = False
        try:
            outcomes = await self.apply(requests)
            if len(outcomes) != len(requests):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(requests)} requests")
        except trio.Cancelled:  # the span says so; the cancellation goes on
            cancelled = True
            raise
        except StoreError as exc:
            failure = exc
        except Exception as exc:  # a bug in apply: its callers hear of it, the batcher goes on
            failure = unexpected(exc)
        finally:  # cancelled too, the span ends
            end_batch(span, outcomes, failure=failure, cancelled=cancelled)
        if failure is not None:
            outcomes = [outcome.Error(failure) for _ in requests]
        self._batches += 1
        return outcomes

    def close(self) -> None:
        """Take no more requests; the queued ones are still answered, then :meth:`run` ends."""
        if self._send is not None:
            self._send.close()

    async def submit(self, request: R, ticket: Ticket | None = None) -> Any:
        """*request*'s result once its batch is done, or the exception it was answered with.

        :class:`StoreClosed` when the batcher is not running; :class:`StoreError` when its
        queue is full (``queue_size`` requests waiting). Inline, it is applied at once.
        """
        if self.inline:
            claim(ticket)
            [result] = await self._outcomes([request], [capture()])
            return result.unwrap()
        if self._send is None:
            raise StoreClosed("the store is not open")
        reply, answer = trio.open_memory_channel[Outcome](1)
        try:
            self._send.send_nowait(_Pending(request, reply, ticket, capture()))
        except trio.WouldBlock:
            raise StoreError("the store's queue is full; retry later") from None
        except trio.ClosedResourceError:
            raise StoreClosed("the store is shut down") from None
        with answer:
            result = await answer.receive()
        return result.unwrap()


def _claimed(taken: list[_Pending[R]]) -> list[_Pending[R]]:
    """The requests of *taken* whose callers still wait, each ticket claimed now; an
    abandoned one is answered at once and never applied."""
    batch = []
    for pending in taken:
        try:
            claim(pending.ticket)
        except OperationAbandoned as abandoned:
            pending.answer(outcome.Error(abandoned))
        else:
            batch.append(pending)
    return batch


def _refuse_queued(receive: trio.MemoryReceiveChannel[_Pending[R]]) -> None:
    """Answer what is still queued when the batcher stops: nothing of it was applied."""
    while True:
        try:
            pending = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
        pending.answer(outcome.Error(StoreClosed("the store is shut down")))
