"""Running a cluster: each node a supervised ``trioshop run`` process, HAProxy in front."""

from __future__ import annotations

import logging
import os
import re
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
from trioshop.cluster.haproxy import CHECK_INTERVAL, HEALTH_CHECK_PATH, Backend, haproxy_config
from trioshop.cluster.proxy_admin import ProxyAdmin
from trioshop.config import ADMIN_TOKEN_ENV
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.cluster")

# How long a stopping node or proxy may take after SIGTERM before it is killed: a node's own
# graceful shutdown takes up to 5 s.
STOP_TIMEOUT = 10.0
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
# A node has NODE_START_TIMEOUT to listen with its shop started, the proxy PROXY_START_TIMEOUT
# to accept connections; a stopped process has OUTPUT_DRAIN_TIMEOUT to finish printing.
NODE_START_TIMEOUT = 60.0
PROXY_START_TIMEOUT = 10.0
OUTPUT_DRAIN_TIMEOUT = 1.0
# A rolling restart waits up to DRAIN_TIMEOUT for a drained node's requests in flight to
# finish, up to READY_TIMEOUT for the restarted node to be up at the proxy (its checks need
# two passes), and asks the proxy every PROXY_POLL seconds meanwhile.
DRAIN_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
PROXY_POLL = 0.1
# A node's reason for exiting: the lines it printed after its last log line, this long at most.
REASON_MAX_CHARS = 500


class ClusterError(RuntimeError):
    """The cluster cannot run (no haproxy, a node that cannot start); the message says why."""


