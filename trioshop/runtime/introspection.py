"""Snapshots of an actor host for introspection: its live actors, and its totals since it opened."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import attrs
import trio

from trioshop.runtime.actor import Actor
from trioshop.runtime.measures import KindStatistics


@attrs.frozen(kw_only=True)
class ActorInfo:
    """A snapshot of one live actor, for introspection."""

    pid: int
    name: str | None
    mailbox_depth: int
    age: float
    last_message_age: float


@attrs.define
class HostCounters:
    """A host's totals since it opened, counted as they happen."""

    spawned: int = 0
    ended: int = 0
    crashed: int = 0
    timeouts: int = 0


@attrs.frozen(kw_only=True)
class HostStatistics:
    """A snapshot of the host: live actors now, totals since it opened, and per actor kind
    (``cart`` for ``cart:<user>``) its mailbox wait, handling and activation histograms."""

    live: int
    max_mailbox_depth: int  # the deepest mailbox among live actors
    spawned: int
    ended: int
    crashed: int
    passivated: int  # ended after their idle timeout, every kind's summed
    timeouts: int  # request/reply deadlines missed
    kinds: tuple[KindStatistics, ...]  # by kind name


def actor_infos(actors: Iterable[Actor], limit: int | None = None) -> list[ActorInfo]:
    """A snapshot of *actors* (the first *limit* of them), in their order."""
    now = trio.current_time()
    return [
        ActorInfo(
            pid=a.pid, name=a.name, mailbox_depth=a.mailbox_depth, age=now - a.started_at,
            last_message_age=now - a.last_message_at,
        )
        for a in itertools.islice(actors, limit)
    ]


def host_statistics(
    actors: Iterable[Actor], counters: HostCounters, kinds: tuple[KindStatistics, ...]
) -> HostStatistics:
    """The live *actors*' count and deepest mailbox (0 when none waits), with *counters* and
    the *kinds*' statistics (every actor has a kind, so their passivations sum to the host's)."""
    live = list(actors)
    c = counters
    return HostStatistics(
        live=len(live), max_mailbox_depth=max((a.mailbox_depth for a in live), default=0),
        spawned=c.spawned, ended=c.ended, crashed=c.crashed,
        passivated=sum(k.passivated for k in kinds),
        timeouts=c.timeouts, kinds=kinds,
    )
