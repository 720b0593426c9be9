"""A private ``redis-server`` for tests: started on a free port, stopped, paused, restarted."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence

import coredis
import trio

from trioshop.cluster.config import free_ports

# The line redis-server prints once it accepts connections.
# The local server tests and benches use unless told otherwise.
DEFAULT_URL = "redis://127.0.0.1:6379/0"
READY_LINE = "Ready to accept connections"
STARTUP_TIMEOUT = 10.0


class RedisServer:
    """One ``redis-server`` process without persistence on a port of its own (``url``).

    :meth:`start` returns once the server printed that it accepts connections; it can be
    stopped (:meth:`stop`) and started again on the same port, or paused with SIGSTOP
    (:meth:`pause`, :meth:`resume`) so that a command sent to it hangs. Given a *data_dir*,
    it writes every change to an append-only file there before answering, so a restart
    keeps what it acknowledged; *options* are passed on to ``redis-server``. Raises
    ``FileNotFoundError`` from :meth:`start` when ``redis-server`` is not installed.
    """

    def __init__(self, data_dir: str | None = None, options: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.options = tuple(options)  # more redis-server options, e.g. a config setting
        self.port = free_ports(1)[0]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        durability = (
            ["--appendonly", "no"] if self.data_dir is None
            else ["--appendonly", "yes", "--appendfsync", "always", "--dir", self.data_dir]
        )
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *durability, *self.options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:  # blocks until the next line; ends when it exits
            lines.append(line)
            if READY_LINE in line:
                # Its later output is not read: keep the pipe from filling up.
                self.process.stdout.close()
                return
        self.process.wait(timeout=STARTUP_TIMEOUT)
        raise RuntimeError("redis-server exited before accepting connections:\n" + "".join(lines))

    def stop(self) -> None:
        """Kill it (SIGKILL, so nothing is flushed: it is a crash) and wait for its exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused one dies too
            self.process.kill()
            self.process.wait(timeout=STARTUP_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: it keeps its connections but answers nothing until :meth:`resume`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


async def stream_entries(url: str, stream: str) -> list[dict[str, str]]:
    """Every entry of *stream* at *url*, oldest first, as field dictionaries."""
    client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        entries = await client.xrange(stream)
    return [
        {str(key): str(value) for key, value in entry.field_values.items()} for entry in entries
    ]


async def stream_length(url: str, stream: str) -> int:
    """How many entries *stream* at *url* holds."""
    client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        return int(await client.xlen(stream))


async def delete_stream(url: str, stream: str) -> None:
    """Delete *stream* at *url* (nothing if it does not exist)."""
    client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        await client.delete([stream])


def read_stream(url: str, stream: str) -> list[dict[str, str]]:
    """:func:`stream_entries` from outside Trio (it runs a Trio loop of its own)."""
    return trio.run(stream_entries, url, stream)
