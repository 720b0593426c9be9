"""Prometheus metrics: HTTP series kept per request, runtime series read from the shop on scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from trioshop.domain.money import CENTS_PER_UNIT
from trioshop.runtime import HistogramSnapshot, KindStatistics, ServiceStatus
from trioshop.shop import Shop

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Label values that come from a request are taken from fixed sets, so no client can grow the
# series (and the scrape) without bound: a method outside this set is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The runtime's per-kind histograms, by family name (seconds; labelled by actor kind).
KIND_HISTOGRAMS: tuple[tuple[str, str, Callable[[KindStatistics], HistogramSnapshot]], ...] = (
    ("trioshop_actor_mailbox_wait_seconds", "Time a message waited in an actor's mailbox.",
     lambda kind: kind.mailbox_wait),
    ("trioshop_actor_handling_seconds", "Time an actor took to handle one message.",
     lambda kind: kind.handling),
    ("trioshop_actor_activation_seconds", "Time from an actor's spawn to its first message "
     "handled.", lambda kind: kind.activation),
)


def kind_families(kinds: tuple[KindStatistics, ...]) -> Iterator[Metric]:
    """The runtime's per-kind measures as families labelled ``kind`` (a bounded set: the
    runtime caps the kinds, and a kind is never a user id)."""
    for name, doc, histogram_of in KIND_HISTOGRAMS:
        family = HistogramMetricFamily(name, doc, labels=["kind"])
        for kind in kinds:
            histogram = histogram_of(kind)
            buckets = [
                (repr(bound), float(count))
                for bound, count in zip(histogram.bounds, histogram.cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(histogram.count)))
            family.add_metric([kind.kind], buckets, histogram.sum)
        yield family
    live = GaugeMetricFamily("trioshop_actor_kind_live", "Live actors per kind.", labels=["kind"])
    passivations = CounterMetricFamily(
        "trioshop_actor_passivations", "Actors ended after their idle timeout, per kind.",
        labels=["kind"],
    )
    for kind in kinds:
        live.add_metric([kind.kind], kind.live)
        passivations.add_metric([kind.kind], kind.passivated)
    yield live
    yield passivations


class ShopCollector(Collector):
    """Reads the runtime's own counters at scrape time: nothing is paid on the hot path."""

    def __init__(self, get_shop: Callable[[], Shop | None]) -> None:
        self._get_shop = get_shop

    def collect(self) -> Iterator[Metric]:
        shop = self._get_shop()
        if shop is None:
            return
        stats = shop.statistics()
        actors = stats.actors
        yield GaugeMetricFamily("trioshop_actors_live", "Live actors (carts).", actors.live)
        for name, value, doc in [
            ("spawned", actors.spawned, "Actors started."),
            ("ended", actors.ended, "Actors ended, however they ended."),
            ("crashed", actors.crashed, "Actors ended by an exception."),
            ("passivated", actors.passivated, "Actors ended after their idle timeout."),
            ("request_timeouts", actors.timeouts, "Request/reply calls that timed out."),
        ]:
            yield CounterMetricFamily(f"trioshop_actors_{name}", doc, value)
        yield GaugeMetricFamily(
            "trioshop_actor_mailbox_depth_max", "Deepest mailbox among live actors.",
            actors.max_mailbox_depth,
        )
        yield from kind_families(actors.kinds)

        yield CounterMetricFamily(
            "trioshop_bus_events_published", "Events published on the bus.", stats.bus.published
        )
        delivered = CounterMetricFamily(
            "trioshop_bus_events_delivered", "Events delivered per subscriber.",
            labels=["subscriber"],
        )
        overflowed = CounterMetricFamily(
            "trioshop_bus_events_overflowed", "Events dropped per subscriber (channel full).",
            labels=["subscriber"],
        )
        for subscriber in stats.bus.subscribers:
            delivered.add_metric([subscriber.name], subscriber.delivered)
            overflowed.add_metric([subscriber.name], subscriber.overflowed)
        yield delivered
        yield overflowed

        restarts = CounterMetricFamily(
            "trioshop_service_restarts", "Restarts per supervised service.", labels=["service"]
        )
        state = GaugeMetricFamily(
            "trioshop_service_state", "1 for the state each service is in.",
            labels=["service", "state"],
        )
        processed = CounterMetricFamily(
            "trioshop_service_orders_processed", "Orders handled per service.",
            labels=["service"],
        )
        for service in stats.services:
            name = service.state.name
            restarts.add_metric([name], service.state.restarts)
            for status in ServiceStatus:
                state.add_metric([name, status.value], float(service.state.status is status))
            processed.add_metric([name], service.processed)
        yield restarts
        yield state
        yield processed

        yield CounterMetricFamily("trioshop_checkouts", "Orders placed.", stats.orders.checkouts)
        yield CounterMetricFamily(
            "trioshop_order_value", "Sum of order totals, in currency units.",
            stats.orders.revenue_cents / CENTS_PER_UNIT,
        )
        yield CounterMetricFamily(
            "trioshop_store_transactions", "Store transactions (group commits).",
            stats.store.transactions,
        )
        yield CounterMetricFamily(
            "trioshop_store_operations", "Store operations.", stats.store.operations
        )


@attrs.define(kw_only=True)
class Metrics:
    """One app's metrics, in a registry of its own (no process-global state)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    live_dropped: Counter  # events a too-slow /ops viewer lost (its buffer was full)

    @classmethod
    def create(cls, get_shop: Callable[[], Shop | None]) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        requests = Counter(
            "trioshop_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=registry,
        )
        latency = Histogram(
            "trioshop_http_request_duration_seconds", "HTTP request latency by route.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        live_dropped = Counter(
            "trioshop_live_events_dropped", "Live events dropped for slow /ops viewers.",
            registry=registry,
        )
        registry.register(ShopCollector(get_shop))
        return cls(
            registry=registry, requests=requests, latency=latency, live_dropped=live_dropped
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; *route* is a route template or ``unmatched``."""
        method = method if method in METHODS else OTHER_METHOD
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
