"""Tests of a request's retries: at most the cap, none after the first past the deadline."""

from __future__ import annotations

import math
import time

import trio
import trio.testing

from trioshop.runtime import Ticket, attempts, may_retry, thread_deadline


async def test_attempts_stop_at_the_cap_without_a_deadline() -> None:
    """With no deadline, a loop gets exactly its cap of attempts."""
    assert list(attempts(3)) == [0, 1, 2]
    assert list(Ticket().attempts(4)) == [0, 1, 2, 3]


async def test_attempts_stop_at_the_deadline_but_the_first_always_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past the deadline only the first attempt goes; before it, retries go until it passes."""
    past = Ticket(deadline=trio.current_time() - 1)
    assert list(past.attempts(5)) == [0]
    ticket = Ticket(deadline=trio.current_time() + 10)
    tried = []
    for attempt in ticket.attempts(50):
        tried.append(attempt)
        await trio.sleep(4)  # autojumped: each try takes 4 s of the request's 10
    assert tried == [0, 1, 2]


async def test_may_retry_and_thread_deadline_agree_on_both_clocks() -> None:
    """The deadline read on time.monotonic's clock (worker threads) says what Trio's says."""
    deadline = trio.current_time() + 60
    until = thread_deadline(deadline)
    assert may_retry(deadline) and may_retry(until, clock=time.monotonic)
    assert 59 < until - time.monotonic() <= 60
    assert thread_deadline(math.inf) == math.inf
    gone = thread_deadline(trio.current_time() - 1)
    assert not may_retry(gone, clock=time.monotonic)
    assert list(attempts(3, gone, clock=time.monotonic)) == [0]
