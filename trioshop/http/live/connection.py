"""The connection a streaming answer goes out on, found so that it can be cut while stuck."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable

import trio

# SO_LINGER on, zero seconds: closing the socket resets the connection and drops what is unsent.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def connection_socket(peer: Iterable[object] | None) -> trio.socket.SocketType | None:
    """The socket of the connection this task answers on, connected to *peer*; ``None`` when
    there is none to find (the in-process test client, or a server not built so).

    hypercorn sends each write shielded from cancellation, so a client that stops reading
    holds its answer's task in that write for as long as it lives; only the socket can end it.
    hypercorn serves each connection in a task of ``trio.serve_listeners`` that holds the
    connection's ``SocketStream``, and the request's task descends from it: the task tree is
    walked up to it. No checkpoint; never raises.
    """
    if peer is None:
        return None
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None:
        frame = getattr(task.coro, "cr_frame", None)
        stream = frame.f_locals.get("stream") if frame is not None else None
        if isinstance(stream, trio.SocketStream):
            with contextlib.suppress(OSError):
                if tuple(stream.socket.getpeername()[:2]) == tuple(peer):
                    return stream.socket
            return None
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None
    return None


def cut(sock: trio.socket.SocketType) -> None:
    """Reset the connection of *sock*: a write blocked on it fails at once (the server then
    closes it), and what the client never read is dropped. Never raises (it may be gone)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        sock.shutdown(socket.SHUT_RDWR)
