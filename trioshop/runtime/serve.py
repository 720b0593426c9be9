"""An actor's message loop: one message at a time, measured, in its sender's trace."""

from __future__ import annotations

import outcome
import trio

from trioshop.runtime.actor import ActorContext, Behaviour, Reply
from trioshop.runtime.tracing import HandlingTracer, end_handling, start_handling

# Put in an idle actor's mailbox by the host to make it end; never seen by behaviours.
PASSIVATE = object()


async def serve(
    ctx: ActorContext,
    behaviour: Behaviour,
    refusals: tuple[type[Exception], ...],
    tracing: HandlingTracer,
) -> str:
    """Hand *behaviour* the actor's messages one at a time until it stops (``stopped``) or the
    host passivates it (``idle``); returns that reason.

    Each message is handled in a span continuing the trace its sender was in, unless
    *tracing* is off (see :mod:`.tracing`), and measured into the actor's kind: its mailbox
    wait, its handling time, and for the first one the actor's activation latency. A request
    gets the behaviour's value, or its refusal; a crash (any other exception) closes the
    caller's reply channel and propagates, as does cancellation.
    """
    actor, inbox, kind = ctx.actor, ctx.actor.inbox, ctx.actor.kind
    now = trio.lowlevel.current_clock().current_time  # trio.current_time() minus two calls
    activated = False
    while not actor.stopping:
        actor.busy = False
        message, reply, parent, enqueued_at = await inbox.receive()
        actor.busy = True
        if message is PASSIVATE:
            return "idle"
        start = actor.last_message_at = now()
        kind.mailbox_wait.observe(start - enqueued_at)
        tracer = tracing.tracer  # None: tracing off, no span at all
        handling = None if tracer is None else start_handling(tracer, actor, message, parent)
        refusal: Exception | None = None
        crash: Exception | None = None
        try:
            result: Reply = outcome.Value(await behaviour.handle(ctx, message))
        except trio.Cancelled:
            if reply is not None:
                reply.close()
            raise
        except Exception as error:
            if not isinstance(error, refusals):
                # Mark the crash before the caller can wake up, then free the caller now.
                crash, actor.crashed = error, True
                if reply is not None:
                    reply.close()
                raise
            refusal, result = error, outcome.Error(error)
        finally:
            done = now()
            kind.handling.observe(done - start)
            if handling is not None:
                end_handling(*handling, refusal=refusal, crash=crash)
        if not activated:
            activated = True
            kind.activation.observe(done - actor.started_at)
        if reply is not None:
            # One reply per channel, so a delivered one needs no close; a caller that gave up
            # waiting has closed its end: the late reply is dropped.
            try:
                reply.send_nowait(result)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                reply.close()
        actor.last_message_at = done  # idle time counts from the answer
        # Hold nothing of this message while waiting for the next: an idle actor would keep
        # its reply channel, the reply and the context alive (1 450 bytes of an idle cart).
        del message, reply, parent, result, handling
    return "stopped"
