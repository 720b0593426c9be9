"""A node's output on the cluster's console: tagged lines, health checks hidden, its exit reason."""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Sequence

import trio

from trioshop import events
from trioshop.cluster.haproxy import CHECK_INTERVAL, HEALTH_CHECK_PATH
from trioshop.logs import event_field, log_event

logger = logging.getLogger("trioshop.cluster")
# The lines that say a node serves: its shop started, then its server listens.
SHOP_STARTED = f"logger=trioshop.shop {event_field(events.SHOP_STARTED)}"
LISTENING = f"logger=trioshop.server {event_field(events.LISTENING)}"

# A stopped process has OUTPUT_DRAIN_TIMEOUT to finish printing.
OUTPUT_DRAIN_TIMEOUT = 1.0
# A node's reason for exiting: the lines it printed after its last log line, this long at most.
REASON_MAX_CHARS = 500


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
    rf"^ts=\S+ level=\w+ logger=trioshop\.access {re.escape(event_field(events.REQUEST))} "
    r"(?:\w+=\S+ )*?"
    rf"path={re.escape(HEALTH_CHECK_PATH)} "
)


class NodeOutput:
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
            if SHOP_STARTED in line:
                self._shop_started = True
            elif LISTENING in line and self._shop_started:
                self.serving = True
                self.settled.set()
        sys.stdout.flush()

    def _hide_check(self) -> None:
        if not self._checks_hidden:
            self._checks_hidden = True
            log_event(
                logger, events.HEALTH_CHECKS_NOT_PRINTED, node=self.name,
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
