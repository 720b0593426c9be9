"""HAProxy's process in front of the nodes: started, watched until it accepts, drained."""

from __future__ import annotations

import logging
import shutil
import signal

import attrs
import trio

from trioshop import events
from trioshop.cluster.children import ChildProcess, start_child
from trioshop.cluster.config import ClusterConfig, ClusterError
from trioshop.cluster.supervision import Backoff, stop
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.cluster")

# The proxy has PROXY_START_TIMEOUT to accept connections.
PROXY_START_TIMEOUT = 10.0


@attrs.define(eq=False)
class Proxy:
    """HAProxy in front of the nodes, kept running."""

    config: ClusterConfig
    hurry: trio.Event = attrs.field(factory=trio.Event)  # set: stop without draining

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run HAProxy on the written configuration for as long as the cluster runs.

        Ready once it accepts connections; raises :class:`ClusterError` if the first one does
        not (the port is taken, the configuration is wrong). One that exits later is started
        again with :class:`Backoff`, each time logged. Cancellation drains it: it stops
        accepting, finishes its requests (up to :data:`PROXY_DRAIN_TIMEOUT`, cut short by
        :attr:`hurry`), then exits.
        """
        config = self.config
        haproxy = haproxy_path()
        backoff = Backoff()
        started = False
        while True:
            process = start_child([haproxy, "-db", "-f", str(config.config_path)])
            try:
                accepting = await _accepting(process, config.bind)
                if accepting:
                    log_event(
                        logger, events.PROXY_STARTED, pid=process.pid, bind=config.bind,
                        config=str(config.config_path),
                    )
                    if not started:
                        started = True
                        task_status.started()
                    since = trio.current_time()
                    code = await process.wait()
                    log_event(
                        logger, events.PROXY_EXITED, logging.WARNING, pid=process.pid, code=code
                    )
                    backoff.ran(trio.current_time() - since)
                elif not started:
                    raise ClusterError(
                        f"haproxy did not start on {config.bind} (see its message above); "
                        "choose another --bind or check the configuration "
                        f"with 'haproxy -c -f {config.config_path}'"
                    )
            finally:
                await stop(process, "proxy", drain=signal.SIGUSR1, hurry=self.hurry)
            delay = backoff.next()
            if not accepting:
                log_event(
                    logger, "proxy restart failed", logging.ERROR, code=process.returncode,
                    reason="see its message above", retry_in=delay,
                )
            await trio.sleep(delay)


async def _accepting(process: ChildProcess, bind: str) -> bool:
    """Whether *process* accepts connections on *bind* within :data:`PROXY_START_TIMEOUT`
    (False once it exited). Polls: HAProxy says nothing when it listens."""
    host, _, port = bind.rpartition(":")
    with trio.move_on_after(PROXY_START_TIMEOUT):
        while process.returncode is None:
            try:
                stream = await trio.open_tcp_stream(host or "127.0.0.1", int(port))
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return True
    return False


def haproxy_path() -> str:
    found = shutil.which("haproxy")
    if found is None:
        raise ClusterError(
            "haproxy is not installed: install it (Debian/Ubuntu: 'apt-get install haproxy')"
        )
    return found
