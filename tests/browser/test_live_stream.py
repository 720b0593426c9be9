"""The live stream over real HTTP (``trioshop run`` subprocess): it outlives --connection-idle."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.browser.sse import Frame, FrameBuffer
from tests.helpers import REGISTRY_DIR
from trioshop.testing.server import running_server

IDLE = "2"  # --connection-idle: streams of 1.5 s, then a reconnect


def read_stream(
    http: httpx.Client,
    last_event_id: str | None,
    stop: Callable[[Frame], bool] = lambda frame: False,
) -> list[Frame]:
    """One stream from its start until the server ends it (or until ``stop(frame)``)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    frames: list[Frame] = []
    buffer = FrameBuffer()
    with http.stream("GET", "/ops/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_bytes():
            for frame in buffer.feed(chunk):
                frames.append(frame)
                if stop(frame):
                    return frames
    return frames


def last_id(frames: list[Frame], before: str | None) -> str | None:
    ids = [f.id for f in frames if f.id is not None]
    return ids[-1] if ids else before


def test_the_stream_outlives_idle_cuts_and_loses_nothing_between_connections() -> None:
    """Four streams in a row each end with bye before the idle cut; resumed ids lose no event."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", IDLE
    ) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        seen: list[Frame] = []
        event_id: str | None = None
        for n in range(4):
            frames = read_stream(http, event_id)
            assert frames[0].retry == 1000
            assert frames[-1].event == "bye", "the stream was cut instead of ending by itself"
            assert not any(f.event in ("gap", "dropped") for f in frames)
            seen += [f for f in frames if f.event == "log"]
            event_id = last_id(frames, event_id)
            # Made while no stream is open: the next stream must replay it.
            assert http.post(
                f"/api/cart/u{n}/items", json={"sku": "KB-002", "quantity": 1}
            ).status_code == 200
        frames = read_stream(http, event_id)
        seen += [f for f in frames if f.event == "log"]

        seqs = [f.seq for f in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no loss, no repeat
        added = [f.data["fields"]["user_id"] for f in seen if f.data["event"] == "item added"]
        assert added == ["u0", "u1", "u2", "u3"]
        assert server.terminate() == 0


def test_a_viewer_that_vanishes_is_forgotten_and_resumes_where_it_was() -> None:
    """A client gone mid-stream frees its slot; reconnecting with its id replays what it missed."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", IDLE
    ) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        frames = read_stream(http, None, stop=lambda f: f.event == "hello")
        event_id = last_id(frames, None)  # the connection is dropped right here
        for user in ["ann", "bob"]:
            assert http.post(
                f"/api/cart/{user}/items", json={"sku": "MON-004", "quantity": 1}
            ).status_code == 200

        frames = read_stream(http, event_id, stop=lambda f: f.event == "snapshot")
        logs = [f for f in frames if f.event == "log"]
        created = [f.data["fields"]["user_id"] for f in logs if f.data["event"] == "cart created"]
        assert created == ["ann", "bob"]
        assert frames[-1].data["live"]["viewers"] == 1  # the vanished viewer is gone
        assert {a["name"] for a in frames[-1].data["actor_list"]} == {"cart:ann", "cart:bob"}
        assert server.terminate() == 0
