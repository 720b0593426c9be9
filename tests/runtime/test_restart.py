"""Tests of the restart backoff rule: doubling from the initial delay, capped, reset by a
stable run."""

from __future__ import annotations

import pytest

from trioshop.runtime.restart import RestartBackoff, RestartPolicy

RULE = RestartBackoff(initial_delay=1, max_delay=4, jitter=0, stable_threshold=5)


def test_delay_doubles_per_failure_in_a_row_up_to_the_cap() -> None:
    """The n-th failure in a row waits initial_delay * 2^(n-1), never more than max_delay."""
    assert [RULE.delay(n) for n in range(1, 6)] == [1, 2, 4, 4, 4]


def test_a_stable_run_starts_the_count_again() -> None:
    """A failure after a run of stable_threshold seconds is the first again; a shorter one adds."""
    assert RULE.failures_in_a_row(3, ran_for=4.9) == 4
    assert RULE.failures_in_a_row(3, ran_for=5.0) == 1
    assert RULE.failures_in_a_row(0, ran_for=0.0) == 1


def test_the_policy_is_the_rule_with_a_limit() -> None:
    """RestartPolicy paces as RestartBackoff does and adds only max_attempts."""
    policy = RestartPolicy(
        max_attempts=3, initial_delay=1, max_delay=4, jitter=0, stable_threshold=5
    )
    assert [policy.delay(n) for n in range(1, 5)] == [RULE.delay(n) for n in range(1, 5)]
    assert policy.failures_in_a_row(2, 5.0) == 1
    with pytest.raises(ValueError, match="max_attempts"):
        RestartPolicy(max_attempts=0, initial_delay=1)
