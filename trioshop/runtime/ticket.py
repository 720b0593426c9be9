"""A caller's stake in one piece of work: abandoned by a caller that gives up, or claimed by
the worker that starts it, never both."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator

import attrs

from trioshop.runtime.retry import attempts


class _State(enum.Enum):
    OPEN = "open"
    CLAIMED = "claimed"
    ABANDONED = "abandoned"


@attrs.define(eq=False)
class Ticket:
    """Decides, once, whether a request's work happens: what makes a timeout tell the truth.

    A caller that gives up calls :meth:`abandon`; the worker, before it starts the work for
    good (e.g. takes it into a transaction), calls :meth:`claim`. Whichever comes first wins:
    an abandoned ticket is never claimed, so that work never happens; a claimed one cannot be
    abandoned, so its caller waits for the outcome. Both run on the Trio thread, so the
    decision needs no lock.
    """

    _state: _State = _State.OPEN
    # When the caller gives up (Trio time; inf: never): the worker bounds its waits by it.
    deadline: float = math.inf

    def claim(self) -> bool:
        """Take the work on; ``False`` if the caller has already given up (do not do it)."""
        if self._state is _State.ABANDONED:
            return False
        self._state = _State.CLAIMED
        return True

    def abandon(self) -> bool:
        """Give up; ``False`` if the work was already claimed (its outcome is coming)."""
        if self._state is _State.CLAIMED:
            return False
        self._state = _State.ABANDONED
        return True

    def attempts(self, cap: int) -> Iterator[int]:
        """The request's tries of one thing: at most *cap*, none after the first past its
        deadline (see :func:`~trioshop.runtime.retry.attempts`)."""
        return attempts(cap, self.deadline)

    @property
    def claimed(self) -> bool:
        return self._state is _State.CLAIMED
