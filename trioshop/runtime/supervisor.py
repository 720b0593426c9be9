"""The supervisor: runs long-lived services and restarts the ones that fail, with backoff."""

from __future__ import annotations

import contextvars
import enum
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from trioshop import events
from trioshop.logs import log_event
from trioshop.runtime.nursery import open_service_nursery
from trioshop.runtime.restart import RestartPolicy

logger = logging.getLogger("trioshop.supervisor")

# A service: ``async def run(*args, task_status)`` calling ``task_status.started()`` when ready.
ServiceTarget = Callable[..., Awaitable[Any]]


class ServiceStatus(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"  # gave up after max_attempts failures


@attrs.define(kw_only=True)
class ServiceState:
    """What the supervisor knows of one service, kept current while it runs."""

    name: str
    status: ServiceStatus = ServiceStatus.STARTING
    restarts: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    started_at: float | None = None


class _Readiness:
    """The ``task_status`` a service gets: records readiness, tells the supervisor once."""

    def __init__(self, state: ServiceState, on_first_ready: Callable[[], None]) -> None:
        self._state = state
        self._on_first_ready = on_first_ready

    def started(self, value: object = None) -> None:
        self._state.status = ServiceStatus.RUNNING
        self._on_first_ready()


@attrs.define
class Supervisor:
    """Keeps services running in its nursery; create it with :func:`open_supervisor`.

    A service that raises is restarted after ``policy.delay(n)`` seconds for its n-th
    consecutive failure; a run that lasted ``stable_threshold`` resets n. After
    ``max_attempts`` consecutive failures the service is left ``FAILED``. A service that
    returns is ``STOPPED`` and not restarted. Cancellation is shutdown, never a failure.
    """

    _nursery: trio.Nursery
    _rng: random.Random = attrs.field(factory=random.Random)
    _states: dict[str, ServiceState] = attrs.field(factory=dict)
    _scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    _ended: dict[str, trio.Event] = attrs.field(factory=dict)
    _context: contextvars.Context = attrs.field(factory=contextvars.copy_context)

    async def start(
        self, name: str, target: ServiceTarget, policy: RestartPolicy, *args: Any
    ) -> ServiceState:
        """Supervise ``target(*args, task_status=...)`` under *name*.

        Returns once the service reported ready, or once its first attempt failed (it is then
        retried in the background), so a broken service never blocks startup.

        The service runs in the supervisor's own context (captured when it opened), whoever
        starts it: a service restarted by an admin request never carries that request's
        context variables (its request id). That is why readiness is an event here rather
        than ``nursery.start``, which would run the task in the caller's context.
        """
        if name in self._states:
            raise ValueError(f"a service named {name!r} is already supervised")
        state = ServiceState(name=name)
        self._states[name] = state
        self._scopes[name] = trio.CancelScope()
        self._ended[name] = trio.Event()
        ready = trio.Event()
        self._context.run(
            self._nursery.start_soon, self._supervise, state, target, policy, args, ready.set
        )
        await ready.wait()
        return state

    async def stop(self, name: str) -> None:
        """Cancel the service *name* (whatever its state) and return once it has ended.

        Its name is free again afterwards. Raises :class:`KeyError` for an unknown name.
        """
        self._scopes[name].cancel()
        await self._ended[name].wait()
        del self._states[name], self._scopes[name], self._ended[name]

    def statistics(self) -> tuple[ServiceState, ...]:
        """A snapshot (copies) of every supervised service's state, in start order."""
        return tuple(attrs.evolve(state) for state in self._states.values())

    @property
    def failed(self) -> list[str]:
        """Names of the services the supervisor gave up on."""
        return [s.name for s in self._states.values() if s.status is ServiceStatus.FAILED]

    async def _supervise(
        self,
        state: ServiceState,
        target: ServiceTarget,
        policy: RestartPolicy,
        args: tuple[Any, ...],
        report_ready: Callable[[], None],
    ) -> None:
        try:
            with self._scopes[state.name]:
                while True:
                    state.status = ServiceStatus.STARTING
                    state.started_at = trio.current_time()
                    try:
                        await target(*args, task_status=_Readiness(state, report_ready))
                    except Exception as exc:
                        ran_for = trio.current_time() - state.started_at
                        state.failures += 1
                        state.consecutive_failures = policy.failures_in_a_row(
                            state.consecutive_failures, ran_for
                        )
                        state.last_error = repr(exc)
                        log_event(
                            logger, events.SERVICE_CRASHED, logging.ERROR, service=state.name,
                            attempt=state.consecutive_failures,
                            max_attempts=policy.max_attempts, error=repr(exc), exc_info=exc,
                        )
                    else:
                        state.status = ServiceStatus.STOPPED
                        log_event(logger, "service stopped", service=state.name)
                        report_ready()
                        break
                    report_ready()
                    if state.consecutive_failures >= policy.max_attempts:
                        state.status = ServiceStatus.FAILED
                        log_event(
                            logger, "service failed: giving up", logging.ERROR,
                            service=state.name, failures=state.consecutive_failures,
                            last_error=state.last_error,
                        )
                        break
                    delay = policy.delay(state.consecutive_failures, self._rng.uniform(-1.0, 1.0))
                    state.status = ServiceStatus.BACKOFF
                    log_event(
                        logger, "service restarting", service=state.name, delay=round(delay, 3)
                    )
                    await trio.sleep(delay)
                    state.restarts += 1
        finally:
            if state.status is not ServiceStatus.FAILED:
                state.status = ServiceStatus.STOPPED
            self._ended[state.name].set()
        report_ready()  # stopped before it ever became ready


@asynccontextmanager
async def open_supervisor(rng: random.Random | None = None) -> AsyncIterator[Supervisor]:
    """A :class:`Supervisor` with its own nursery; leaving the block cancels every service."""
    async with open_service_nursery() as nursery:
        yield Supervisor(nursery, rng or random.Random())
