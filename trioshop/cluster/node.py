"""One node of the cluster: a ``trioshop run`` process kept running, restartable on demand."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

import attrs
import trio

from trioshop import events
from trioshop.cluster.children import ChildProcess, start_child
from trioshop.cluster.config import NODE_HOST, ClusterConfig, NodeStartError
from trioshop.cluster.console import OUTPUT_DRAIN_TIMEOUT, NodeOutput, exit_reason
from trioshop.cluster.haproxy import Backend
from trioshop.cluster.supervision import RESTART_BACKOFF_MAX, STOP_TIMEOUT, Backoff, stop
from trioshop.config import ADMIN_TOKEN_ENV
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.cluster")

# A node has NODE_START_TIMEOUT to listen with its shop started.
NODE_START_TIMEOUT = 60.0


@attrs.frozen
class _Exit:
    """How one process of a node ended."""

    served: bool  # it served before it exited
    pid: int
    code: int | None
    reason: str  # why, in one line


@attrs.define(eq=False)
class _NextStart:
    """What a :meth:`Node.restart` waits for: the outcome of the node's next start."""

    done: trio.Event = attrs.field(factory=trio.Event)
    failure: str | None = None  # the reason it did not serve

    def resolve(self, failure: str | None) -> None:
        self.failure = failure
        self.done.set()


@attrs.define(eq=False)
class Node:
    """One node of the cluster: a ``trioshop run`` process kept running, restartable on demand."""

    config: ClusterConfig
    backend: Backend
    _process: ChildProcess | None = None
    _waiting: list[_NextStart] = attrs.field(factory=list)  # restarts waiting for a start
    _restart_requested: bool = False  # the current process was stopped to be restarted

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node for as long as the cluster runs, starting it again whenever it exits.

        Ready once its first process serves (its shop started and it listens). Raises
        :class:`NodeStartError` if that first process exits before, or does not serve within
        :data:`NODE_START_TIMEOUT`: a failure such as a wrong database URL would never go
        away. Later starts that fail are retried with :class:`Backoff`, each failure logged
        with the node's reason. Its output is forwarded with ``node=NAME`` appended to every
        line. Cancellation stops the node (SIGTERM, then SIGKILL).
        """
        name = self.backend.name
        backoff = Backoff()
        served_once = False
        while True:
            waiting, self._waiting = self._waiting, []
            self._restart_requested = False
            started_at = trio.current_time()

            def serving(process: ChildProcess, waiting: list[_NextStart] = waiting) -> None:
                nonlocal served_once, started_at
                log_event(
                    logger, events.NODE_STARTED, node=name, pid=process.pid,
                    bind=self.backend.address,
                )
                started_at = trio.current_time()
                for each in waiting:
                    each.resolve(None)
                if not served_once:
                    served_once = True
                    task_status.started()

            ended = await self._run_once(serving)
            served, reason = ended.served, ended.reason
            requested = self._restart_requested
            if served:
                log_event(
                    logger, events.NODE_EXITED, logging.INFO if requested else logging.WARNING,
                    node=name, pid=ended.pid, code=ended.code, reason=reason,
                )
                backoff.ran(trio.current_time() - started_at)
            elif not served_once:
                raise NodeStartError(name, reason)
            elif requested:  # stopped while starting, by a restart: it waits for the next
                self._waiting[:0] = waiting
            else:
                for each in waiting:
                    each.resolve(reason)
            if requested:
                continue
            delay = backoff.next()
            if not served:
                log_event(
                    logger, events.NODE_RESTART_FAILED, logging.ERROR, node=name, code=ended.code,
                    reason=reason, retry_in=delay,
                )
            await trio.sleep(delay)

    async def _run_once(self, serving: Callable[[ChildProcess], None]) -> _Exit:
        """Start one process and run it until it exits: whether it served, its exit status
        and the reason it exited. Calls *serving* once it serves."""
        config, backend = self.config, self.backend
        command = [
            sys.executable, "-m", "trioshop", "run", "--registry", config.registry,
            "--database", config.database, "--bind", backend.address, "--node-id", backend.name,
            "--trusted-proxy", NODE_HOST, *config.node_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop(ADMIN_TOKEN_ENV, None)
        if config.admin_token is not None:
            env[ADMIN_TOKEN_ENV] = config.admin_token
        process = start_child(command, capture_output=True, env=env)
        self._process = process
        output = NodeOutput(backend.name)
        assert process.stdout is not None
        timed_out = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(output.forward, process.stdout)
                with trio.move_on_after(NODE_START_TIMEOUT):
                    await output.settled.wait()
                if output.serving:
                    serving(process)
                timed_out = not output.settled.is_set()
                if timed_out:
                    await stop(process, f"node {backend.name}")
                await process.wait()
                with trio.move_on_after(OUTPUT_DRAIN_TIMEOUT):
                    await output.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            await stop(process, f"node {backend.name}")
            await output.drain(process.stdout)
        code = process.returncode
        reason = exit_reason(code, output.trailing)
        if timed_out:
            reason = f"it did not serve within {NODE_START_TIMEOUT:g} s ({reason})"
        return _Exit(output.serving, process.pid, code, reason)

    async def restart(self) -> None:
        """Stop the node gracefully (SIGTERM) and return once its next process serves.

        Raises :class:`NodeStartError` with the node's reason if that process exits before it
        serves, or if none serves in time (the node goes on retrying meanwhile).
        """
        next_start = _NextStart()
        self._waiting.append(next_start)
        self._restart_requested = True
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        limit = STOP_TIMEOUT + RESTART_BACKOFF_MAX + NODE_START_TIMEOUT
        with trio.move_on_after(limit):
            await next_start.done.wait()
            if next_start.failure is not None:
                raise NodeStartError(self.backend.name, next_start.failure)
            return
        raise NodeStartError(self.backend.name, f"it did not serve again within {limit:g} s")
