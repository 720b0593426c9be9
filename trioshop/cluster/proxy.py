"""HAProxy's process in front of the nodes: started, watched until it accepts, drained."""

from __future__ import annotations

import contextlib
import logging
import os
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

# The proxy has PROXY_START_TIMEOUT to listen, checked every PROXY_POLL seconds.
PROXY_START_TIMEOUT = 10.0
PROXY_POLL = 0.05


@attrs.define(eq=False)
class Proxy:
    """HAProxy in front of the nodes, kept running."""

    config: ClusterConfig
    hurry: trio.Event = attrs.field(factory=trio.Event)  # set: stop without draining

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run HAProxy on the written configuration for as long as the cluster runs.

        Ready once it listens on the bind address (it, not another program on that port);
        raises :class:`ClusterError` if the first one does not, in one line: the port is in
        use by another program, or HAProxy's own message above says why. One that exits
        later is started again with :class:`Backoff`, each time logged. Cancellation drains
        it: it stops accepting, finishes its requests (up to :data:`PROXY_DRAIN_TIMEOUT`, cut
        short by :attr:`hurry`), then exits.
        """
        config = self.config
        haproxy = haproxy_path()
        backoff = Backoff()
        started = False
        while True:
            process = start_child([haproxy, "-db", "-f", str(config.config_path)])
            try:
                accepting = await _listening(process, config.bind)
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
                    raise ClusterError(await _start_failure(process, config))
            finally:
                await stop(process, "proxy", drain=signal.SIGUSR1, hurry=self.hurry)
            delay = backoff.next()
            if not accepting:
                log_event(
                    logger, "proxy restart failed", logging.ERROR, code=process.returncode,
                    reason="see its message above", retry_in=delay,
                )
            await trio.sleep(delay)


async def _listening(process: ChildProcess, bind: str) -> bool:
    """Whether *process* itself listens on *bind* within :data:`PROXY_START_TIMEOUT` (False
    once it exited). Polls: HAProxy says nothing when it listens. Another program holding
    the port does not count (HAProxy then exits: it cannot bind)."""
    host, port = _connectable(bind)
    with trio.move_on_after(PROXY_START_TIMEOUT):
        while process.returncode is None:
            if await _listens(process, host, port):
                return True
            await trio.sleep(PROXY_POLL)
    return False


def _connectable(bind: str) -> tuple[str, int]:
    """The host and port to connect to for *bind* (``HOST:PORT``; no host: this machine)."""
    host, _, port = bind.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _listens(process: ChildProcess, host: str, port: int) -> bool:
    """Whether *process* holds a socket listening on *port*: read from ``/proc`` (Linux);
    elsewhere, whether a connection to *host* is accepted while *process* still runs."""
    inodes = _listening_sockets(port)
    if inodes is not None:
        return bool(inodes & _sockets_of(process.pid))
    if not await _accepts(host, port):
        return False
    await trio.sleep(PROXY_POLL)  # a HAProxy that could not bind exits within this
    return process.returncode is None


async def _accepts(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection on *host*:*port*."""
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True


# /proc is kernel memory: reading it never waits on a device, so no thread hop below.
def _listening_sockets(port: int) -> set[str] | None:
    """The inodes of the TCP sockets (IPv4 and IPv6) listening on *port*; ``None`` without
    ``/proc/net`` (not Linux)."""
    found: set[str] | None = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.readlines()[1:]
        except OSError:
            continue
        found = found or set()
        for line in lines:
            # sl local_address rem_address st ... inode: ports in hex, 0A is LISTEN
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                found.add(fields[9])
    return found


def _sockets_of(pid: int) -> set[str]:
    """The inodes of the sockets process *pid* holds open (empty once it is gone)."""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    inodes = set()
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"{folder}/{name}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


async def _start_failure(process: ChildProcess, config: ClusterConfig) -> str:
    """Why HAProxy did not start (it has exited, or did not listen in time), in one line
    saying what to do."""
    bind = config.bind
    host, port = _connectable(bind)
    await stop(process, "proxy")
    if await _accepts(host, port):
        return (
            f"port {port} ({bind}) is in use by another program: stop it, or give the "
            "cluster another --bind"
        )
    return (
        f"haproxy did not start on {bind} (see its message above); choose another --bind or "
        f"check the configuration with 'haproxy -c -f {config.config_path}'"
    )


def haproxy_path() -> str:
    found = shutil.which("haproxy")
    if found is None:
        raise ClusterError(
            "haproxy is not installed: install it (Debian/Ubuntu: 'apt-get install haproxy')"
        )
    return found
