"""Structured logging: one event per line on stdout, as ``key=value`` pairs."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

# The id of the HTTP request being handled, set per request task. Actors start in the host's
# own context, so their log lines never carry a request's id.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Whitespace, quotes, '=', backslashes, and every control or line-breaking character (C0, DEL,
# C1, U+2028/2029): a value from a client can neither break the line nor drive a terminal.
_NEEDS_QUOTES = re.compile(r'[\s"=\\\x00-\x1f\x7f-\x9f\u2028\u2029]').search
_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]},
    0x2028: "\\u2028", 0x2029: "\\u2029",
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
    ord("\\"): "\\\\", ord('"'): '\\"',
}


def _quote(value: object) -> str:
    if type(value) is int or type(value) is float:
        return str(value)
    text = str(value)
    if not text or _NEEDS_QUOTES(text):
        return f'"{text.translate(_ESCAPES)}"'
    return text


def event_field(event: str) -> str:
    """The ``event=...`` field of *event*'s log line, exactly as printed (quoted if need be)."""
    return f"event={_quote(event)}"


def event_pattern(event: str, rest: str = "") -> re.Pattern[str]:
    """A regex for *event*'s log line: its exact ``event=`` field, then the regex *rest*."""
    return re.compile(re.escape(event_field(event)) + rest)


class KeyValueFormatter(logging.Formatter):
    """Render a record as ``ts=... level=... logger=... event=... k=v ...`` on one line.

    Fields are those given to :func:`log_event`; a traceback, if any, follows as an escaped
    ``exc`` field so the event stays on one line. Records from other libraries render with
    their message as the event.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once per second, not once per line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"ts={self._timestamp(record)} level={record.levelname.lower()} "
            f"logger={record.name} {event_field(record.getMessage())}"
        )
        fields: dict[str, Any] | None = record.__dict__.get("fields")
        if fields:
            line += " " + " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            line += f" exc={_quote(self.formatException(record.exc_info))}"
        return line


def configure(level: int | str = logging.INFO) -> None:
    """Send every trioshop and server log to stdout through :class:`KeyValueFormatter`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Caller, thread and process lookups cost more than formatting and are never printed.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    *,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log *event* with *fields* as structured ``key=value`` pairs (and *exc_info*'s traceback)."""
    if logger.isEnabledFor(level):
        rid = request_id.get()
        if rid is not None:  # read now: the record may be formatted in another context
            fields = {"request_id": rid, **fields}
        logger.log(level, event, extra={"fields": fields}, exc_info=exc_info)
