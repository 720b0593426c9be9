"""Running a cluster: each node a supervised ``trioshop run`` process, HAProxy in front."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import trio

from trioshop.cluster.children import ChildProcess, start_child
from trioshop.cluster.haproxy import Backend, haproxy_config
from trioshop.cluster.proxy_admin import ProxyAdmin
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.cluster")

# How long a stopping node or proxy may take after SIGTERM before it is killed: a node's own
# graceful shutdown takes up to 5 s.
STOP_TIMEOUT = 10.0
# A node that exits is started again after this pause (on the same port: the proxy's entry
# for it stays valid), and the proxy has this long to accept connections once started.
RESTART_DELAY = 0.5
PROXY_START_TIMEOUT = 10.0
# A rolling restart waits up to DRAIN_TIMEOUT for a drained node's requests in flight to
# finish, up to READY_TIMEOUT for the restarted node to be up at the proxy (its checks need
# two passes), and asks the proxy every PROXY_POLL seconds meanwhile.
DRAIN_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
PROXY_POLL = 0.1


class ClusterError(RuntimeError):
    """The cluster cannot run (no haproxy, the proxy died); the message says what to do."""


@attrs.frozen
class ClusterConfig:
    """What ``trioshop cluster`` was asked for."""

    nodes: int
    bind: str  # the proxy's HOST:PORT
    database: str
    registry: str
    config_path: Path  # where the HAProxy configuration is written
    node_args: tuple[str, ...] = ()  # more ``trioshop run`` options for every node


def free_ports(count: int) -> list[int]:
    """*count* distinct free TCP ports on the loopback interface."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


