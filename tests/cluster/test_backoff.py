"""Tests of the cluster's restart pacing: the runtime's backoff rule with the cluster's figures."""

from __future__ import annotations

from trioshop.cluster.supervision import (
    RESTART_BACKOFF_FIRST,
    RESTART_BACKOFF_MAX,
    STABLE_AFTER,
    Backoff,
)


def test_failed_starts_double_the_delay_up_to_the_cap() -> None:
    """Failures in a row wait 0.5, 1, 2, ... seconds, never more than the cap."""
    backoff = Backoff()
    delays = [backoff.next() for _ in range(8)]
    first = RESTART_BACKOFF_FIRST
    assert delays[:3] == [first, 2 * first, 4 * first]
    assert delays[-1] == RESTART_BACKOFF_MAX and max(delays) == RESTART_BACKOFF_MAX


def test_a_stable_run_starts_the_count_again_a_short_one_does_not() -> None:
    """After a process served STABLE_AFTER seconds the next delay is the first again."""
    backoff = Backoff()
    for _ in range(3):
        backoff.next()
    backoff.ran(STABLE_AFTER - 1)
    assert backoff.next() == 8 * RESTART_BACKOFF_FIRST
    backoff.ran(STABLE_AFTER)
    backoff.ran(1.0)  # a restart asked for, then a short run: the stable run still counts
    assert backoff.next() == RESTART_BACKOFF_FIRST
    assert backoff.next() == 2 * RESTART_BACKOFF_FIRST
