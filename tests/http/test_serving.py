"""Tests of serving's lifespan: the shutdown phase runs on every way out, within its timeout."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config

from trioshop.config import Settings
from trioshop.events import APP_SHUTDOWN_FAILED as SHUTDOWN_FAILED
from trioshop.http import create_app
from trioshop.http.serving import app_lifespan, serve
from trioshop.registry import Registry


class ServingBroke(Exception):
    """What the test's serving fails with."""


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _events(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


async def test_a_serving_failure_still_stops_the_shop_in_order(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Serving that fails runs the lifespan shutdown: the shop stops in order, not cancelled."""
    caplog.set_level(logging.INFO)
    app = create_app(registry, Settings())

    async def broken_trigger() -> None:
        raise ServingBroke("the accept loop broke")

    with _listening_socket() as sock, pytest.RaisesGroup(ServingBroke, flatten_subgroups=True):
        await serve(app, Config(), [sock], idle_timeout=30.0, shutdown_trigger=broken_trigger)
    assert "shop stopping" in _events(caplog, "trioshop.shop")
    assert app.extensions["trioshop"].stopped.is_set()
    assert SHUTDOWN_FAILED not in _events(caplog, "trioshop.server")


async def test_an_app_that_never_finishes_its_shutdown_is_given_up_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An app stuck in its shutdown is cancelled after shutdown_timeout, with one log line."""
    stuck = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        stuck.set()
        await trio.sleep_forever()

    config = Config()
    config.shutdown_timeout = 7.0
    async with app_lifespan(app, {}, config):
        began = trio.current_time()
    assert stuck.is_set()
    assert trio.current_time() - began == pytest.approx(7.0)
    failures = [r for r in caplog.records if r.getMessage() == SHUTDOWN_FAILED]
    assert len(failures) == 1
    assert "within 7 s: given up" in failures[0].fields["reason"]  # type: ignore[attr-defined]


async def test_an_app_that_returns_after_its_shutdown_logs_nothing(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A well-behaved app's shutdown completes at once and no failure is logged."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async with app_lifespan(app, {}, Config()):
        began = trio.current_time()
    assert trio.current_time() == began
    assert SHUTDOWN_FAILED not in [r.getMessage() for r in caplog.records]
