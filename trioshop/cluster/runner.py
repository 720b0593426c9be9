"""Running a cluster: each node a supervised ``trioshop run`` process, HAProxy in front."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from trioshop.cluster.haproxy import Backend, haproxy_config
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.cluster")

# How long a stopping node or proxy may take after SIGTERM before it is killed: a node's own
# graceful shutdown takes up to 5 s.
STOP_TIMEOUT = 10.0
# A node that exits is started again after this pause (on the same port: the proxy's entry
# for it stays valid), and the proxy has this long to accept connections once started.
RESTART_DELAY = 0.5
PROXY_START_TIMEOUT = 10.0


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


async def _stop(process: trio.Process, what: str) -> None:
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


async def supervise_node(
    config: ClusterConfig,
    backend: Backend,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node for as long as the cluster runs, starting it again whenever it exits.

    Ready once the node's first process listens. Its output is forwarded with ``node=NAME``
    appended to every line. Cancellation stops the node (SIGTERM, then SIGKILL).
    """
    command = [
        sys.executable, "-m", "trioshop", "run", "--registry", config.registry,
        "--database", config.database, "--bind", backend.address, "--node-id", backend.name,
        *config.node_args,
    ]
    reported = False
    while True:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
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
                if not reported:
                    reported = True
                    task_status.started()
                code = await process.wait()
                log_event(
                    logger, "node exited", logging.WARNING, node=backend.name,
                    pid=process.pid, code=code,
                )
        finally:
            await _stop(process, f"node {backend.name}")
            await output.drain(process.stdout)
        await trio.sleep(RESTART_DELAY)


async def run_proxy(
    config: ClusterConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run HAProxy on the written configuration; ready once it accepts connections.

    Raises :class:`ClusterError` if it exits: without the proxy the cluster is unreachable.
    """
    haproxy = _haproxy()
    process = await trio.lowlevel.open_process([haproxy, "-db", "-f", str(config.config_path)])
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


async def run_cluster(config: ClusterConfig, stop: trio.Event) -> None:
    """Start the nodes, then the proxy in front of them; run until *stop* is set.

    The nesting is the shutdown order: the proxy stops first (no new requests), then the
    nodes. Raises :class:`ClusterError` when the proxy cannot run.
    """
    _haproxy()  # fail before starting anything
    ports = free_ports(config.nodes)
    backends = [
        Backend(f"n{number}", number, f"127.0.0.1:{port}")
        for number, port in enumerate(ports, start=1)
    ]
    config.config_path.write_text(haproxy_config(config.bind, backends))
    async with trio.open_nursery() as nodes:
        for backend in backends:
            await nodes.start(supervise_node, config, backend)
        async with trio.open_nursery() as proxy:
            await proxy.start(run_proxy, config)
            log_event(logger, "cluster ready", nodes=config.nodes, bind=config.bind)
            await stop.wait()
            proxy.cancel_scope.cancel()
        nodes.cancel_scope.cancel()
    log_event(logger, "cluster stopped")


def node_arguments(text: str) -> Sequence[str]:
    """``--node-args`` split like a shell would."""
    return shlex.split(text)
