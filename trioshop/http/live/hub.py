"""The live hub: recent events in a bounded ring with ids, and a bounded buffer per viewer."""

from __future__ import annotations

import itertools
import json
import math
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio

RING_SIZE = 2000  # events kept for viewers that reconnect (Last-Event-ID)
VIEWER_CAPACITY = 512  # events buffered per viewer before that viewer loses some
MAX_VIEWERS = 32  # live streams at once, all viewers together
INITIAL_BACKLOG = 100  # recent events a new viewer (no Last-Event-ID) starts with


def sse_frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Events frame; JSON data never contains a newline."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


class LiveEvent:
    """One published event: its sequence number and payload; its SSE frame is built once."""

    __slots__ = ("_frame", "epoch", "payload", "seq")

    def __init__(self, epoch: str, seq: int, payload: dict[str, Any]) -> None:
        self.epoch = epoch
        self.seq = seq
        self.payload = payload
        self._frame: bytes | None = None

    @property
    def event_id(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = sse_frame("log", {"seq": self.seq, **self.payload}, self.event_id)
        return self._frame


class Viewer:
    """One connected viewer: a bounded buffer of events and a slot for the latest snapshot.

    Offering never blocks: past ``capacity`` buffered events, further events are dropped for
    this viewer alone and counted; the next :meth:`drain` says how many. A viewer still
    connected at its ``deadline`` (Trio time) is cut with ``on_cut``
    (:meth:`LiveHub.cut_overdue`).
    """

    def __init__(
        self,
        capacity: int,
        deadline: float = math.inf,
        on_cut: Callable[[], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.deadline = deadline
        self.on_cut = on_cut
        self.closed = False
        self._pending: deque[LiveEvent] = deque()
        self._dropped = 0
        self._dropped_from = 0
        self._dropped_to = 0
        self._snapshot: bytes | None = None
        self._snapshot_after = 0  # how many pending events came before the snapshot
        self._wake = trio.Event()

    @property
    def buffered(self) -> int:
        """Events waiting to be sent to this viewer."""
        return len(self._pending)

    def offer(self, event: LiveEvent) -> bool:
        """Buffer *event*; ``False`` (and counted) if the buffer is full."""
        if len(self._pending) >= self.capacity:
            if not self._dropped:
                self._dropped_from = event.seq
            self._dropped += 1
            self._dropped_to = event.seq
            self._wake.set()
            return False
        self._pending.append(event)
        self._wake.set()
        return True

    def offer_snapshot(self, frame: bytes) -> None:
        """Keep *frame* as the one snapshot to send next (replacing an unsent one)."""
        self._snapshot = frame
        self._snapshot_after = len(self._pending)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait(self) -> None:
        """Until something was offered since the last :meth:`drain` (or the viewer closed)."""
        await self._wake.wait()

    def drain(self) -> bytes:
        """Everything buffered, in order, as SSE frames; then a ``dropped`` notice if any were."""
        if self._wake.is_set():
            self._wake = trio.Event()
        events, self._pending = self._pending, deque()
        parts = [e.frame() for e in itertools.islice(events, self._snapshot_after)]
        if self._snapshot is not None:
            parts.append(self._snapshot)
        parts.extend(e.frame() for e in itertools.islice(events, self._snapshot_after, None))
        if self._dropped:
            parts.append(sse_frame("dropped", {
                "count": self._dropped, "from_seq": self._dropped_from,
                "to_seq": self._dropped_to,
            }))
        self._snapshot, self._snapshot_after, self._dropped = None, 0, 0
        return b"".join(parts)


@attrs.frozen(kw_only=True)
class Resume:
    """Where a new stream starts: its viewer, the position (and its event id) right before
    the replayed events, those events, and a ``gap`` notice if some could not be replayed."""

    viewer: Viewer
    event_id: str
    position: int
    replay: list[LiveEvent]
    gap: dict[str, Any] | None


class HubFull(Exception):
    """Every viewer slot is taken."""


class LiveHub:
    """Fans events out to viewers without ever waiting for one; keeps a ring for resuming.

    Call :meth:`publish` on the Trio thread only (``LiveLogHandler`` brings records from other
    threads there). Publishing costs one append to the ring and one to each viewer's buffer.
    """

    def __init__(
        self,
        *,
        ring_size: int = RING_SIZE,
        viewer_capacity: int = VIEWER_CAPACITY,
        max_viewers: int = MAX_VIEWERS,
        initial_backlog: int = INITIAL_BACKLOG,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.epoch = secrets.token_hex(4)  # a new one per process: old ids are recognised
        self.viewer_capacity = viewer_capacity
        self.max_viewers = max_viewers
        self.initial_backlog = initial_backlog
        self.closed = False
        self.dropped_total = 0
        self.published = 0
        self._ring: deque[LiveEvent] = deque(maxlen=ring_size)
        self._viewers: list[Viewer] = []
        self._on_drop = on_drop

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def publish(self, payload: dict[str, Any]) -> LiveEvent:
        """Give *payload* the next id, keep it in the ring and offer it to every viewer."""
        self.published += 1
        event = LiveEvent(self.epoch, self.published, payload)
        self._ring.append(event)
        for viewer in self._viewers:
            if not viewer.offer(event):
                self.dropped_total += 1
                if self._on_drop is not None:
                    self._on_drop()
        return event

    def publish_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Offer *snapshot* to every viewer; an unsent older one is replaced, never queued."""
        if not self._viewers:
            return
        frame = sse_frame("snapshot", snapshot)
        for viewer in self._viewers:
            viewer.offer_snapshot(frame)

    def room(self) -> bool:
        return not self.closed and len(self._viewers) < self.max_viewers

    def connect(
        self,
        last_event_id: str | None,
        *,
        deadline: float = math.inf,
        on_cut: Callable[[], None] | None = None,
    ) -> Resume:
        """Register a viewer and say where its stream starts: the events it missed since
        *last_event_id* (a new viewer: the latest few) and the position right before them.
        A viewer still connected at *deadline* is cut (:meth:`cut_overdue`) with *on_cut*.

        Atomic (no checkpoint): every event is either replayed or offered to the viewer,
        never both, never neither. When the ring no longer holds every event after
        *last_event_id* (too old, or an id of another process), ``gap`` says so. Raises
        :class:`HubFull` when every viewer slot is taken (or the hub closed).
        """
        if not self.room():
            raise HubFull(f"{len(self._viewers)} live viewers, the limit is {self.max_viewers}")
        replay, gap = self._since(last_event_id)
        viewer = Viewer(self.viewer_capacity, deadline, on_cut)
        self._viewers.append(viewer)
        position = replay[0].seq - 1 if replay else self.published
        return Resume(
            viewer=viewer, event_id=f"{self.epoch}-{position}", position=position,
            replay=replay, gap=gap,
        )

    def disconnect(self, viewer: Viewer) -> None:
        viewer.close()
        if viewer in self._viewers:
            self._viewers.remove(viewer)

    def cut_overdue(self, now: float) -> list[Viewer]:
        """Disconnect every viewer whose deadline is past at *now* (Trio time), calling its
        ``on_cut``, and return them: a stream that ends by itself has left before its deadline,
        so these are stuck sending to a client that does not read. Their slots are free at
        once. No checkpoint."""
        overdue = [viewer for viewer in self._viewers if viewer.deadline <= now]
        for viewer in overdue:
            self.disconnect(viewer)
            if viewer.on_cut is not None:
                viewer.on_cut()
        return overdue

    def close(self) -> None:
        """End every stream (each viewer is woken and sees ``closed``); refuse new ones."""
        self.closed = True
        for viewer in self._viewers:
            viewer.close()

    def _since(self, last_event_id: str | None) -> tuple[list[LiveEvent], dict[str, Any] | None]:
        ring = self._ring
        if last_event_id is None:
            start = max(0, len(ring) - self.initial_backlog)
            return list(itertools.islice(ring, start, None)), None
        epoch, _, seq_text = last_event_id.strip().partition("-")
        if epoch != self.epoch or not seq_text.isdigit():
            return list(ring), {
                "missed": None,
                "reason": "the stream restarted (another server process or node): events "
                "before this point are unknown",
            }
        seq = int(seq_text)
        oldest = ring[0].seq if ring else self.published + 1
        if seq >= self.published:
            return [], None
        if seq + 1 < oldest:
            return list(ring), {
                "missed": oldest - seq - 1,
                "reason": "the viewer was away longer than the server keeps events",
            }
        return list(itertools.islice(ring, seq + 1 - oldest, None)), None
