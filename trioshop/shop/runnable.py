"""Whether the shop can run a registry: the entries it needs exist and their code imports."""

from __future__ import annotations

from trioshop.registry import (
    ActorDefinition,
    Registry,
    RegistryError,
    ServiceDefinition,
    load_registry,
    resolve_callable,
)

CART_ACTOR = "cart"  # the process.actor entry whose handler builds each user's cart


def runnable_problems(registry: Registry) -> list[str]:
    """What would stop the shop from running *registry*, each naming file and entry."""
    problems = []
    for what in ("http_service", "router", "process_host"):
        try:
            getattr(registry, what)
        except LookupError as exc:
            problems.append(f"{registry.folder}: {exc}")
    try:
        entries: list[ActorDefinition | ServiceDefinition] = [registry.actor(CART_ACTOR)]
    except LookupError as exc:
        problems.append(f"{registry.folder}: {exc}")
        entries = []
    entries.extend(registry.services)
    for entry in entries:
        reference = entry.handler if isinstance(entry, ActorDefinition) else entry.process
        try:
            resolve_callable(reference)
        except (LookupError, TypeError) as exc:
            problems.append(f"{entry.source}: entry '{entry.id}' ({entry.KIND}): {exc}")
    return problems


def check_runnable(registry: Registry) -> Registry:
    """*registry*, if the shop can run it; else :class:`RegistryError` listing every problem."""
    problems = runnable_problems(registry)
    if problems:
        raise RegistryError(problems)
    return registry


def load_runnable_registry(folder: str) -> Registry:
    """Load *folder* and check the shop can run it; :class:`RegistryError` lists every problem.

    Blocking (reads files, imports modules): call it from a worker thread in async code.
    """
    return check_runnable(load_registry(folder))
