"""Structured logging: one event per line on stdout, as ``key=value`` pairs."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


class KeyValueFormatter(logging.Formatter):
    """Render a record as ``ts=... level=... logger=... event=... k=v ...`` on one line.

    Fields come from ``extra=``; a traceback, if any, follows as an escaped ``exc`` field so
    the event stays on one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        parts.extend(
            f"{key}={_quote(value)}"
            for key, value in record.__dict__.items()
            if key not in _RESERVED and not key.startswith("_")
        )
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def configure(level: int | str = logging.INFO) -> None:
    """Send every trioshop and server log to stdout through :class:`KeyValueFormatter`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


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
        # LogRecord owns names such as 'name'; such a field keeps its meaning under 'name_'.
        extra = {(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items()}
        logger.log(level, event, extra=extra, exc_info=exc_info)
