"""The live stream over real HTTP (``trioshop run`` subprocess): it outlives --connection-idle."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

import httpx

from tests.browser.sse import Frame, FrameBuffer
from tests.helpers import REGISTRY_DIR
from trioshop import events
from trioshop.http.live.hub import MAX_VIEWERS
from trioshop.logs import event_pattern
from trioshop.testing.server import running_server, wait_for_count

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


# Streams of 6 s, cut at 7 s: every stalled viewer connects well within one stream's life.
STALLED_IDLE = "8"
STALLED_RECEIVE_BUFFER = 1024  # bytes: a viewer that stops reading fills this at once
STALLED_VIEWERS = MAX_VIEWERS  # every slot
REPLAYED_ADDS = 300  # adds before the stalled viewers connect: their replay fills every buffer
CUT = event_pattern(events.LIVE_VIEWER_CUT)
CUT_TIMEOUT = 40.0  # one stream's life (6 s) and the cut, on a loaded machine


def stalled_viewer(address: tuple[str, int]) -> socket.socket:
    """A raw client that asks /ops/stream to replay everything (an id of no process: the
    whole ring), reads up to the hello (its slot is taken), and never reads again."""
    viewer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RECEIVE_BUFFER)
    viewer.settimeout(30)
    viewer.connect(address)
    host, port = address
    viewer.sendall(
        f"GET /ops/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Last-Event-ID: none-0\r\n\r\n".encode()
    )
    received = b""
    while b"event: hello" not in received:
        chunk = viewer.recv(256)
        assert chunk, f"the server closed the stream before its hello: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    return viewer


def test_viewers_that_never_read_are_cut_at_their_deadline_and_free_their_slots() -> None:
    """Every slot held by a viewer that stopped reading is freed when its stream's life ends."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", STALLED_IDLE
    ) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        for n in range(REPLAYED_ADDS):
            assert http.post(
                f"/api/cart/u{n}/items", json={"sku": "KB-002", "quantity": 1}
            ).status_code == 200
        stalled = [stalled_viewer(server.address) for _ in range(STALLED_VIEWERS)]
        try:
            assert http.get("/ops/stream").status_code == 503  # every slot is taken
            wait_for_count([server], CUT, STALLED_VIEWERS, timeout=CUT_TIMEOUT)
            frames = read_stream(http, None, stop=lambda f: f.event == "hello")
            assert frames[-1].event == "hello"
            assert http.post(
                "/api/cart/after/items", json={"sku": "KB-002", "quantity": 1}
            ).status_code == 200
            for viewer in stalled:  # cut: the server closed (reset) their connections
                with contextlib.suppress(ConnectionResetError):
                    while viewer.recv(65536):
                        pass
        finally:
            for viewer in stalled:
                viewer.close()
        assert server.terminate() == 0
