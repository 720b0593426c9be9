"""Per-kind actor measures kept as plain numbers: fixed-bucket histograms and small counters."""

from __future__ import annotations

import bisect
from bisect import bisect_left

import attrs

# Upper bounds (seconds) of the histograms' buckets, fixed so that observing is one bisect and
# every node's histograms can be summed: 10 µs (a message taken from a waiting actor's
# mailbox) up to 10 s (a cart that loads from a slow store).
SECONDS_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Kinds measured apart, all actors together: kinds come from code (names such as
# ``cart:<user>``), never from input, but this caps the label set whatever the names are.
MAX_KINDS = 32
OTHER_KIND = "other"
UNNAMED_KIND = "actor"


def kind_of(name: str | None) -> str:
    """The kind of an actor registered as *name*: the part before the first ``:``
    (``cart`` for ``cart:alice``), ``actor`` for an unnamed actor."""
    return UNNAMED_KIND if name is None else name.partition(":")[0]


@attrs.frozen(kw_only=True)
class HistogramSnapshot:
    """A histogram as of one moment: cumulative counts per upper bound (the last, ``inf``, is
    the total count), and the sum of the observed values."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then one for +Inf
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]

    def quantile(self, q: float) -> float | None:
        """The *q* quantile (0 < q < 1) estimated as Prometheus does: linear within its
        bucket; the largest finite bound if it falls past it; ``None`` when nothing was
        observed. Raises :class:`ValueError` for a *q* outside (0, 1)."""
        if not 0 < q < 1:
            raise ValueError(f"a quantile is between 0 and 1 exclusive, got {q!r}")
        if self.count == 0:
            return None
        rank = q * self.count
        index = bisect.bisect_left(self.cumulative, rank)
        if index >= len(self.bounds):
            return self.bounds[-1]
        below = self.cumulative[index - 1] if index else 0
        lower = self.bounds[index - 1] if index else 0.0
        inside = self.cumulative[index] - below
        return lower + (self.bounds[index] - lower) * (rank - below) / inside


class Histogram:
    """Counts observations per fixed bucket; observing is one bisect and two additions."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        running, cumulative = 0, []
        for count in self._counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(bounds=self._bounds, cumulative=tuple(cumulative), sum=self._sum)


@attrs.frozen(kw_only=True)
class KindStatistics:
    """A snapshot of one kind of actor: live now, and its measures since the host opened."""

    kind: str
    live: int
    passivated: int  # ended after their idle timeout
    mailbox_wait: HistogramSnapshot  # seconds from a message's enqueue to its handling start
    handling: HistogramSnapshot  # seconds the behaviour took per message
    activation: HistogramSnapshot  # seconds from spawn to the first message handled

    @property
    def messages(self) -> int:
        """Messages handled (whatever the outcome)."""
        return self.handling.count

    @property
    def activations(self) -> int:
        """Actors that handled their first message."""
        return self.activation.count


class KindMeasures:
    """The measures of one kind of actor, updated by the host as they happen.

    Each live actor holds its kind's measures, so a message costs no lookup. ``span_name`` is
    the name of the span an actor of this kind handles a message in.
    """

    __slots__ = ("activation", "handling", "kind", "live", "mailbox_wait", "passivated",
                 "span_name")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.span_name = f"actor {kind}"
        self.live = 0
        self.passivated = 0
        self.mailbox_wait = Histogram()
        self.handling = Histogram()
        self.activation = Histogram()

    def snapshot(self) -> KindStatistics:
        return KindStatistics(
            kind=self.kind, live=self.live, passivated=self.passivated,
            mailbox_wait=self.mailbox_wait.snapshot(), handling=self.handling.snapshot(),
            activation=self.activation.snapshot(),
        )


class KindTable:
    """The measures of every kind seen, at most ``MAX_KINDS`` of them (then ``other``)."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[str, KindMeasures] = {}

    def of(self, name: str | None) -> KindMeasures:
        """The measures for an actor registered as *name*, created on first sight."""
        kind = kind_of(name)
        measures = self._kinds.get(kind)
        if measures is None:
            if len(self._kinds) >= MAX_KINDS - 1 and kind != OTHER_KIND:
                return self.of(OTHER_KIND)
            measures = self._kinds[kind] = KindMeasures(kind)
        return measures

    def snapshot(self) -> tuple[KindStatistics, ...]:
        """Every kind's statistics, by kind name."""
        return tuple(self._kinds[kind].snapshot() for kind in sorted(self._kinds))
