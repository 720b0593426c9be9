"""How the cluster stops its child processes (SIGTERM, then SIGKILL) and paces restarting them."""

from __future__ import annotations

import logging
import signal

import attrs
import trio

from trioshop.cluster.children import ChildProcess
from trioshop.config import Settings
from trioshop.logs import log_event
from trioshop.node import stop_bound
from trioshop.runtime.restart import RestartBackoff

logger = logging.getLogger("trioshop.cluster")

# How long a stopping node or proxy may take after SIGTERM before it is killed: the longest a
# node's own stop may take (node.stop_bound: 18 s with the defaults; it usually takes about 1 s),
# and a margin for the process to exit.
STOP_TIMEOUT = stop_bound(Settings()) + 2.0
# Stopping the cluster, the proxy stops accepting first (HAProxy's soft stop, SIGUSR1) and has
# this long to finish the requests it holds (a checkout answers within 5 s) before SIGTERM
# closes what is left, such as live views.
PROXY_DRAIN_TIMEOUT = 10.0
# A process that exits is started again (a node on the same port: the proxy's entry for it
# stays valid) after a delay that doubles with each failure in a row, from RESTART_BACKOFF_FIRST
# up to RESTART_BACKOFF_MAX; one that ran for STABLE_AFTER seconds starts the count again.
RESTART_BACKOFF_FIRST = 0.5
RESTART_BACKOFF_MAX = 15.0
STABLE_AFTER = 30.0
RESTART_BACKOFF = RestartBackoff(
    initial_delay=RESTART_BACKOFF_FIRST, max_delay=RESTART_BACKOFF_MAX, jitter=0.0,
    stable_threshold=STABLE_AFTER,
)

async def stop(
    process: ChildProcess, what: str, *, drain: signal.Signals | None = None,
    hurry: trio.Event | None = None,
) -> None:
    """Stop *process*; runs even while being cancelled.

    With *drain* (HAProxy's SIGUSR1), that signal first, and up to :data:`PROXY_DRAIN_TIMEOUT`
    (cut short by *hurry*) for the process to finish its work and exit; then SIGTERM, and
    SIGKILL after :data:`STOP_TIMEOUT`.
    """
    with trio.CancelScope(shield=True):
        if drain is not None and process.returncode is None:
            process.send_signal(drain)
            log_event(logger, f"{what} draining", pid=process.pid)
            with trio.move_on_after(PROXY_DRAIN_TIMEOUT):
                async with trio.open_nursery() as waiting:
                    if hurry is not None:
                        waiting.start_soon(cancel_when_set, hurry, waiting.cancel_scope)
                    await process.wait()
                    waiting.cancel_scope.cancel()
            if process.returncode is None:
                hurried = hurry is not None and hurry.is_set()
                log_event(
                    logger, f"{what} stopped before it drained", logging.WARNING,
                    after="a second stop signal" if hurried else f"{PROXY_DRAIN_TIMEOUT:g} s",
                )
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                log_event(logger, f"{what} did not stop in time: killed", logging.WARNING)
                process.kill()
                await process.wait()


async def cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@attrs.define
class Backoff:
    """The delays before starting again a process that keeps failing, by
    :data:`RESTART_BACKOFF`."""

    failures: int = 0  # in a row
    _ran_for: float = 0.0  # the longest run that served since the last failure

    def next(self) -> float:
        """The delay before the next start; counts one more failure."""
        self.failures = RESTART_BACKOFF.failures_in_a_row(self.failures, self._ran_for)
        self._ran_for = 0.0
        return RESTART_BACKOFF.delay(self.failures)

    def ran(self, seconds: float) -> None:
        """The process ran (served) for *seconds* before it exited: if long enough, the next
        failure is counted as the first."""
        self._ran_for = max(self._ran_for, seconds)
