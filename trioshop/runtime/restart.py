"""How restarts of a failing thing are paced: one backoff rule (validated, frozen), and the
supervisor's policy built on it."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs


def _whole_positive(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    # bool is an int subclass; ``True`` is not an attempt count.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"field '{attribute.name}' must be a positive integer, got {value!r}")


def _number(low: float, high: float = math.inf) -> Callable[..., None]:
    """A finite number (not a bool) from *low* to *high*."""
    bounds = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"

    def check(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise ValueError(f"field '{attribute.name}' must be a number {bounds}, got {value!r}")

    return check


_non_negative = _number(0.0)


@attrs.frozen(kw_only=True)
class RestartBackoff:
    """How long a thing that keeps failing waits before its next start: exponential backoff
    with jitter, counted over its failures in a row.

    The n-th failure in a row waits :meth:`delay` (n) = ``initial_delay`` times
    ``backoff_factor`` to the n-1, capped at ``max_delay``; a run that lasted
    ``stable_threshold`` seconds before it failed starts the count again
    (:meth:`failures_in_a_row`).
    """

    initial_delay: float = attrs.field(validator=_non_negative)
    max_delay: float = attrs.field(default=90.0, validator=_non_negative)
    backoff_factor: float = attrs.field(default=2.0, validator=_number(1.0))
    jitter: float = attrs.field(default=0.1, validator=_number(0.0, 1.0))
    stable_threshold: float = attrs.field(default=5.0, validator=_non_negative)

    def failures_in_a_row(self, before: int, ran_for: float) -> int:
        """The count after one more failure, *before* failures in a row having come before
        it and its run having lasted *ran_for* seconds (a stable run: the count restarts)."""
        return (0 if ran_for >= self.stable_threshold else before) + 1

    def delay(self, attempt: int, jitter_draw: float = 0.0) -> float:
        """The pause before restart number *attempt* (1-based); *jitter_draw* lies in [-1, 1]."""
        base = min(self.initial_delay * self.backoff_factor ** (attempt - 1), self.max_delay)
        return max(0.0, base * (1.0 + self.jitter * jitter_draw))


@attrs.frozen(kw_only=True)
class RestartPolicy(RestartBackoff):
    """A supervised service's :class:`RestartBackoff`, given up after ``max_attempts``
    failures in a row."""

    max_attempts: int = attrs.field(validator=_whole_positive)
