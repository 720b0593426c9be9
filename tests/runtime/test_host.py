"""Tests of the actor host: spawning, naming, mailboxes, request/reply and crash isolation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trioshop.runtime import (
    ActorContext,
    ActorCrashed,
    ActorEnded,
    ActorTimeout,
    HostClosed,
    MailboxFull,
    Refusal,
    TooManyActors,
    open_actor_host,
)


class Counter:
    """Adds numbers; replies with the running total; 'stop' ends it, 'boom' crashes it."""

    def __init__(self) -> None:
        self.total = 0

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "stop":
            ctx.stop()
            return "bye"
        if message == "refuse":
            raise Refusal("no")
        self.total += message
        return self.total


class Silent:
    """Never replies: waits forever on every message."""

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        await trio.sleep_forever()


class Gate:
    """Replies only once its gate event is set."""

    def __init__(self, gate: trio.Event) -> None:
        self.gate = gate

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        await self.gate.wait()
        return message


class Unavailable(Exception):
    """Stands for a store that is down: an error the behaviour below declares a refusal."""


class FailingStart:
    """Its on_start raises the given error; declares Unavailable a refusal; records on_stop."""

    refusals = (Unavailable,)

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.stop_reason: str | None = None

    async def on_start(self, ctx: ActorContext) -> None:
        raise self.error

    async def on_stop(self, ctx: ActorContext, reason: str) -> None:
        self.stop_reason = reason

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        return message


# The runtime's log records so far.
Records = Callable[[], list[logging.LogRecord]]


@pytest.fixture
def runtime_log(caplog: pytest.LogCaptureFixture) -> Records:
    """The runtime's log records, every level captured."""
    caplog.set_level(logging.DEBUG, logger="trioshop.runtime")
    return lambda: [r for r in caplog.records if r.name == "trioshop.runtime"]


async def test_request_reply_round_trip() -> None:
    """A request gets the actor's reply, and state persists between messages."""
    async with open_actor_host() as host:
        actor = host.spawn(Counter())
        assert await host.request(actor, 2, timeout=1) == 2
        assert await host.request(actor, 3, timeout=1) == 5


async def test_get_or_spawn_is_atomic_under_concurrency() -> None:
    """100 concurrent lookup-or-spawn calls for one name share one actor and lose no message."""
    async with open_actor_host() as host:
        replies: list[int] = []

        async def caller() -> None:
            actor = host.get_or_spawn("cart:alice", Counter)
            replies.append(await host.request(actor, 1, timeout=5))

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(caller)
        assert host.statistics().spawned == 1
        assert sorted(replies) == list(range(1, 101))


async def test_spawn_refuses_a_taken_name() -> None:
    """Spawning under a live actor's name raises instead of replacing it."""
    async with open_actor_host() as host:
        host.spawn(Counter(), name="x")
        with pytest.raises(ValueError, match="already running"):
            host.spawn(Counter(), name="x")


async def test_full_mailbox_raises_mailbox_full() -> None:
    """A request to a mailbox at capacity raises MailboxFull instead of blocking."""
    async with open_actor_host() as host, trio.open_nursery() as nursery:
        actor = host.spawn(Silent(), mailbox=2)
        for n in (1, 2, 3):  # the first is taken by the actor, which then hangs
            nursery.start_soon(partial(host.request, actor, n, timeout=60))
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(MailboxFull, match="retry later"):
            await host.request(actor, 4, timeout=60)
        nursery.cancel_scope.cancel()


async def test_request_timeout_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """A request to an actor that never replies raises ActorTimeout after exactly the timeout."""
    async with open_actor_host() as host:
        actor = host.spawn(Silent())
        start = trio.current_time()
        with pytest.raises(ActorTimeout):
            await host.request(actor, "hello", timeout=3)
        assert trio.current_time() - start == pytest.approx(3)
        assert host.statistics().timeouts == 1


async def test_late_reply_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """A reply that arrives after the caller gave up is dropped and the actor keeps serving."""
    gate = trio.Event()
    async with open_actor_host() as host:
        actor = host.spawn(Gate(gate))
        with pytest.raises(ActorTimeout):
            await host.request(actor, "first", timeout=1)
        gate.set()
        assert await host.request(actor, "second", timeout=1) == "second"
        assert len(host) == 1


async def test_request_to_crashing_actor_fails_promptly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request whose handler crashes raises ActorCrashed at once, not after the timeout."""
    async with open_actor_host() as host:
        actor = host.spawn(Counter())
        start = trio.current_time()
        with pytest.raises(ActorCrashed):
            await host.request(actor, "boom", timeout=30)
        assert trio.current_time() - start < 1
        await trio.testing.wait_all_tasks_blocked()
        assert host.statistics().crashed == 1


async def test_requests_queued_behind_a_stop_fail_promptly() -> None:
    """Requests still in the mailbox when the actor stops fail with ActorEnded."""
    async with open_actor_host() as host:
        actor = host.spawn(Counter(), name="c")
        results: list[object] = []

        async def ask(message: object) -> None:
            try:
                results.append(await host.request(actor, message, timeout=30))
            except ActorEnded as exc:
                results.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "stop")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, 1)
        assert results == ["bye", ActorEnded]
        assert host.lookup("c") is None


async def test_crash_is_isolated_to_one_actor() -> None:
    """One actor's crash ends only that actor; siblings and the host keep running."""
    async with open_actor_host() as host:
        doomed = host.spawn(Counter(), name="doomed")
        sibling = host.spawn(Counter(), name="sibling")
        with pytest.raises(ActorCrashed):
            await host.request(doomed, "boom", timeout=1)
        assert await host.request(sibling, 1, timeout=1) == 1
        assert host.lookup("doomed") is None
        assert host.lookup("sibling") is sibling