class NodeStartError(ClusterError):
    """A node's process exited, or did not serve in time, before it served; with its reason."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node} could not start: {reason}")
        self.node = node
        self.reason = reason


@attrs.frozen
class ClusterConfig:
    """What ``trioshop cluster`` was asked for."""

    nodes: int
    bind: str  # the proxy's HOST:PORT
    database: str
    registry: str
    config_path: Path  # where the HAProxy configuration is written
    node_args: tuple[str, ...] = ()  # more ``trioshop run`` options for every node
    # Given to every node in its environment (never on its command line, which ps shows).
    admin_token: str | None = attrs.field(default=None, repr=False)
    api_prefix: str = "/api"  # the registry's http.router prefix: where the proxy finds users


# Where the nodes listen and where HAProxy connects to them from: the one peer whose
# X-Forwarded-For a node believes.
NODE_HOST = "127.0.0.1"


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


async def _stop(
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
                        waiting.start_soon(_cancel_when_set, hurry, waiting.cancel_scope)
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


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@attrs.define
class Backoff:
    """Delays before starting a process that keeps failing again: doubling, capped."""

    failures: int = 0

    def next(self) -> float:
        """The delay before the next start; counts one more failure."""
        delay = min(RESTART_BACKOFF_FIRST * (1 << min(self.failures, 32)), RESTART_BACKOFF_MAX)
        self.failures += 1
        return delay

    def ran(self, seconds: float) -> None:
        """A process ran for *seconds* before it exited: long enough, and the count starts
        again."""
        if seconds >= STABLE_AFTER:
            self.failures = 0


def exit_reason(code: int | None, lines: Sequence[str]) -> str:
    """Why a process exited, in one line: what it printed after its last log line (its
    error), else its exit status."""
    message = " | ".join(line.strip() for line in lines if line.strip())
    message = message.removeprefix("trioshop: ")
    if not message:
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"
    if len(message) > REASON_MAX_CHARS:  # its first line says what, its last how it ended
        half = REASON_MAX_CHARS // 2
        message = f"{message[:half]} ... {message[-half:]}"
    return message


# The access line of one of HAProxy's health checks (every CHECK_INTERVAL on every node): the
# cluster's console does not print these.
HEALTH_CHECK_LINE = re.compile(
    r"^ts=\S+ level=\w+ logger=trioshop\.access event=request (?:\w+=\S+ )*?"
    rf"path={re.escape(HEALTH_CHECK_PATH)} "
)


class _NodeOutput:
    """A node's output: printed line by line with its tag appended, except the access lines of
    the proxy's health checks (the first one dropped is announced once); notices when the node
    serves (its shop started, then it listens) and keeps what it printed after its last log
    line (an error message, the reason it exits)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tag = f"node={name}"
        self._checks_hidden = False
        self.serving = False
        self.settled = trio.Event()  # set once it serves, or its output ended
        self.ended = trio.Event()
        self.trailing: list[str] = []
        self._shop_started = False
        self._pending = b""

    def feed(self, chunk: bytes | bytearray) -> None:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if HEALTH_CHECK_LINE.match(line):
                self._hide_check()
                continue
            sys.stdout.write(f"{line} {self.tag}\n")
            if line.startswith("ts="):
                self.trailing.clear()
            else:
                self.trailing.append(line)
            if 'logger=trioshop.shop event="shop started"' in line:
                self._shop_started = True
            elif "logger=trioshop.server event=listening" in line and self._shop_started:
                self.serving = True
                self.settled.set()
        sys.stdout.flush()

    def _hide_check(self) -> None:
        if not self._checks_hidden:
            self._checks_hidden = True
            log_event(
                logger, "health checks not printed", node=self.name,
                checks=f"GET {HEALTH_CHECK_PATH} every {CHECK_INTERVAL}",
            )

    async def forward(self, stream: trio.abc.ReceiveStream) -> None:
        """Print everything it prints until its output ends."""
        async for chunk in stream:
            self.feed(chunk)
        self._end()

    async def drain(self, stream: trio.lowlevel.FdStream) -> None:
        """What a stopped node still printed (its shutdown lines), even while cancelled; then
        its output is closed."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(OUTPUT_DRAIN_TIMEOUT):
                async for chunk in stream:
                    self.feed(chunk)
            await stream.aclose()
            self._end()

    def _end(self) -> None:
        if self._pending:
            self.feed(b"\n")
        self.ended.set()
        self.settled.set()


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
                    logger, "node started", node=name, pid=process.pid, bind=self.backend.address,
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
                    logger, "node exited", logging.INFO if requested else logging.WARNING,
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
                    logger, "node restart failed", logging.ERROR, node=name, code=ended.code,
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
        output = _NodeOutput(backend.name)
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
                    await _stop(process, f"node {backend.name}")
                await process.wait()
                with trio.move_on_after(OUTPUT_DRAIN_TIMEOUT):
                    await output.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            await _stop(process, f"node {backend.name}")
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
        haproxy = _haproxy()
        backoff = Backoff()
        started = False
        while True:
            process = start_child([haproxy, "-db", "-f", str(config.config_path)])
            try:
                accepting = await _accepting(process, config.bind)
                if accepting:
                    log_event(
                        logger, "proxy started", pid=process.pid, bind=config.bind,
                        config=str(config.config_path),
                    )
                    if not started:
                        started = True
                        task_status.started()
                    since = trio.current_time()
                    code = await process.wait()
                    log_event(logger, "proxy exited", logging.WARNING, pid=process.pid, code=code)
                    backoff.ran(trio.current_time() - since)
                elif not started:
                    raise ClusterError(
                        f"haproxy did not start on {config.bind} (see its message above); "
                        "choose another --bind or check the configuration "
                        f"with 'haproxy -c -f {config.config_path}'"
                    )
            finally:
                await _stop(process, "proxy", drain=signal.SIGUSR1, hurry=self.hurry)
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
    _proxy: Proxy | None = None
    _admin: ProxyAdmin | None = None
    _rolling: trio.Lock = attrs.field(factory=trio.Lock)

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the nodes, then the proxy in front of them; run until *stop* is set.

        Ready once the proxy accepts connections. *stop* set during startup stops what
        started. The nesting is the shutdown order: the proxy stops accepting and finishes its
        requests first, then the nodes stop (each drains too). Raises :class:`ClusterError`
        (:class:`NodeStartError`: with the node's reason) when a node or the proxy cannot
        start.
        """
        config = self.config
        _haproxy()  # fail before starting anything
        ports = free_ports(config.nodes)
        backends = [
            Backend(f"n{number}", number, f"{NODE_HOST}:{port}")
            for number, port in enumerate(ports, start=1)
        ]
        admin_socket = config.config_path.with_name("haproxy-admin.sock")
        config.config_path.write_text(
            haproxy_config(config.bind, backends, str(admin_socket), config.api_prefix)
        )
        proxy = self._proxy = Proxy(config)
        async with trio.open_nursery() as nodes:
            async with trio.open_nursery() as front:
                front.start_soon(_cancel_when_set, stop, front.cancel_scope)
                for backend in backends:
                    node = Node(config, backend)
                    self._nodes.append(node)
                    await nodes.start(node.run)
                await front.start(proxy.run)
                self._admin = ProxyAdmin(str(admin_socket))
                log_event(logger, "cluster ready", nodes=config.nodes, bind=config.bind)
                task_status.started()
            nodes.cancel_scope.cancel()
        log_event(logger, "cluster stopped")

    def hurry(self) -> None:
        """Stop without waiting for the proxy's requests to finish (a second Ctrl-C)."""
        if self._proxy is not None:
            self._proxy.hurry.set()

    async def rolling_restart(self) -> None:
        """Restart every node, one at a time, without failing a request.

        Each node is drained at the proxy first (no new requests; its users go to the other
        nodes, which reload their carts from the database), and stopped only once no request
        is in flight on it; it stops gracefully (its carts are durable already), starts,
        and is taken back only once ready, and the next node waits until the proxy sees it
        up. A restart already under way makes another request wait for it. Raises
        :class:`NodeStartError` when a node does not start again (the restart stops there;
        the node is back in the proxy's rotation, taken once its checks pass, and retried
        with backoff), :class:`ClusterError` before the cluster is ready.
        """
        admin = self._admin
        if admin is None:
            raise ClusterError("the cluster is not ready yet")
        async with self._rolling:
            log_event(logger, "rolling restart started", nodes=len(self._nodes))
            for node in self._nodes:
                name = node.backend.name
                await admin.set_state(name, "drain")

                async def idle(name: str = name) -> bool:
                    return not int((await admin.server(name)).get("scur") or 0)

                async def up(name: str = name) -> bool:
                    return (await admin.server(name)).get("status", "").startswith("UP")

                await _poll_proxy(idle, DRAIN_TIMEOUT, f"node {name} still had requests in flight")
                await admin.set_state(name, "maint")
                try:
                    await node.restart()
                finally:  # its checks keep it out until it serves again
                    await admin.set_state(name, "ready")
                await _poll_proxy(up, READY_TIMEOUT, f"the proxy did not see node {name} up")
                log_event(logger, "node restarted", node=name)
            log_event(logger, "rolling restart done", nodes=len(self._nodes))


async def _poll_proxy(
    condition: Callable[[], Awaitable[bool]], timeout: float, failure: str
) -> None:
    """Ask the proxy until *condition* holds; :class:`ClusterError` (*failure*, after
    *timeout* seconds) if it does not.

    Polling, because the state lives in another process that pushes no notice of it.
    """
    with trio.move_on_after(timeout):
        while True:
            if await condition():
                return
            await trio.sleep(PROXY_POLL)
    raise ClusterError(f"{failure} after {timeout:g} s")


def node_arguments(text: str) -> Sequence[str]:
    """``--node-args`` split like a shell would."""
    return shlex.split(text)
