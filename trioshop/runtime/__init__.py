"""The actor runtime: actor host, mailboxes, request/reply, event bus and supervisor.

Self-contained: it knows nothing of the registry, the shop or the store.
"""

from trioshop.runtime.actor import Actor, ActorContext, Behaviour, Refusal
from trioshop.runtime.bus import (
    BusStatistics,
    Event,
    EventBus,
    SubscriberStatistics,
    Subscription,
    open_event_bus,
)
from trioshop.runtime.errors import (
    ActorCrashed,
    ActorEnded,
    ActorError,
    ActorTimeout,
    HostClosed,
    MailboxFull,
    TooManyActors,
)
from trioshop.runtime.host import ActorHost, open_actor_host
from trioshop.runtime.introspection import ActorInfo, HostStatistics
from trioshop.runtime.measures import HistogramSnapshot, KindStatistics
from trioshop.runtime.nursery import open_service_nursery
from trioshop.runtime.restart import RestartPolicy
from trioshop.runtime.retry import (
    ACTOR_ENDED_ATTEMPTS,
    CONFLICT_ATTEMPTS,
    attempts,
    may_retry,
    thread_deadline,
)
from trioshop.runtime.supervisor import (
    ServiceState,
    ServiceStatus,
    Supervisor,
    open_supervisor,
)
from trioshop.runtime.ticket import Ticket

__all__ = [
    "ACTOR_ENDED_ATTEMPTS",
    "CONFLICT_ATTEMPTS",
    "Actor",
    "ActorContext",
    "ActorCrashed",
    "ActorEnded",
    "ActorError",
    "ActorHost",
    "ActorInfo",
    "ActorTimeout",
    "Behaviour",
    "BusStatistics",
    "Event",
    "EventBus",
    "HistogramSnapshot",
    "HostClosed",
    "HostStatistics",
    "KindStatistics",
    "MailboxFull",
    "Refusal",
    "RestartPolicy",
    "ServiceState",
    "ServiceStatus",
    "SubscriberStatistics",
    "Subscription",
    "Supervisor",
    "Ticket",
    "TooManyActors",
    "attempts",
    "may_retry",
    "open_actor_host",
    "open_event_bus",
    "open_service_nursery",
    "open_supervisor",
    "thread_deadline",
]