async def test_refusal_reaches_caller_and_actor_lives() -> None:
    """A Refusal is raised in the caller and does not end the actor."""
    async with open_actor_host() as host:
        actor = host.spawn(Counter())
        with pytest.raises(Refusal):
            await host.request(actor, "refuse", timeout=1)
        assert await host.request(actor, 1, timeout=1) == 1


async def test_name_is_released_when_actor_ends() -> None:
    """After an actor stops its name can be taken by a new actor."""
    async with open_actor_host() as host:
        first = host.spawn(Counter(), name="n")
        await host.request(first, "stop", timeout=1)
        second = host.get_or_spawn("n", Counter)
        assert second is not first
        assert await host.request(second, 4, timeout=1) == 4
        with pytest.raises(ActorEnded):
            await host.request(first, 1, timeout=1)


async def test_live_actor_limit() -> None:
    """Spawning past max_actors raises TooManyActors."""
    async with open_actor_host(max_actors=2) as host:
        host.spawn(Counter())
        host.spawn(Counter())
        with pytest.raises(TooManyActors):
            host.spawn(Counter())


async def test_idle_actor_passivates(autojump_clock: trio.testing.MockClock) -> None:
    """An actor with an idle timeout ends at the first idle check after that long without mail."""
    async with open_actor_host(idle_check_interval=1) as host:
        actor = host.spawn(Counter(), name="idle", idle_timeout=10)
        forever = host.spawn(Counter(), name="forever")
        await trio.sleep(9.5)
        assert await host.request(actor, 1, timeout=1) == 1
        await trio.sleep(9)
        assert host.lookup("idle") is actor
        await trio.sleep(2)  # past 10 s idle and the next check
        assert host.lookup("idle") is None
        assert host.statistics().passivated == 1
        with pytest.raises(ActorEnded):
            await host.request(actor, 1, timeout=1)
        await trio.sleep(1000)
        assert host.lookup("forever") is forever


async def test_busy_actor_is_not_passivated(autojump_clock: trio.testing.MockClock) -> None:
    """An actor still handling a message is not idle, however long the message takes."""
    gate = trio.Event()
    async with open_actor_host(idle_check_interval=1) as host, trio.open_nursery() as nursery:
        actor = host.spawn(Gate(gate), name="slow", idle_timeout=5)
        nursery.start_soon(partial(host.request, actor, "work", timeout=100))
        await trio.sleep(50)
        assert host.lookup("slow") is actor
        gate.set()
        await trio.sleep(7)
        assert host.lookup("slow") is None


async def test_shutdown_cancels_actors_and_closes_host() -> None:
    """Leaving the host block ends every actor and refuses new spawns."""
    async with open_actor_host() as host:
        for _ in range(10):
            host.spawn(Silent())
        await trio.testing.wait_all_tasks_blocked()
        assert len(host.live()) == 10
    assert len(host) == 0
    with pytest.raises(HostClosed):
        host.spawn(Counter())


async def test_actor_does_not_inherit_caller_context() -> None:
    """Actors run in the host's context, not in the context of whoever spawned them."""
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

    class Peek:
        async def handle(self, ctx: ActorContext, message: Any) -> Any:
            return request_id.get()

    async with open_actor_host() as host:
        request_id.set("req-1")
        actor = host.spawn(Peek())
        assert await host.request(actor, None, timeout=1) == "-"


async def test_refused_start_answers_callers_and_logs_one_line(runtime_log: Records) -> None:
    """A declared refusal in on_start reaches every queued caller; one log line, no traceback."""
    behaviour = FailingStart(Unavailable("store down"))
    async with open_actor_host() as host:
        actor = host.spawn(behaviour, name="cart:alice")
        refused: list[Exception] = []

        async def ask(message: int) -> None:
            with pytest.raises(Unavailable) as caught:
                await host.request(actor, message, timeout=30)
            refused.append(caught.value)

        async with trio.open_nursery() as nursery:  # both queued before on_start runs
            nursery.start_soon(ask, 1)
            nursery.start_soon(ask, 2)
        assert refused == [behaviour.error, behaviour.error]
        await trio.testing.wait_all_tasks_blocked()
        assert host.lookup("cart:alice") is None
        assert behaviour.stop_reason == "refused"
        assert host.statistics().crashed == 0
    [record] = runtime_log()
    assert (record.getMessage(), record.levelno) == ("actor start refused", logging.WARNING)
    assert record.exc_info is None
    assert record.__dict__["fields"]["error"] == "Unavailable('store down')"


async def test_undeclared_start_error_is_a_crash_with_traceback(runtime_log: Records) -> None:
    """An undeclared exception in on_start is a crash: ActorCrashed, logged with exc_info."""
    behaviour = FailingStart(RuntimeError("bug"))
    async with open_actor_host() as host:
        actor = host.spawn(behaviour)
        with pytest.raises(ActorCrashed):
            await host.request(actor, 1, timeout=30)
        await trio.testing.wait_all_tasks_blocked()
        assert behaviour.stop_reason == "crashed"
        assert host.statistics().crashed == 1
    [record] = runtime_log()
    assert record.getMessage() == "actor crashed"
    assert record.exc_info is not None and record.exc_info[1] is behaviour.error
