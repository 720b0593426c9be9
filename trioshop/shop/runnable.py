"""Whether the shop can run a registry: the entries it needs exist and their code is usable."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Iterable

from trioshop.registry import (
    ActorDefinition,
    Entry,
    Registry,
    RegistryError,
    ServiceDefinition,
    load_registry,
    resolve_callable,
)
from trioshop.runtime import Behaviour, EventBus
from trioshop.shop.cart_actor import CartDeps
from trioshop.store import MemoryStore

CART_ACTOR = "cart"  # the process.actor entry whose handler builds each user's cart


def _at(entry: Entry) -> str:
    return f"{entry.source}: entry '{entry.id}' ({entry.KIND})"


def _cart_problem(entry: ActorDefinition) -> str | None:
    """Why *entry*'s handler is not a cart behaviour factory, or ``None``.

    The factory is called once with throw-away dependencies: building a behaviour must be
    cheap and side-effect free, and what it returns must have an ``async handle``.
    """
    try:
        factory = resolve_callable(entry.handler)
        behaviour = factory("registry-check", CartDeps(EventBus(), MemoryStore()))
    except Exception as exc:
        return f"{_at(entry)}: handler {entry.handler!r}: {type(exc).__name__}: {exc}"
    if not isinstance(behaviour, Behaviour) or not inspect.iscoroutinefunction(
        behaviour.handle
    ):
        return (
            f"{_at(entry)}: handler {entry.handler!r} must return a behaviour (an object with "
            f"'async def handle(ctx, message)'), it returned {type(behaviour).__name__}"
        )
    return None


def _service_problem(entry: ServiceDefinition) -> str | None:
    """Why *entry*'s process cannot be supervised, or ``None``."""
    try:
        target = resolve_callable(entry.process)
    except (LookupError, TypeError) as exc:
        return f"{_at(entry)}: {exc}"
    if not inspect.iscoroutinefunction(target):
        return (
            f"{_at(entry)}: process {entry.process!r} must be an async function "
            "'async def run(ctx, *, task_status)'"
        )
    return None


def runnable_problems(registry: Registry) -> list[str]:
    """What would stop the shop from running *registry*, each naming file and entry."""
    problems = []
    for what in ("http_service", "router", "process_host"):
        try:
            getattr(registry, what)
        except LookupError as exc:
            problems.append(f"{registry.folder}: {exc}")
    by_name: defaultdict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in [*registry.find(of_type=ActorDefinition), *registry.services]:
        by_name[entry.KIND, entry.name].append(entry)
    for (kind, name), entries in by_name.items():
        if len(entries) > 1:
            where = ", ".join(f"'{e.id}' ({e.source})" for e in entries)
            problems.append(
                f"{entries[1].source}: {kind} entries {where} share the name {name!r}; "
                "names must be unique across namespaces"
            )
    try:
        registry.actor(CART_ACTOR)
    except LookupError as exc:
        problems.append(f"{registry.folder}: {exc}")
    return problems + _code_problems(registry)


def _code_problems(entries: Iterable[Entry]) -> list[str]:
    """Why the code that *entries* name (the cart's factory, the services' processes) is not
    usable, one line per entry."""
    entries = list(entries)
    carts = [e for e in entries if isinstance(e, ActorDefinition) and e.name == CART_ACTOR]
    found = [_cart_problem(cart) for cart in carts[:1]]
    found += [_service_problem(e) for e in entries if isinstance(e, ServiceDefinition)]
    return [problem for problem in found if problem is not None]


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
    try:
        registry = load_registry(folder)
    except RegistryError as exc:  # list the code's problems of the valid entries too
        raise RegistryError([*exc.problems, *_code_problems(exc.entries)], exc.entries) from None
    return check_runnable(registry)
