"""A cluster killed with SIGKILL takes its nodes and HAProxy with it (Linux: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.postgres import fresh_schema
from trioshop.cluster.children import ChildProcess, start_child
from trioshop.testing.server import free_port, running_cluster

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

# A child that prints the signal it gets when its parent dies (PR_GET_PDEATHSIG), 0 for none.
PROBE = [
    sys.executable, "-c",
    "import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); "
    "print(s.value)",
]


async def output_and_code(child: ChildProcess) -> tuple[str, int]:
    assert child.stdout is not None
    output = b""
    async for chunk in child.stdout:
        output += chunk
    return output.decode().strip(), await child.wait()


async def test_a_child_started_from_the_loop_dies_with_its_parent() -> None:
    """A child started from the event loop's (main) thread gets SIGTERM when its parent dies."""
    child = start_child(PROBE, capture_output=True)
    assert await output_and_code(child) == (str(int(signal.SIGTERM)), 0)
    assert child.returncode == 0


async def test_a_child_started_from_a_worker_thread_is_not_armed() -> None:
    """From a worker thread (which exits when idle, signalling its children) nothing is armed."""
    child = await trio.to_thread.run_sync(partial(start_child, PROBE, capture_output=True))
    assert await output_and_code(child) == ("0", 0)


def still_running(pidfds: dict[int, int], timeout: float) -> list[int]:
    """Wait up to *timeout* seconds for the processes behind *pidfds* to exit; those that did not.

    A pidfd becomes readable once its process has exited, zombie or not: the kernel wakes
    the wait, so there is no polling interval.
    """
    deadline = time.monotonic() + timeout
    poller = select.poll()
    for pidfd in pidfds:
        poller.register(pidfd, select.POLLIN)
    running = dict(pidfds)
    while running and (remaining := deadline - time.monotonic()) > 0:
        for pidfd, _ in poller.poll(math.ceil(remaining * 1000)):  # any event means exited
            poller.unregister(pidfd)
            del running[pidfd]
    return sorted(running.values())


def main_thread_children(pid: int) -> set[int]:
    """The pids of the child processes *pid*'s main thread started.

    The parent-death signal fires when the thread that forked the child exits: only the
    main thread's exit is the process's.
    """
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_sigkill_of_the_cluster_leaves_no_orphans(registry: Path) -> None:
    """kill -9 of `trioshop cluster`: its nodes and HAProxy all exit within 10 s."""
    with fresh_schema() as database, running_cluster(
        "--nodes", "2", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(registry),
    ) as cluster:
        assert cluster.process is not None
        pid = cluster.process.pid
        started = {cluster.node_pid("n1"), cluster.node_pid("n2")}
        started.add(cluster.proxy_pid())
        pidfds: dict[int, int] = {}
        try:
            assert main_thread_children(pid) == started
            # The children are not ours to wait for (waitpid), but a pidfd tells anyone when
            # its process exits. Opened while they are known alive, so no reused pid is watched.
            for child in started:
                with contextlib.suppress(ProcessLookupError):  # already gone: exited
                    pidfds[os.pidfd_open(child)] = child
            os.kill(pid, signal.SIGKILL)
            cluster.process.wait(timeout=30)
            if left := still_running(pidfds, 10):
                pytest.fail(f"still running 10 s after the cluster was killed: {left}")
        finally:
            for pidfd in pidfds:
                os.close(pidfd)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # whatever is left of its process group
