"""The cluster's child processes (nodes, HAProxy): on Linux they die with the cluster process.

A cluster killed with SIGKILL runs no cleanup, so on Linux each child asks the kernel for
SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set between fork and exec). That
signal fires when the parent *thread* that forked the child exits, not the process: Trio's
``trio.lowlevel.open_process`` forks in a worker thread of its thread cache, which exits
after 10 s idle, and would take every node and the proxy down with it. So children are
forked here, synchronously, from the thread running the event loop (the process's main
thread under ``trio.run``; a fork takes milliseconds), and the signal is only armed when
that thread is the main thread, which lives as long as the process.

Each child runs in a session of its own: a terminal's Ctrl-C signals its whole foreground
process group, and must reach only the cluster, which stops its children in order (the proxy
drains first, then the nodes).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

import trio

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when this process dies, or ``None``
    where that cannot be promised (not Linux, or not forked from the main thread)."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:  # in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sigterm)

    return preexec


class ChildProcess:
    """A child started by :func:`start_child`: what the cluster uses of ``trio.Process``."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: trio.lowlevel.FdStream | None):
        self._popen = popen
        self.pid = popen.pid
        self.stdout = stdout  # its output and errors, when captured
        self._wait_lock = trio.Lock()
        self._waiter = trio.CapacityLimiter(1)  # no pidfd: a thread waits, outside Trio's limit
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: waited in a thread
            self._pidfd = os.pidfd_open(popen.pid)

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (negative: the signal that ended it), else None."""
        return self._popen.poll()

    def send_signal(self, sig: int) -> None:
        """Send *sig*, unless it has exited already."""
        self._popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, unless it has exited already."""
        self._popen.kill()

    async def wait(self) -> int:
        """Wait for it to exit and return its exit status."""
        async with self._wait_lock:
            if self._popen.poll() is None:
                if self._pidfd is not None:
                    await trio.lowlevel.wait_readable(self._pidfd)
                else:
                    await trio.to_thread.run_sync(
                        self._popen.wait, abandon_on_cancel=True, limiter=self._waiter
                    )
            code = self._popen.wait()  # it has exited: this only reaps it
            if self._pidfd is not None:
                trio.lowlevel.notify_closing(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = None
            return code


def start_child(
    command: Sequence[str], *, capture_output: bool = False, env: Mapping[str, str] | None = None
) -> ChildProcess:
    """Start *command* in a session of its own; on Linux it gets SIGTERM when this process
    dies, however it dies.

    With *capture_output*, its output and errors are one stream, ``stdout``; otherwise it
    shares ours. Call it from the event loop's thread (see the module's docstring).
    """
    read_end: int | None = None
    write_end: int | None = None
    if capture_output:
        read_end, write_end = os.pipe()  # both close-on-exec; the child gets a dup as fd 1
    try:
        popen = subprocess.Popen(
            command, stdout=write_end, stderr=subprocess.STDOUT if capture_output else None,
            env=env, preexec_fn=_die_with_parent(), start_new_session=True,
        )
    except BaseException:
        if read_end is not None:
            os.close(read_end)
        raise
    finally:
        if write_end is not None:
            os.close(write_end)
    return ChildProcess(popen, None if read_end is None else trio.lowlevel.FdStream(read_end))
