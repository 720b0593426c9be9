"""hypercorn's Trio worker as trioshop runs it: sockets bound before anything starts, the app's
lifespan started before the first connection is accepted, and an idle-connection deadline that
runs only between requests."""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, Literal

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveEvent,
    ASGISendEvent,
    ConnectionState,
    LifespanScope,
)
from hypercorn.utils import repr_socket_addr, wrap_app

from trioshop import events
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.server")

# SO_LINGER on, zero seconds: closing resets the connection and drops what the client never read.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class LifespanFailed(Exception):
    """The app's lifespan startup failed; str() says why. A failed shutdown is logged
    instead (see :func:`app_lifespan`)."""


def bind_sockets(config: Config) -> list[socket.socket]:
    """Bind and listen on ``config.bind``: the port is taken before the shop starts.

    Raises :class:`OSError` (e.g. the address is in use); the caller closes the sockets.
    """
    sockets = config.create_sockets().insecure_sockets
    try:
        for sock in sockets:
            sock.listen(config.backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class IdleBetweenRequests(TCPServer):
    """One HTTP/1 connection: closed when it stays *idle_timeout* seconds without a complete
    request head, counted from its start or from the end of its last answer, never while one
    of its requests is being handled.

    hypercorn's own keep-alive timer costs a task per answer and, under quart-trio, is never
    armed (quart-trio cancels the response task while hypercorn arms it); hypercorn's
    ``read_timeout`` runs during handling too, cutting slow requests. Here the read of the
    next request has a deadline that the request's head suspends and its answer re-arms: a
    deadline change, no task. A partial request head still ends at the deadline.

    A client that takes no bytes of an answer for *idle_timeout* seconds is as idle as one
    that sends nothing: the connection is reset (hypercorn's writes are shielded from
    cancellation, so without this a client that stops reading would hold its request's task,
    and a graceful shutdown, for good).

    While it runs the connection is in *open_connections*, where shutdown finds it to
    :meth:`close_if_idle`, and :func:`current_connection` gives it to its requests' tasks.
    """

    def __init__(
        self, idle_timeout: float, open_connections: set[IdleBetweenRequests], *args: Any
    ) -> None:
        super().__init__(*args)
        self.idle_timeout = idle_timeout
        self._open = open_connections
        self._deadline = trio.current_time() + idle_timeout
        self._reading: trio.CancelScope | None = None

    async def run(self) -> None:
        self._open.add(self)
        entered = _CURRENT.set(self)  # the requests' tasks are spawned from this one
        try:
            await super().run()
        finally:
            _CURRENT.reset(entered)
            self._open.discard(self)

    def reset(self) -> None:
        """Reset the connection now: a write blocked on it fails at once (the connection then
        closes), and what the client never read is dropped. No checkpoint; never raises."""
        with contextlib.suppress(OSError, AttributeError):  # gone already; or not a socket
            sock = self.stream.socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            sock.shutdown(socket.SHUT_RDWR)

    def close_if_idle(self) -> None:
        """Close the connection now if no request of it is in flight (shutdown)."""
        if self._deadline != math.inf:
            self._set_deadline(-math.inf)

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self._reading is not None:
            self._reading.deadline = deadline

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._send(event.data)
            return
        if isinstance(event, Updated):
            if event.idle:  # an answer ended and the connection waits for the next request
                self._set_deadline(trio.current_time() + self.idle_timeout)
                return  # no checkpoint here: quart-trio is cancelling this task
            self._set_deadline(math.inf)  # a request head arrived: handling is never cut
        await super().protocol_send(event)

    async def _close(self) -> None:
        """Close the connection, shielded: the protocol ends it from inside the app's final
        ``send`` (HTTP/1.0, ``Connection: close``, an answer before the request body), after
        handing the app ``http.disconnect``, on which quart-trio cancels that task; unshielded,
        the close would be cancelled and the socket left open until the idle deadline. It
        takes no time (``send_eof`` and ``aclose`` only checkpoint)."""
        with trio.CancelScope(shield=True):
            await super()._close()

    async def _send(self, data: bytes) -> None:
        """Send *data*, shielded from cancellation as hypercorn does (an answer is never cut
        in the middle by a cancelled task), but within *idle_timeout*: a client that takes
        none of it meanwhile is reset."""
        async with self.send_lock:
            broken = False
            deadline = trio.current_time() + self.idle_timeout
            with trio.CancelScope(shield=True, deadline=deadline) as sending:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    broken = True
            if sending.cancelled_caught:
                self.reset()
            if broken or sending.cancelled_caught:
                await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        while True:
            data: bytes | bytearray | None = None
            with trio.CancelScope(deadline=self._deadline) as self._reading:
                try:
                    data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    data = b""  # gone: as if the client closed
            self._reading = None
            if data is None or data == b"":  # idle too long (cancelled), or the client closed
                break
            await self.protocol.handle(RawData(bytes(data)))
        await self.protocol.handle(Closed())


_CURRENT: ContextVar[IdleBetweenRequests | None] = ContextVar("connection", default=None)


def current_connection() -> IdleBetweenRequests | None:
    """The connection the current request's task answers on (to :meth:`~IdleBetweenRequests.reset`
    it); ``None`` outside :func:`serve` (e.g. the in-process test client)."""
    return _CURRENT.get()


@asynccontextmanager
async def app_lifespan(
    app: ASGIFramework, state: dict[str, Any], config: Config
) -> AsyncIterator[None]:
    """Run *app*'s ASGI lifespan: startup on entry, shutdown on every way out.

    Raises :class:`LifespanFailed` when the app reports a failed startup, or does not report
    within ``config.startup_timeout`` seconds. The shutdown phase runs however the block
    ends, returned or raised, and the app's task has ``config.shutdown_timeout`` seconds for
    it and to return; past that it is cancelled. Not shielded: a cancellation from outside
    (a second stop signal) means now, and cuts it short.
    A failed or overdue shutdown is logged in one line, never raised: it would hide why
    the block ended.
    """
    to_app, app_inbox = trio.open_memory_channel[ASGIReceiveEvent](1)
    from_app, replies = trio.open_memory_channel[ASGISendEvent](1)
    scope: LifespanScope = {
        "type": "lifespan", "asgi": {"spec_version": "2.0", "version": "3.0"}, "state": state,
    }
    returned = trio.Event()

    async def run_app() -> None:
        try:
            await app(scope, app_inbox.receive, from_app.send)
        finally:
            from_app.close()  # no reply will come: a phase waiting for one ends
            returned.set()

    async def phase(name: Literal["startup", "shutdown"]) -> str | None:
        """Run lifespan phase *name*: ``None`` once done, else why not."""
        event: ASGIReceiveEvent = (
            {"type": "lifespan.startup"} if name == "startup" else {"type": "lifespan.shutdown"}
        )
        try:
            await to_app.send(event)
            reply = await replies.receive()
        except (trio.BrokenResourceError, trio.EndOfChannel):
            return f"the app ended before it finished its {name}"
        if reply["type"] == f"lifespan.{name}.failed":
            return str(reply.get("message", ""))
        return None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app)
        timeout = config.startup_timeout
        problem: str | None = f"the app did not finish its startup within {timeout:g} s"
        with trio.move_on_after(timeout):
            problem = await phase("startup")
        if problem is not None:
            raise LifespanFailed(problem)
        try:
            yield
        finally:
            try:
                await _shut_down(phase, returned, config.shutdown_timeout)
            finally:
                nursery.cancel_scope.cancel()  # given up on, or returned already


