"""What an actor is: its behaviour protocol, its handle, and the context it runs with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import outcome
import trio
from opentelemetry.context import Context

from trioshop.runtime.measures import KindMeasures

# A message in a mailbox: the payload; for a request, the one-shot reply channel; the
# sender's trace context (actors run in the host's context, so the envelope carries it); and
# when it was enqueued (Trio time), for the mailbox wait.
Envelope = tuple[Any, "trio.MemorySendChannel[Reply] | None", Context, float]
# What travels back on a reply channel: the value, or the refusal to raise in the caller.
Reply = outcome.Outcome[Any]


class Refusal(Exception):
    """Raised by a behaviour to refuse one request: the caller gets it, the actor lives on.

    A behaviour can name more exception types that are answers rather than crashes in its
    ``refusals`` attribute (see :class:`Behaviour`); anything else raised by ``handle`` is a
    crash and ends the actor.
    """


@runtime_checkable
class Behaviour(Protocol):
    """The code of an actor: called once per message, one message at a time.

    ``handle`` returns the reply for a request (ignored for a plain send) or raises
    :class:`Refusal`, or one of the types in the behaviour's optional ``refusals`` tuple
    (e.g. its domain's errors): the caller gets it and the actor lives on. Any other
    exception is a crash. To end after this message, call ``ctx.stop()``. State lives on the
    behaviour object; nothing else can reach it, so it needs no locks.

    Optional hooks: ``async on_start(ctx)`` runs before the first message (an exception
    there is a crash, except a refusal: then the actor ends without serving, with one log
    line and no traceback, and every request queued for it gets that refusal);
    ``async on_stop(ctx, reason)`` runs after the actor ended, however it ended
    (``stopped``, ``idle``, ``crashed``, ``cancelled``, ``refused``), shielded, within the
    host's shutdown timeout.
    """

    async def handle(self, ctx: ActorContext, message: Any) -> Any: ...


def refusals_of(behaviour: Behaviour) -> tuple[type[Exception], ...]:
    """The exception types *behaviour* answers with instead of crashing."""
    extra: tuple[type[Exception], ...] = getattr(behaviour, "refusals", ())
    return (Refusal, *extra)


@attrs.define(eq=False, slots=True, kw_only=True)
class Actor:
    """The handle of one live (or ended) actor: its pid, name, the send end of its mailbox,
    and its kind's measures (see :mod:`trioshop.runtime.measures`).

    Handles are cheap to keep; sending through the handle of an ended actor raises
    :class:`~trioshop.runtime.errors.ActorEnded`.
    """

    pid: int
    name: str | None
    mailbox: trio.MemorySendChannel[Envelope]
    inbox: trio.MemoryReceiveChannel[Envelope] = attrs.field(repr=False)
    kind: KindMeasures = attrs.field(repr=False)
    started_at: float
    last_message_at: float
    idle_timeout: float | None = None
    busy: bool = True  # starting or handling a message; False only while waiting for mail
    stopping: bool = False
    ended: bool = False
    crashed: bool = False

    @property
    def mailbox_depth(self) -> int:
        """How many messages wait in the mailbox right now."""
        return self.inbox.statistics().current_buffer_used


@attrs.define(eq=False, slots=True, kw_only=True)
class ActorContext:
    """Given to a behaviour with every message: who it is and its own nursery.

    ``nursery`` is the actor's child nursery: helper tasks started there end with the actor,
    and a helper's crash is the actor's crash.
    """

    actor: Actor
    nursery: trio.Nursery
    _stop: Callable[[Actor], None] = attrs.field(repr=False)

    @property
    def pid(self) -> int:
        return self.actor.pid

    @property
    def name(self) -> str | None:
        return self.actor.name

    def stop(self) -> None:
        """End the actor once the current message is handled.

        The name is released at once, so the next lookup-or-spawn for it starts a new actor;
        messages still queued behind this one fail with ``ActorEnded``.
        """
        self._stop(self.actor)
