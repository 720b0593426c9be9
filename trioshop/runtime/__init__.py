"""The actor runtime: actor host, mailboxes, request/reply, event bus and supervisor."""

from trioshop.runtime.actor import Actor, ActorContext, Behaviour, Refusal
from trioshop.runtime.bus import Event, EventBus, Subscription, open_event_bus
from trioshop.runtime.errors import (
    ActorCrashed,
    ActorEnded,
    ActorError,
    ActorTimeout,
    HostClosed,
    MailboxFull,
    TooManyActors,
)
from trioshop.runtime.host import ActorHost, ActorInfo, open_actor_host
from trioshop.runtime.supervisor import (
    ServiceState,
    ServiceStatus,
    Supervisor,
    open_supervisor,
)

__all__ = [
    "Actor",
    "ActorContext",
    "ActorCrashed",
    "ActorEnded",
    "ActorError",
    "ActorHost",
    "ActorInfo",
    "ActorTimeout",
    "Behaviour",
    "Event",
    "EventBus",
    "HostClosed",
    "MailboxFull",
    "Refusal",
    "ServiceState",
    "ServiceStatus",
    "Subscription",
    "Supervisor",
    "TooManyActors",
    "open_actor_host",
    "open_event_bus",
    "open_supervisor",
]
