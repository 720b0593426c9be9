"""One request's retry budget: every retry loop a request runs stops at its cap or at the
request's deadline, whichever comes first."""

from __future__ import annotations

import math
from collections.abc import Iterator

import attrs
import trio

# The request's caps, stated once (docs/architecture.md, "Retry budgets"; the store's own,
# such as PostgreSQL's STOCK_ATTEMPTS, stay with the store). A loop that reaches one tells
# its caller to retry later; none retries past its request's deadline.

# A cart can end between our lookup and our message (checkout, idle); a fresh one is then
# spawned. Twice in a row is already unusual, a third time means something is wrong.
ACTOR_ENDED_ATTEMPTS = 3
# How many times a change is re-applied to a cart another node changed meanwhile. A retry
# goes at once, on the cart the conflict returned: a pause would only hand the row to the
# other writer again (measured: with a 2-20 ms backoff, 2-3 % of 400 adds racing on two
# nodes ran out of attempts; without, none did).
CONFLICT_ATTEMPTS = 50


@attrs.frozen(kw_only=True)
class RetryBudget:
    """Until when one request may try again (Trio time; ``inf``: no deadline of its own)."""

    deadline: float = math.inf

    def attempts(self, cap: int) -> Iterator[int]:
        """Attempt numbers ``0, 1, ...``: at most *cap*, and after the first, only while the
        deadline has not passed (the first attempt always goes)."""
        for attempt in range(cap):
            if attempt and not self.allows_retry():
                return
            yield attempt

    def allows_retry(self) -> bool:
        """Whether the request's deadline leaves time for another attempt."""
        return trio.current_time() < self.deadline
