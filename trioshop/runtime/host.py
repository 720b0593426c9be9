"""The actor host: one root nursery, every actor in a child nursery of it, reached by mailbox."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import outcome
import trio
from opentelemetry import trace

from trioshop import events
from trioshop.logs import log_event
from trioshop.runtime.actor import (
    Actor,
    ActorContext,
    Behaviour,
    Envelope,
    Reply,
    refusals_of,
)
from trioshop.runtime.errors import (
    ActorCrashed,
    ActorEnded,
    ActorTimeout,
    HostClosed,
    MailboxFull,
    TooManyActors,
)
from trioshop.runtime.introspection import (
    ActorInfo,
    HostCounters,
    HostStatistics,
    actor_infos,
    host_statistics,
)
from trioshop.runtime.measures import KindTable
from trioshop.runtime.nursery import open_service_nursery
from trioshop.runtime.serve import PASSIVATE, serve
from trioshop.runtime.ticket import Ticket
from trioshop.runtime.tracing import NO_CONTEXT, HandlingTracer, default_tracer
from trioshop.telemetry import capture

logger = logging.getLogger("trioshop.runtime")

@attrs.define
class ActorHost:
    """Runs actors in child nurseries of one root nursery; create it with :func:`open_actor_host`.

    Spawning is synchronous (no checkpoint), which is what makes :meth:`get_or_spawn` atomic:
    the actor is registered and its mailbox exists before anyone else can run, and messages
    sent before its task first runs wait in the mailbox. Actors start in the host's own
    context, never in the caller's, so a request's context variables do not leak into them;
    the sender's trace context travels in the envelope instead (see :mod:`.tracing`).
    """

    _nursery: trio.Nursery
    mailbox_capacity: int = 256
    max_actors: int = 100_000
    shutdown_timeout: float = 5.0
    idle_check_interval: float = 10.0
    tracer: trace.Tracer = attrs.field(factory=default_tracer)
    _counters: HostCounters = attrs.field(factory=HostCounters)
    _kinds: KindTable = attrs.field(factory=KindTable)
    _actors: dict[int, Actor] = attrs.field(factory=dict)
    _names: dict[str, Actor] = attrs.field(factory=dict)
    _next_pid: int = 1
    _closed: bool = False
    _context: contextvars.Context = attrs.field(factory=contextvars.copy_context)
    # The run's clock, read directly: what trio.current_time() reads, minus two calls.
    _clock: trio.abc.Clock = attrs.field(factory=trio.lowlevel.current_clock)
    _tracing: HandlingTracer = attrs.field(init=False)

    @_tracing.default
    def _tracing_of_tracer(self) -> HandlingTracer:
        return HandlingTracer(self.tracer)

    # -- spawning and lookup ------------------------------------------------------------

    def spawn(
        self,
        behaviour: Behaviour,
        *,
        name: str | None = None,
        mailbox: int | None = None,
        idle_timeout: float | None = None,
    ) -> Actor:
        """Start *behaviour* as a new actor and return its handle at once.

        With *idle_timeout*, the actor ends (reason ``idle``) once it has waited that many
        seconds without a message, as seen by the host's next idle check (every
        ``idle_check_interval`` seconds). Raises :class:`ValueError` if *name* is taken,
        :class:`TooManyActors` at the live-actor limit, :class:`HostClosed` after shutdown
        began.
        """
        if self._closed:
            raise HostClosed("the actor host is shut down; no new actors can start")
        if name is not None and name in self._names:
            raise ValueError(f"an actor named {name!r} is already running; use get_or_spawn")
        if len(self._actors) >= self.max_actors:
            raise TooManyActors(
                f"{len(self._actors)} actors are live, the limit is {self.max_actors}; retry later"
            )
        send, receive = trio.open_memory_channel[Envelope](mailbox or self.mailbox_capacity)
        now = trio.current_time()
        actor = Actor(
            pid=self._next_pid, name=name, mailbox=send, inbox=receive,
            kind=self._kinds.of(name), started_at=now, last_message_at=now,
            idle_timeout=idle_timeout,
        )
        actor.kind.live += 1
        self._next_pid += 1
        self._actors[actor.pid] = actor
        if name is not None:
            self._names[name] = actor
        self._counters.spawned += 1
        self._tracing.refresh()  # an SDK installed since the host opened is followed
        self._context.run(self._nursery.start_soon, self._run_actor, actor, behaviour)
        return actor

    def lookup(self, name: str) -> Actor | None:
        """The live actor registered as *name*, or ``None``."""
        return self._names.get(name)

    def get_or_spawn(
        self,
        name: str,
        factory: Callable[[], Behaviour],
        *,
        mailbox: int | None = None,
        idle_timeout: float | None = None,
    ) -> Actor:
        """The actor registered as *name*, spawning ``factory()`` under that name if there is none.

        Atomic: there is no checkpoint between the lookup and the registration, so concurrent
        callers always get the same actor.
        """
        actor = self._names.get(name)
        if actor is None:
            actor = self.spawn(factory(), name=name, mailbox=mailbox, idle_timeout=idle_timeout)
        return actor

    # -- messaging ----------------------------------------------------------------------

    def _deliver(self, actor: Actor, envelope: Envelope) -> None:
        """Put *envelope* in *actor*'s mailbox without blocking: :class:`MailboxFull` when
        the mailbox is at capacity, :class:`ActorEnded` when the actor has ended or is
        ending."""
        if actor.stopping:
            raise ActorEnded(f"actor {actor.name or actor.pid} has ended")
        try:
            actor.mailbox.send_nowait(envelope)
        except trio.WouldBlock:
            raise MailboxFull(
                f"the mailbox of actor {actor.name or actor.pid} is full "
                f"({actor.mailbox.statistics().max_buffer_size} messages); retry later"
            ) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorEnded(f"actor {actor.name or actor.pid} has ended") from None

    async def request(
        self,
        actor: Actor,
        message: Any,
        *,
        timeout: float,
        ticket: Ticket | None = None,
        settle_timeout: float = 0.0,
    ) -> Any:
        """Send *message* and wait up to *timeout* seconds for the actor's reply.

        The reply travels on a one-shot channel (capacity 1) made for this call, so a late
        reply is dropped without blocking the actor. Raises :class:`MailboxFull` at once
        when the actor's mailbox is at capacity, :class:`ActorTimeout` after *timeout*,
        :class:`ActorCrashed` or :class:`ActorEnded` as soon as the actor crashes or ends
        (or has ended) without replying, and the actor's refusal if it refused the request.

        With a *ticket* (the message carries it to whoever does the work), a timeout first
        abandons the ticket: if that succeeds the work will never happen and
        ``ActorTimeout.maybe_applied`` is ``False``. If the work was already claimed, the
        caller waits up to *settle_timeout* more for its outcome, and only then gives up with
        ``maybe_applied`` ``True``.
        """
        # Annotated rather than subscripted: open_memory_channel[Reply](1) builds a generic
        # alias per call.
        reply_send: trio.MemorySendChannel[Reply]
        reply_receive: trio.MemoryReceiveChannel[Reply]
        reply_send, reply_receive = trio.open_memory_channel(1)
        # Tracing off, the actor starts no span, so the sender's context is not looked up.
        parent = NO_CONTEXT if self._tracing.tracer is None else capture()
        try:
            self._deliver(actor, (message, reply_send, parent, self._clock.current_time()))
        except BaseException:
            reply_send.close()
            reply_receive.close()
            raise
        # The reply channel is closed on every way out but a reply (there is nothing left to
        # close then): a late reply is dropped.
        try:
            with trio.move_on_after(timeout):
                try:
                    return (await reply_receive.receive()).unwrap()
                except trio.EndOfChannel:
                    raise self._ended_before_replying(actor) from None
            if ticket is not None and not ticket.abandon():
                with trio.move_on_after(settle_timeout):  # claimed: its outcome is coming
                    try:
                        return (await reply_receive.receive()).unwrap()
                    except trio.EndOfChannel:
                        raise self._ended_before_replying(actor) from None
            self._counters.timeouts += 1
            raise ActorTimeout(
                f"actor {actor.name or actor.pid} did not reply within {timeout:g} s",
                maybe_applied=None if ticket is None else ticket.claimed,
            )
        except BaseException:
            reply_receive.close()
            raise

    @staticmethod
    def _ended_before_replying(actor: Actor) -> ActorEnded:
        """What a caller whose reply channel closed unanswered raises: the actor crashed or
        ended (inlined twice in :meth:`request`, so the reply costs no extra coroutine)."""
        error = ActorCrashed if actor.crashed else ActorEnded
        return error(f"actor {actor.name or actor.pid} ended before replying")

    # -- introspection ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._actors)

    def live(self, limit: int | None = None) -> list[ActorInfo]:
        """A snapshot of the live actors (at most *limit*), oldest first."""
        return actor_infos(self._actors.values(), limit)

    def statistics(self) -> HostStatistics:
        """Live actors, the deepest mailbox (0 when none waits), totals since opening, and
        each kind's measures."""
        return host_statistics(self._actors.values(), self._counters, self._kinds.snapshot())

    # -- the actor task -----------------------------------------------------------------

    def _mark_stopping(self, actor: Actor) -> None:
        actor.stopping = True
        if actor.name is not None and self._names.get(actor.name) is actor:
            del self._names[actor.name]

    def passivate_idle(self) -> int:
        """End every actor that has waited longer than its idle timeout; returns how many.

        Synchronous, so no message can arrive between the check and the deregistration; the
        actor is then woken with a sentinel and ends with reason ``idle``. One pass over the
        actors every ``idle_check_interval`` replaces a timer per actor per message.
        """
        now = trio.current_time()
        idle = [
            actor
            for actor in self._actors.values()
            if actor.idle_timeout is not None
            and not actor.busy
            and not actor.stopping
            and now - actor.last_message_at >= actor.idle_timeout
            and actor.mailbox_depth == 0
        ]
        for actor in idle:
            self._mark_stopping(actor)
            actor.mailbox.send_nowait((PASSIVATE, None, NO_CONTEXT, now))
        return len(idle)

    async def _check_idle(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.idle_check_interval)
            self.passivate_idle()

    async def _run_actor(self, actor: Actor, behaviour: Behaviour) -> None:
        reason = "stopped"
        ctx: ActorContext | None = None
        refusals = refusals_of(behaviour)
        refused: Exception | None = None  # the declared refusal on_start raised, if any
        try:
            async with trio.open_nursery() as nursery:
                ctx = ActorContext(actor=actor, nursery=nursery, stop=self._mark_stopping)
                on_start = getattr(behaviour, "on_start", None)
                if on_start is not None:
                    try:
                        await on_start(ctx)
                    except refusals as error:
                        refused = error
                if refused is None:
                    reason = await serve(ctx, behaviour, refusals, self._tracing)
                else:
                    # A declared refusal (e.g. the store is down): an answer, not a bug, so
                    # one line without a traceback; every request queued for it gets it.
                    reason = "refused"
                    log_event(
                        logger, "actor start refused", logging.WARNING, pid=actor.pid,
                        actor=actor.name, error=repr(refused),
                    )
                nursery.cancel_scope.cancel()
        except* trio.Cancelled:
            reason = "cancelled"
            raise
        except* Exception as group:
            reason = "crashed"
            actor.crashed = True
            self._counters.crashed += 1
            crash = group.exceptions[0] if len(group.exceptions) == 1 else group
            log_event(
                logger, events.ACTOR_CRASHED, logging.ERROR, pid=actor.pid, actor=actor.name,
                error=repr(crash), exc_info=crash,
            )
        finally:
            self._release(actor, refused)
            if reason == "idle":
                actor.kind.passivated += 1
            on_stop = getattr(behaviour, "on_stop", None)
            if on_stop is not None and ctx is not None:
                # Cleanup must run even while the host is cancelling us, but never forever.
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + self.shutdown_timeout
                    await on_stop(ctx, reason)

    def _release(self, actor: Actor, refusal: Exception | None = None) -> None:
        """Deregister *actor* and fail every request still queued for it, without a checkpoint.

        With *refusal* (the actor's start was refused) each queued request gets it as its
        answer; otherwise its caller sees the actor end (or crash).
        """
        self._mark_stopping(actor)
        actor.ended = True
        self._actors.pop(actor.pid, None)
        self._counters.ended += 1
        actor.kind.live -= 1
        while True:
            try:
                reply = actor.inbox.receive_nowait()[1]
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if reply is not None:
                if refusal is not None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        reply.send_nowait(outcome.Error(refusal))
                reply.close()
        actor.inbox.close()


@asynccontextmanager
async def open_actor_host(
    *,
    mailbox_capacity: int = 256,
    max_actors: int = 100_000,
    shutdown_timeout: float = 5.0,
    idle_check_interval: float = 10.0,
    tracer: trace.Tracer | None = None,
) -> AsyncIterator[ActorHost]:
    """Open the root nursery and yield an :class:`ActorHost` that spawns actors into it.

    Ready on entry (its idle checker, a task of the root nursery, is running). On exit the
    host refuses new actors, cancels every live one and waits
    for them; each actor's ``on_stop`` cleanup gets at most *shutdown_timeout* seconds.
    An actor's crash never propagates here: it is logged and ends that actor only.
    Messages are handled in spans of *tracer* (default: the global provider's
    ``trioshop.runtime`` tracer, a no-op until an OpenTelemetry SDK is configured).
    """
    async with open_service_nursery() as nursery:
        host = ActorHost(
            nursery,
            mailbox_capacity=mailbox_capacity,
            max_actors=max_actors,
            shutdown_timeout=shutdown_timeout,
            idle_check_interval=idle_check_interval,
            tracer=tracer or default_tracer(),
        )
        await nursery.start(host._check_idle)
        try:
            yield host
        finally:
            host._closed = True
