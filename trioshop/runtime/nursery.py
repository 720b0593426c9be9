"""A nursery for background tasks that live around a caller's ``async with`` body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_service_nursery(*, cancel_on_exit: bool = True) -> AsyncIterator[trio.Nursery]:
    """A nursery whose tasks never raise (they handle their own errors), cancelled on exit.

    With ``cancel_on_exit=False`` the block's exit waits for the tasks to finish on their own
    (the caller has told them to, e.g. by closing their channel).

    Because its tasks keep their errors to themselves, a lone exception in the group can
    only be the caller's own: it is re-raised as is, so callers see ``KeyError`` rather than
    an ``ExceptionGroup`` wrapping it. Anything else propagates as the group it is.
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                if cancel_on_exit:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
