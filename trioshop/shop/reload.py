"""What a registry reload changes: which services to restart, start and stop, and what needs
a server restart instead. Pure: the shop applies the plan."""

from __future__ import annotations

import attrs

from trioshop.config import Settings
from trioshop.registry import Registry


@attrs.frozen
class ReloadPlan:
    """The services a switch from one registry to another touches, by name, sorted."""

    restart: list[str]  # defined in both, changed
    start: list[str]  # new
    stop: list[str]  # gone
    restart_required: list[str]  # what only a server restart applies, as sentences


@attrs.frozen
class ReloadReport:
    """What a registry reload changed."""

    version: str
    products: int
    services_restarted: list[str]
    services_started: list[str]
    services_stopped: list[str]
    restart_required: list[str]


def plan_reload(old: Registry, new: Registry, settings: Settings) -> ReloadPlan:
    """The plan for switching from *old* to *new* (both runnable) on a node run with
    *settings*: a service those settings leave off (``enabled_by``) is in neither, so editing
    its entry restarts nothing and is not reported as a restart."""
    restart_required = [
        f"{what} changed: restart the server to apply it"
        for what, before, after in [
            ("http.service addr", old.http_service.addr, new.http_service.addr),
            ("http.router prefix", old.router.prefix, new.router.prefix),
            ("process.host workers", old.process_host.workers, new.process_host.workers),
        ]
        if before != after
    ]
    before = {s.name: s for s in old.services if s.enabled(settings)}
    after = {s.name: s for s in new.services if s.enabled(settings)}
    return ReloadPlan(
        restart=sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
        start=sorted(after.keys() - before.keys()),
        stop=sorted(before.keys() - after.keys()),
        restart_required=restart_required,
    )
