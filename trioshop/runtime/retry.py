"""One request's retries: every retry loop a request runs stops at its cap or at the
request's deadline, whichever comes first."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import trio

# The request's caps, stated once (docs/architecture.md, "Retry budgets", lists them with
# the store's own, such as PostgreSQL's STOCK_ATTEMPTS, which stay with the store). Every
# loop counts its tries with :func:`attempts` on the request's deadline (its Ticket's):
# none retries past it. A loop that reaches its cap tells its caller to retry later.

# A cart can end between our lookup and our message (checkout, idle); a fresh one is then
# spawned. Twice in a row is already unusual, a third time means something is wrong.
ACTOR_ENDED_ATTEMPTS = 3
# How many times a change is re-applied to a cart another node changed meanwhile. A retry
# goes at once, on the cart the conflict returned: a pause would only hand the row to the
# other writer again (measured: with a 2-20 ms backoff, 2-3 % of 400 adds racing on two
# nodes ran out of attempts; without, none did).
CONFLICT_ATTEMPTS = 50


def attempts(
    cap: int, deadline: float = math.inf, *, clock: Callable[[], float] = trio.current_time
) -> Iterator[int]:
    """Attempt numbers ``0, 1, ...``: at most *cap*, and after the first, only while
    *clock* (Trio's by default) is before *deadline* (the first attempt always goes)."""
    for attempt in range(cap):
        if attempt and not may_retry(deadline, clock=clock):
            return
        yield attempt


def may_retry(deadline: float, *, clock: Callable[[], float] = trio.current_time) -> bool:
    """Whether a request giving up at *deadline* may still start another try."""
    return clock() < deadline


def thread_deadline(deadline: float) -> float:
    """*deadline* (Trio time) on ``time.monotonic``'s clock, for a loop in a worker thread,
    where Trio's clock cannot be read: ``attempts(cap, until, clock=time.monotonic)``."""
    if deadline == math.inf:
        return math.inf
    return time.monotonic() + (deadline - trio.current_time())
