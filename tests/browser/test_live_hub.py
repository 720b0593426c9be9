"""The live hub without HTTP: bounded viewers, overflow counts, resuming by id, the log feed."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Histogram

from tests.browser.sse import Frame, FrameBuffer
from trioshop.http.live import LiveHub, LiveLogHandler, RequestWindow, Viewer
from trioshop.http.live.rates import quantile


def frames(chunk: bytes) -> list[Frame]:
    return list(FrameBuffer().feed(chunk))


def publish(hub: LiveHub, count: int) -> None:
    for n in range(count):
        hub.publish({"event": "item added", "fields": {"n": n}})


def test_a_slow_viewer_loses_events_alone_and_is_told() -> None:
    """A viewer that does not read loses what overflows its buffer; another viewer loses none."""
    drops: list[int] = []
    hub = LiveHub(viewer_capacity=4, on_drop=lambda: drops.append(1))
    fast, slow = hub.connect(None).viewer, hub.connect(None).viewer
    seen: list[Frame] = []
    for n in range(10):
        hub.publish({"event": "e", "fields": {"n": n}})
        seen += frames(fast.drain())
    assert [f.seq for f in seen] == list(range(1, 11))

    late = frames(slow.drain())
    assert [f.event for f in late] == ["log"] * 4 + ["dropped"]
    assert [f.seq for f in late[:4]] == [1, 2, 3, 4]
    assert late[-1].data == {"count": 6, "from_seq": 5, "to_seq": 10}
    assert hub.dropped_total == 6 == len(drops)
    hub.publish({"event": "e", "fields": {}})
    assert [f.seq for f in frames(slow.drain())] == [11]  # room again, nothing more lost


def test_publishing_is_bounded_whatever_the_viewers_do() -> None:
    """10,000 events to 20 viewers that never read: each buffer and the ring stay bounded."""
    hub = LiveHub(viewer_capacity=8, ring_size=100)
    viewers = [hub.connect(None).viewer for _ in range(20)]
    publish(hub, 10_000)  # synchronous: publishing cannot wait for anyone
    assert hub.dropped_total == 20 * (10_000 - 8)
    for viewer in viewers:
        assert [f.event for f in frames(viewer.drain())] == ["log"] * 8 + ["dropped"]
    assert len(hub.connect("x").replay) == 100


def test_resuming_replays_exactly_the_events_missed() -> None:
    """Reconnecting with the last id seen replays every later event, each once, in order."""
    hub = LiveHub()
    publish(hub, 3)
    first = hub.connect(None)
    assert first.position == 0 and [e.seq for e in first.replay] == [1, 2, 3]
    hub.disconnect(first.viewer)
    publish(hub, 4)
    again = hub.connect(f"{hub.epoch}-3")
    assert again.gap is None
    assert again.position == 3
    assert [e.seq for e in again.replay] == [4, 5, 6, 7]
    assert again.event_id == f"{hub.epoch}-3"
    up_to_date = hub.connect(f"{hub.epoch}-7")
    assert up_to_date.replay == [] and up_to_date.gap is None and up_to_date.position == 7


def test_resuming_after_too_long_says_how_many_events_are_gone() -> None:
    """An id older than the ring gets a gap notice with the count lost, then the whole ring."""
    hub = LiveHub(ring_size=5)
    publish(hub, 12)  # the ring keeps 8..12
    resume = hub.connect(f"{hub.epoch}-2")
    assert resume.gap is not None and resume.gap["missed"] == 5  # 3..7
    assert [e.seq for e in resume.replay] == [8, 9, 10, 11, 12]
    assert resume.position == 7


def test_an_id_of_another_process_is_a_gap_of_unknown_size() -> None:
    """After a server restart the old ids mean nothing: the viewer is told, and starts afresh."""
    hub = LiveHub()
    publish(hub, 2)
    resume = hub.connect("0badc0de-41")
    assert resume.gap is not None and resume.gap["missed"] is None
    assert [e.seq for e in resume.replay] == [1, 2]
    assert hub.connect("garbage").gap is not None


def test_a_new_viewer_starts_with_the_latest_events() -> None:
    """Without Last-Event-ID a viewer gets the most recent events for context, not the ring."""
    hub = LiveHub(initial_backlog=3)
    publish(hub, 10)
    resume = hub.connect(None)
    assert [e.seq for e in resume.replay] == [8, 9, 10]
    assert resume.position == 7


def test_the_snapshot_is_latest_only_and_keeps_its_place() -> None:
    """Snapshots never queue up or overflow: only the newest is sent, after the events before it."""
    hub = LiveHub(viewer_capacity=2)
    viewer = hub.connect(None).viewer
    hub.publish({"event": "a"})
    hub.publish_snapshot({"n": 1})
    hub.publish({"event": "b"})
    hub.publish_snapshot({"n": 2})
    hub.publish({"event": "c"})
    sent = frames(viewer.drain())
    assert [f.event for f in sent] == ["log", "log", "snapshot", "dropped"]
    assert [sent[0].data["event"], sent[1].data["event"]] == ["a", "b"]
    assert sent[2].data == {"n": 2} and sent[3].data["count"] == 1


def test_the_hub_refuses_viewers_beyond_its_limit_and_when_closed() -> None:
    """Viewer slots are bounded; closing the hub ends every stream and takes no new ones."""
    hub = LiveHub(max_viewers=1)
    viewer = hub.connect(None).viewer
    assert not hub.room()
    hub.disconnect(viewer)
    assert hub.room()
    other = hub.connect(None).viewer
    hub.close()
    assert other.closed and not hub.room()


def test_viewers_past_their_deadline_are_cut_and_free_their_slots() -> None:
    """cut_overdue disconnects exactly the viewers whose deadline passed, calling their on_cut."""
    hub = LiveHub(max_viewers=2)
    cuts: list[str] = []
    early = hub.connect(None, deadline=10.0, on_cut=lambda: cuts.append("early")).viewer
    hub.connect(None, deadline=20.0, on_cut=lambda: cuts.append("late"))
    assert not hub.room()
    assert hub.cut_overdue(9.9) == []
    assert hub.cut_overdue(10.0) == [early]
    assert cuts == ["early"] and early.closed
    assert hub.viewers == 1 and hub.room()


async def test_a_viewer_wakes_for_each_offer() -> None:
    """wait() returns once something was offered since the last drain, and not before."""
    hub = LiveHub()
    viewer: Viewer = hub.connect(None).viewer
    woken: list[bool] = []

    async def watch() -> None:
        await viewer.wait()
        woken.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []  # nothing offered yet
        hub.publish({"event": "x"})
    assert woken == [True]
    assert frames(viewer.drain())[0].data["event"] == "x"


async def test_log_records_from_any_thread_reach_the_hub() -> None:
    """Records logged on the Trio thread and in worker threads become events; access lines not."""
    hub = LiveHub()
    handler = LiveLogHandler(hub, trio.lowlevel.current_trio_token())
    logger = logging.getLogger("trioshop.test-live")
    logger.addHandler(handler)
    access = logging.getLogger("trioshop.access")
    access.addHandler(handler)
    viewer = hub.connect(None).viewer
    try:
        logger.warning("on the trio thread", extra={"fields": {"user_id": "ann"}})
        viewer.drain()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(viewer.wait)  # woken by the record from the worker thread
            await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(
                lambda: logger.warning("in a worker", extra={"fields": {"n": 2}})
            )
        access.warning("request", extra={"fields": {"path": "/"}})
        await trio.testing.wait_all_tasks_blocked()
    finally:
        logger.removeHandler(handler)
        access.removeHandler(handler)
    events = [e.payload for e in hub.connect(None).replay]
    assert [(e["event"], e["fields"]) for e in events] == [
        ("on the trio thread", {"user_id": "ann"}), ("in a worker", {"n": 2})
    ]
    assert events[0]["level"] == "warning" and events[0]["logger"] == "trioshop.test-live"


def test_a_record_after_the_run_ended_is_dropped_quietly() -> None:
    """A worker thread logging after the Trio run finished loses that event, nothing else."""
    hub = LiveHub()

    async def token() -> trio.lowlevel.TrioToken:
        return trio.lowlevel.current_trio_token()

    handler = LiveLogHandler(hub, trio.run(token))
    handler.emit(logging.LogRecord("trioshop.x", logging.INFO, __file__, 1, "late", None, None))
    assert hub.published == 0


def test_p95_is_interpolated_within_its_bucket() -> None:
    """The quantile of a histogram is read as Prometheus' histogram_quantile reads it."""
    bounds = (0.001, 0.01, 0.1, math.inf)
    assert quantile(0.95, bounds, (0, 0, 0, 0)) is None
    assert quantile(0.95, bounds, (100, 100, 100, 100)) == pytest.approx(0.001 * 0.95)
    assert quantile(0.5, bounds, (0, 100, 100, 100)) == pytest.approx(0.001 + 0.009 * 0.5)
    assert quantile(0.95, bounds, (0, 0, 0, 10)) == 0.1  # beyond the last finite bucket


async def test_requests_per_second_and_p95_come_from_the_histogram() -> None:
    """Two samples a second apart give that second's request rate and p95."""
    histogram = Histogram(
        "t_seconds", "test", ["route"], buckets=(0.001, 0.01, 0.1),
        registry=CollectorRegistry(),
    )
    window = RequestWindow(histogram)
    histogram.labels("/a").observe(0.0005)
    window.sample()
    for _ in range(8):
        histogram.labels("/a").observe(0.005)
    histogram.labels("/b").observe(0.05)
    histogram.labels("/b").observe(0.05)
    window.sample()
    view = window.view()
    assert view["window_seconds"] == 1
    assert view["requests_in_window"] == 10
    assert view["rate_now"] > 0
    assert view["p95_window_ms"] is not None and 10 < view["p95_window_ms"] <= 100
