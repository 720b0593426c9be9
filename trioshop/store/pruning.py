"""Deleting add idempotency keys past their retention while the store is open."""

from __future__ import annotations

import logging

import trio

from trioshop.logs import log_event
from trioshop.store.base import ADD_KEY_PRUNE_SECONDS, Store, StoreError

logger = logging.getLogger("trioshop.store")


async def prune_add_keys_periodically(
    store: Store, interval: float = ADD_KEY_PRUNE_SECONDS
) -> None:
    """Every *interval* seconds, delete the add keys past their retention; until cancelled.

    A store that does not answer is tried again at the next interval (its keys are only
    kept a little longer); the error is logged, never raised.
    """
    while True:
        await trio.sleep(interval)
        try:
            pruned = await store.prune_add_keys()
        except StoreError as exc:
            log_event(
                logger, "add keys not pruned", logging.WARNING, error=str(exc),
                retry_in=interval,
            )
            continue
        if pruned:
            log_event(logger, "add keys pruned", count=pruned)
