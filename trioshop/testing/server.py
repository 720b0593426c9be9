"""Run ``trioshop run`` as a real subprocess on a free port and follow its log lines."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from trioshop import events
from trioshop.cluster.config import free_ports
from trioshop.logs import event_pattern

LISTENING = event_pattern(events.LISTENING, r" urls=(http://\S+)")
# A service handled an order (logged after its ack): the service's name (registry names may
# hold dots and hyphens) and the order's id.
ORDER_HANDLED = event_pattern(events.ORDER_HANDLED, r" service=([\w.-]+) order_id=(\w+)")
STARTUP_TIMEOUT = 30.0


class ServerProcess:
    """A trioshop server subprocess; ``lines`` collects everything it printed."""

    # The command line before the caller's arguments, and the line that says it is ready.
    command: tuple[str, ...] = ("run", "--bind", "127.0.0.1:0")
    ready: re.Pattern[str] = LISTENING
    stopped: re.Pattern[str] = event_pattern(events.STOPPED)
    new_session = False  # its own process group (for kill() of a tree)

    def __init__(self, *args: str, cwd: str | None = None) -> None:
        self.args = args
        self.cwd = cwd
        self.env: dict[str, str] = {}
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trioshop", *self.command, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=self.cwd,
            start_new_session=self.new_session,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self.base_url = self.wait_for_line(self.ready).group(1)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on, from ``base_url``."""
        parts = urlsplit(self.base_url)
        assert parts.hostname is not None and parts.port is not None, self.base_url
        return parts.hostname, parts.port

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(
        self, pattern: re.Pattern[str], timeout: float = STARTUP_TIMEOUT
    ) -> re.Match[str]:
        """Block until the server prints a line matching *pattern* (or fail after *timeout*
        seconds in all, however many other lines it prints meanwhile)."""
        for seen in self.lines:
            if match := pattern.search(seen):
                return match
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(f"no server line matches {pattern.pattern!r}") from None
            if line is None:
                raise AssertionError(
                    f"server exited before printing {pattern.pattern!r}:\n" + "\n".join(self.lines)
                )
            self.lines.append(line)
            if match := pattern.search(line):
                return match

    def read_line(self, timeout: float) -> str | None:
        """The next line the server prints within *timeout* seconds (kept in ``lines``)."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self._queue.put(None)  # the end stays visible to later readers
            return None
        self.lines.append(line)
        return line

    def drain(self) -> None:
        """Move every line printed so far into ``lines``, without waiting for more."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._queue.put(None)  # the end stays visible to later readers
                return
            self.lines.append(line)

    def output(self) -> str:
        """Everything printed so far (drains what the reader thread has collected)."""
        self.drain()
        return "\n".join(self.lines)

    def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        if code == 0:
            self.wait_for_line(self.stopped, timeout=5)
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """Stop it cleanly if it will: SIGTERM, and wait like :meth:`terminate`. Killed
        (:meth:`kill`) when it does not exit within *timeout* seconds or exits without printing
        its stopped line; returns its exit code, -9 (SIGKILL) when it had to be killed."""
        try:
            return self.terminate(timeout)
        except (AssertionError, subprocess.TimeoutExpired):
            self.kill()
            return -signal.SIGKILL

    def stop_if_running(self) -> None:
        """Kill the process if it was started and still runs (the end of a test, however it
        ended)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)


class ClusterProcess(ServerProcess):
    """``trioshop cluster`` as a subprocess: ``base_url`` is the proxy's; give it ``--bind``."""

    command = ("cluster",)
    ready = event_pattern(events.CLUSTER_READY, r" nodes=\d+ bind=(\S+)")
    stopped = event_pattern(events.CLUSTER_STOPPED)
    new_session = True  # kill() takes the nodes and the proxy down with it
    NODE_STARTED = event_pattern(events.NODE_STARTED, r" node=(\S+) pid=(\d+)")  # node, pid
    PROXY_STARTED = event_pattern(events.PROXY_STARTED, r" pid=(\d+)")

    def start(self) -> None:
        super().start()
        self.base_url = f"http://{self.base_url}"

    def kill(self) -> None:
        """SIGKILL the cluster and everything it started: its process group, and each node's
        and the proxy's (they run in sessions of their own)."""
        assert self.process is not None
        children = self.children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
        self.process.wait(timeout=30)

    def children(self) -> list[int]:
        """The pids of the processes the cluster runs now (Linux: from /proc; elsewhere: the
        latest start line of each node and of the proxy)."""
        assert self.process is not None
        pid = self.process.pid
        with contextlib.suppress(OSError):
            return [
                int(child) for task in os.listdir(f"/proc/{pid}/task")
                for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            ]
        self.drain()
        latest = {m.group(1): int(m.group(2)) for line in self.lines
                  if (m := self.NODE_STARTED.search(line))}
        proxy = [int(m.group(1)) for line in self.lines if (m := self.PROXY_STARTED.search(line))]
        return [*latest.values(), *proxy[-1:]]

    def node_pid(self, node: str) -> int:
        """The pid of *node*'s current process, from the cluster's latest start line for it."""
        pids = [
            m.group(2) for line in self.lines
            if (m := self.NODE_STARTED.search(line)) and m.group(1) == node
        ]
        assert pids, f"no start line for node {node}"
        return int(pids[-1])

    def proxy_pid(self) -> int:
        """The pid of HAProxy, from the cluster's latest "proxy started" line."""
        pids = [m.group(1) for line in self.lines if (m := self.PROXY_STARTED.search(line))]
        assert pids, "no start line for the proxy"
        return int(pids[-1])


def wait_for_count(
    servers: list[ServerProcess], pattern: re.Pattern[str], count: int, timeout: float = 60.0
) -> list[re.Match[str]]:
    """Block until the *servers* together printed *count* lines matching *pattern*.

    Wakes on every printed line (no polling interval); fails after *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        for server in servers:
            server.drain()
        found = [m for server in servers for line in server.lines if (m := pattern.search(line))]
        if len(found) >= count:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{len(found)} of {count} lines match {pattern.pattern!r}")
        if len(servers) == 1:
            servers[0].read_line(remaining)
            continue
        for each in servers:  # wake on the next line of any server
            if each.read_line(min(remaining, 0.05)) is not None:
                break


def free_port() -> int:
    """A free TCP port on the loopback interface (for a --bind the test chooses)."""
    return free_ports(1)[0]


@contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """*server*, started, and killed on exit if it is still running."""
    server.start()
    try:
        yield server
    finally:
        server.stop_if_running()


@contextmanager
def running_server(
    *args: str, cwd: str | None = None, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A started ``trioshop run`` (:class:`ServerProcess`), killed on exit if still running."""
    server = ServerProcess(*args, cwd=cwd)
    server.env = env or {}
    with running(server):
        yield server


@contextmanager
def running_cluster(*args: str) -> Iterator[ClusterProcess]:
    """A started ``trioshop cluster`` (:class:`ClusterProcess`), killed with its nodes and
    proxy on exit if still running."""
    cluster = ClusterProcess(*args)
    with running(cluster):
        yield cluster