async def _shut_down(
    phase: Callable[[Literal["shutdown"]], Awaitable[str | None]],
    returned: trio.Event,
    timeout: float,
) -> None:
    """Run the shutdown *phase* and wait for the app to return, within *timeout* seconds;
    log in one line what went wrong."""
    problem: str | None = None
    with trio.move_on_after(timeout) as overdue:
        problem = await phase("shutdown")
        await returned.wait()
    if overdue.cancelled_caught:
        problem = f"the app did not finish its shutdown within {timeout:g} s: given up"
    if problem is not None:
        log_event(logger, events.APP_SHUTDOWN_FAILED, logging.ERROR, reason=problem)


async def serve(
    app: ASGIFramework,
    config: Config,
    sockets: Sequence[socket.socket],
    *,
    idle_timeout: float,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* over HTTP/1 on *sockets* (bound and listening) until *shutdown_trigger*
    returns.

    Ready (``task_status.started`` with the URLs) once the app's lifespan startup completed:
    a failed startup raises :class:`LifespanFailed` before any connection is accepted. On
    shutdown the sockets close, idle connections close, requests in flight get
    ``config.graceful_timeout`` seconds, then the app's lifespan shutdown runs (also when
    serving fails), within ``config.shutdown_timeout`` (see :func:`app_lifespan`).
    """
    state: dict[str, Any] = {}
    async with app_lifespan(app, state, config):
        context = WorkerContext(None)
        open_connections: set[IdleBetweenRequests] = set()
        handler = partial(
            IdleBetweenRequests, idle_timeout, open_connections,
            wrap_app(app, config.wsgi_max_body_size, "asgi"), config, context,
            ConnectionState(state),
        )
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        async with trio.open_nursery() as connections:
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(
                        trio.serve_listeners, handler, listeners, handler_nursery=connections
                    ))
                    task_status.started([
                        "http://" + repr_socket_addr(s.family, s.getsockname()) for s in sockets
                    ])
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                for listener in listeners:
                    await listener.aclose()
                await context.terminated.set()  # answers in flight end their connections
                for connection in list(open_connections):  # idle keep-alive clients: now
                    connection.close_if_idle()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout


@contextmanager
def quiet_startup_traceback(logger: logging.Logger) -> Generator[None]:
    """Drop the traceback *logger* writes for a failed startup, unless it logs at DEBUG: the
    failure is reported in one line by whoever catches :class:`LifespanFailed`."""

    def keep(record: logging.LogRecord) -> bool:
        return record.exc_info is None or logger.isEnabledFor(logging.DEBUG)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