async def _stop(process: ChildProcess, what: str) -> None:
    """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`; runs even while being cancelled."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                log_event(logger, f"{what} did not stop in time: killed", logging.WARNING)
                process.kill()
                await process.wait()


class _LineForwarder:
    """Prints a node's output line by line with its tag appended; notices when it listens."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.listening = trio.Event()
        self._pending = b""

    def feed(self, chunk: bytes | bytearray) -> None:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            sys.stdout.write(f"{line} {self.tag}\n")
            if "event=listening" in line:
                self.listening.set()
        sys.stdout.flush()

    async def forward(self, stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            self.feed(chunk)

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        """What a stopped node still printed (its shutdown lines), even while cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            async for chunk in stream:
                self.feed(chunk)


@attrs.define(eq=False)
class Node:
    """One node of the cluster: a ``trioshop run`` process kept running, restartable on demand."""

    config: ClusterConfig
    backend: Backend
    _process: ChildProcess | None = None
    _started: trio.Event = attrs.field(factory=trio.Event)  # set when the current one listens

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node for as long as the cluster runs, starting it again whenever it exits.

        Ready once its first process listens. Its output is forwarded with ``node=NAME``
        appended to every line. Cancellation stops the node (SIGTERM, then SIGKILL).
        """
        config, backend = self.config, self.backend
        command = [
            sys.executable, "-m", "trioshop", "run", "--registry", config.registry,
            "--database", config.database, "--bind", backend.address, "--node-id", backend.name,
            *config.node_args,
        ]
        reported = False
        while True:
            process = start_child(
                command, capture_output=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
            self._process = process
            output = _LineForwarder(f"node={backend.name}")
            assert process.stdout is not None
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(output.forward, process.stdout)
                    await output.listening.wait()
                    log_event(
                        logger, "node started", node=backend.name, pid=process.pid,
                        bind=backend.address,
                    )
                    self._started.set()
                    if not reported:
                        reported = True
                        task_status.started()
                    code = await process.wait()
                    log_event(
                        logger, "node exited", logging.WARNING if code else logging.INFO,
                        node=backend.name, pid=process.pid, code=code,
                    )
            finally:
                await _stop(process, f"node {backend.name}")
                await output.drain(process.stdout)
            if self._started.is_set():  # a restart() may already wait on a fresh one
                self._started = trio.Event()
            await trio.sleep(RESTART_DELAY)

    async def restart(self) -> None:
        """Stop the node gracefully (SIGTERM) and return once its next process listens."""
        started = self._started = trio.Event()
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT + READY_TIMEOUT):
            await started.wait()


async def run_proxy(
    config: ClusterConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run HAProxy on the written configuration; ready once it accepts connections.

    Raises :class:`ClusterError` if it exits: without the proxy the cluster is unreachable.
    """
    haproxy = _haproxy()
    process = start_child([haproxy, "-db", "-f", str(config.config_path)])
    try:
        host, _, port = config.bind.rpartition(":")
        with trio.move_on_after(PROXY_START_TIMEOUT) as waiting:
            while True:
                try:
                    stream = await trio.open_tcp_stream(host or "127.0.0.1", int(port))
                except OSError:
                    if process.returncode is not None:
                        break
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        if waiting.cancelled_caught or process.returncode is not None:
            raise ClusterError(
                f"haproxy did not start on {config.bind} (see its message above); "
                "choose another --bind or check the configuration "
                f"with 'haproxy -c -f {config.config_path}'"
            )
        log_event(
            logger, "proxy started", pid=process.pid, bind=config.bind,
            config=str(config.config_path),
        )
        task_status.started()
        code = await process.wait()
        raise ClusterError(f"haproxy exited with status {code}; the cluster stops")
    finally:
        await _stop(process, "proxy")


def _haproxy() -> str:
    found = shutil.which("haproxy")
    if found is None:
        raise ClusterError(
            "haproxy is not installed: install it (Debian/Ubuntu: 'apt-get install haproxy')"
        )
    return found


@attrs.define(eq=False)
class Cluster:
    """N nodes and the proxy in front of them; create it, then :meth:`run` it."""

    config: ClusterConfig
    _nodes: list[Node] = attrs.field(factory=list)
    _admin: ProxyAdmin | None = None
    _rolling: trio.Lock = attrs.field(factory=trio.Lock)

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the nodes, then the proxy in front of them; run until *stop* is set.

        Ready once the proxy accepts connections. The nesting is the shutdown order: the
        proxy stops first (no new requests), then the nodes. Raises :class:`ClusterError`
        when the proxy cannot run.
        """
        config = self.config
        _haproxy()  # fail before starting anything
        ports = free_ports(config.nodes)
        backends = [
            Backend(f"n{number}", number, f"127.0.0.1:{port}")
            for number, port in enumerate(ports, start=1)
        ]
        admin_socket = config.config_path.with_name("haproxy-admin.sock")
        config.config_path.write_text(haproxy_config(config.bind, backends, str(admin_socket)))
        self._admin = ProxyAdmin(str(admin_socket))
        async with trio.open_nursery() as nodes:
            for backend in backends:
                node = Node(config, backend)
                self._nodes.append(node)
                await nodes.start(node.run)
            async with trio.open_nursery() as proxy:
                await proxy.start(run_proxy, config)
                log_event(logger, "cluster ready", nodes=config.nodes, bind=config.bind)
                task_status.started()
                await stop.wait()
                proxy.cancel_scope.cancel()
            nodes.cancel_scope.cancel()
        log_event(logger, "cluster stopped")

    async def rolling_restart(self) -> None:
        """Restart every node, one at a time, without failing a request.

        Each node is drained at the proxy first (no new requests; its users go to the other
        nodes, which reload their carts from the database), and stopped only once no request
        is in flight on it; it stops gracefully (its carts are durable already), starts,
        and is taken back only once ready, and the next node waits until the proxy sees it
        up. A restart already under way makes another request wait for it.
        """
        admin = self._admin
        if admin is None:
            raise ClusterError("the cluster is not running")
        async with self._rolling:
            log_event(logger, "rolling restart started", nodes=len(self._nodes))
            for node in self._nodes:
                name = node.backend.name
                await admin.set_state(name, "drain")

                async def idle(name: str = name) -> bool:
                    return not int((await admin.server(name)).get("scur") or 0)

                async def up(name: str = name) -> bool:
                    return (await admin.server(name)).get("status", "").startswith("UP")

                await _poll_proxy(idle, DRAIN_TIMEOUT)
                await admin.set_state(name, "maint")
                await node.restart()
                await admin.set_state(name, "ready")
                await _poll_proxy(up, READY_TIMEOUT)
                log_event(logger, "node restarted", node=name)
            log_event(logger, "rolling restart done", nodes=len(self._nodes))


async def _poll_proxy(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Ask the proxy until *condition* holds; ``trio.TooSlowError`` after *timeout*.

    Polling, because the state lives in another process that pushes no notice of it.
    """
    with trio.fail_after(timeout):
        while True:
            if await condition():
                return
            await trio.sleep(PROXY_POLL)


def node_arguments(text: str) -> Sequence[str]:
    """``--node-args`` split like a shell would."""
    return shlex.split(text)
