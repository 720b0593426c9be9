"""The errors the actor runtime raises to callers, each saying what the caller can do about it."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every error raised by the actor runtime."""


class HostClosed(ActorError):
    """The actor host is shutting down or shut down; no actor can be spawned or reached.

    Like :class:`trio.ClosedResourceError`: the caller's side is closed, retrying will not help.
    """


class MailboxFull(ActorError):
    """The actor's bounded mailbox is full; the message was not delivered.

    The actor is alive but behind: back off and retry (HTTP answers 503 with Retry-After).
    """


class TooManyActors(ActorError):
    """The host already runs its configured maximum of live actors; retry once some have ended."""


class ActorEnded(ActorError):
    """The actor ended before it handled the message or replied to it.

    Like :class:`trio.BrokenResourceError`: the other side is gone. A caller that needs the
    work done can look the name up again (a new actor may have taken it) and retry.
    """


class ActorCrashed(ActorEnded):
    """The actor raised while handling the message (or before reaching it) and has ended."""


class ActorTimeout(ActorError, TimeoutError):
    """The actor did not reply within the request's deadline.

    Without a :class:`~trioshop.runtime.ticket.Ticket` (``maybe_applied`` is ``None``) the
    actor may still handle the message. With one, ``maybe_applied`` tells the truth:
    ``False`` means the work was abandoned before it started and never happens; ``True``
    means it started and its outcome did not come in time either (it may have happened:
    retry with the same idempotency key).
    """

    def __init__(self, message: str, *, maybe_applied: bool | None = None) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
