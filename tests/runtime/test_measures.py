"""Tests of the runtime's measures: fixed-bucket histograms, their quantiles, the kind table."""

from __future__ import annotations

import pytest

from trioshop.runtime.measures import (
    MAX_KINDS,
    OTHER_KIND,
    Histogram,
    KindTable,
    kind_of,
)


def test_observations_land_in_the_bucket_of_their_upper_bound() -> None:
    """A value equal to a bound counts in that bound's bucket (Prometheus' ``le``)."""
    histogram = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 2.0, 7.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.cumulative == (2, 4, 5)
    assert snapshot.count == 5
    assert snapshot.sum == pytest.approx(12.0)


def test_quantile_interpolates_within_its_bucket() -> None:
    """The median of ten values spread over (0, 1] and (1, 2] falls in the first bucket's top."""
    histogram = Histogram((1.0, 2.0))
    for value in [0.5] * 6 + [1.5] * 4:
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.quantile(0.5) == pytest.approx(5 / 6)
    assert snapshot.quantile(0.9) == pytest.approx(1.75)


def test_quantile_past_the_last_bound_is_that_bound_and_none_when_empty() -> None:
    """A quantile in the +Inf bucket reads as the largest bound; an empty histogram has none."""
    histogram = Histogram((1.0, 2.0))
    assert histogram.snapshot().quantile(0.5) is None
    histogram.observe(30.0)
    assert histogram.snapshot().quantile(0.99) == 2.0


@pytest.mark.parametrize("q", [0.0, 1.0, -0.5, 2.0])
def test_quantile_outside_zero_one_is_refused(q: float) -> None:
    """Only 0 < q < 1 is taken (q = 0 divided by an empty bucket): a clear ValueError otherwise."""
    histogram = Histogram((1.0, 2.0))
    histogram.observe(1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram.snapshot().quantile(q)


def test_kind_is_the_name_before_the_first_colon() -> None:
    """``cart:alice`` is a cart, ``cart:a:b`` too, an unnamed actor is ``actor``."""
    assert kind_of("cart:alice") == "cart"
    assert kind_of("cart:a:b") == "cart"
    assert kind_of("ledger") == "ledger"
    assert kind_of(None) == "actor"


def test_kind_table_is_bounded() -> None:
    """Past MAX_KINDS - 1 kinds, each new kind is measured as ``other``: the labels are capped."""
    table = KindTable()
    first = table.of("cart:alice")
    assert table.of("cart:bob") is first
    for n in range(MAX_KINDS + 10):
        table.of(f"kind{n}:x")
    kinds = [statistics.kind for statistics in table.snapshot()]
    assert len(kinds) == MAX_KINDS
    assert OTHER_KIND in kinds
    assert kinds == sorted(kinds)
