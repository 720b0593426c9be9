"""Requests per second and their p95 over the last minute, read from the latency histogram."""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any

import trio
from prometheus_client import Histogram

WINDOW_SECONDS = 60


def quantile(q: float, bounds: tuple[float, ...], counts: tuple[float, ...]) -> float | None:
    """The *q* quantile of a histogram (cumulative *counts* per upper bound), interpolated
    linearly inside its bucket as Prometheus' ``histogram_quantile`` does; ``None`` if empty."""
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


class RequestWindow:
    """One sample per second of the app's request histogram (summed over routes): the
    difference between two samples is what was answered between them, so requests cost
    nothing more than the metric they already update."""

    def __init__(self, histogram: Histogram, seconds: int = WINDOW_SECONDS) -> None:
        self._histogram = histogram
        self._samples: deque[tuple[float, tuple[float, ...]]] = deque(maxlen=seconds + 1)
        self._bounds: tuple[float, ...] = ()

    def sample(self) -> None:
        """Record the histogram's totals now (call once a second)."""
        buckets: dict[float, float] = {}
        for metric in self._histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        if not buckets:
            buckets = {math.inf: 0.0}
        bounds = tuple(sorted(buckets))
        if bounds != self._bounds:  # first sample (or new buckets): start afresh
            self._bounds = bounds
            self._samples.clear()
        self._samples.append((trio.current_time(), tuple(buckets[b] for b in bounds)))

    def view(self) -> dict[str, Any]:
        """Per second over the window: requests/s and p95 (ms); and both over the whole window."""
        samples = self._samples
        rates: list[float] = []
        p95: list[float | None] = []
        for (t0, before), (t1, after) in itertools.pairwise(samples):
            diff = tuple(a - b for a, b in zip(after, before, strict=True))
            rates.append(round(diff[-1] / max(t1 - t0, 1e-6), 2))
            p95.append(_ms(quantile(0.95, self._bounds, diff)))
        minute: float | None = None
        count = 0.0
        if len(samples) >= 2:
            first, last = samples[0][1], samples[-1][1]
            diff = tuple(a - b for a, b in zip(last, first, strict=True))
            count = diff[-1]
            minute = _ms(quantile(0.95, self._bounds, diff))
        return {
            "window_seconds": len(rates),
            "per_second": rates,
            "p95_ms": p95,
            "rate_now": rates[-1] if rates else 0.0,
            "requests_in_window": int(count),
            "p95_window_ms": minute,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
