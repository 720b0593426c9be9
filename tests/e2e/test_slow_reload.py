"""The real server with a reload that does not finish: a stop signal still stops it in time."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from trioshop import events
from trioshop.config import Settings
from trioshop.logs import event_pattern
from trioshop.testing.server import running_server

# A service that never reports ready: a reload that adds it waits for it (the supervisor
# returns once a new service is ready or has failed once), so the reload never finishes.
NEVER_READY = '''
import logging

import trio

from trioshop.logs import log_event


async def run(ctx, *, task_status=trio.TASK_STATUS_IGNORED):
    log_event(logging.getLogger("trioshop.test"), "never ready service waiting")
    await trio.sleep_forever()
'''
STALLED = """
  - name: stalled
    kind: process.service
    subscribe: shop/order.checkout
    process: never_ready:run
    lifecycle:
      restart:
        max_attempts: 1
        initial_delay: 1s
"""
# The server's own bound: requests in flight get the graceful timeout, then the shop stops.
STOP_WITHIN = Settings().shutdown_timeout


def test_sigterm_during_a_reload_that_never_finishes_stops_the_server(
    tmp_path: Path, registry_copy: Path
) -> None:
    """SIGHUP starts a reload stuck on a service; SIGTERM cancels it and the server exits 0."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "never_ready.py").write_text(NEVER_READY)
    env = {"PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    with running_server("--memory", "--registry", str(registry_copy), env=env) as server:
        processes = registry_copy / "processes.yaml"
        processes.write_text(processes.read_text() + STALLED)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_line(event_pattern("never ready service waiting"))
        server.process.send_signal(signal.SIGHUP)  # queued behind the stuck one
        server.process.send_signal(signal.SIGHUP)  # folded into the queued one
        sent = time.monotonic()
        code_ = server.terminate(timeout=STOP_WITHIN + 10)
        took = time.monotonic() - sent
        output = server.output()
    assert code_ == 0
    assert took < STOP_WITHIN, f"stopped after {took:.1f} s"
    assert event_pattern(events.REGISTRY_RELOAD_CANCELLED).search(output)
    assert event_pattern(events.SHUTDOWN_REQUESTED).search(output)
    assert not event_pattern(events.REGISTRY_RELOADED).search(output)
    assert "Traceback" not in output
