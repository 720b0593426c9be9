"""A consumer of trioshop's orders stream: a consumer group, XACK, XAUTOCLAIM, de-duplication.

Run one or more of these (each with its own ``--consumer`` name) against the stream the relay
publishes to (``trioshop run --events-redis URL``)::

    python examples/consume_orders.py --redis redis://127.0.0.1:6379/0 --group warehouse \\
        --consumer c1

Each order is handled once per group in effect, though the stream may hold it twice (the
relay publishes at least once): an entry is acknowledged (XACK) only after it was handled,
entries another consumer of the group read but never acknowledged (it died) are taken over
with XAUTOCLAIM once idle for ``--claim-idle-ms``, and orders already handled are skipped by
their ``order_id``. The seen set lives in memory here; a real consumer keeps it where its
effect goes, in the same transaction (a unique key on ``order_id`` in the warehouse's
database), so that a crash between the effect and the XACK cannot do the effect twice.

Order: the relay adds one user's orders in the order they were placed (``user_id`` is the
ordering key), but that order holds per read of the stream, not per group: a group spreads
its entries over its consumers, and XAUTOCLAIM hands a dead consumer's entries to another
after the ones read since, so with several consumers two orders of one user can be handled
out of order or at once. A consumer that needs per-user order partitions by ``user_id``:
N consumers, each reading the whole stream in order (its own group, with this one consumer)
and handling only the users that hash to it; within one such read an order that comes after
a later order of its user is a repeat, which the ``order_id`` de-duplication skips. The seen
set then goes in each partition's database (or one shared table), written with the effect.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence

import coredis
import trio
from coredis.exceptions import RedisError, StreamDuplicateConsumerGroupError
from coredis.response.types import StreamEntry

# The entry layout this consumer reads (trioshop.shop.relay.SCHEMA_VERSION).
SCHEMA = "1"
BATCH = 100


class Consumer:
    """One consumer of a group: handles entries, acknowledges them, remembers order ids."""

    def __init__(self, client: coredis.Redis[str], args: argparse.Namespace) -> None:
        self.client, self.args = client, args
        self.seen: set[str] = set()  # for real: in the database the effect is written to

    async def join(self) -> None:
        """Create the group (from the stream's start) unless it exists."""
        with contextlib.suppress(StreamDuplicateConsumerGroupError):  # another one did
            await self.client.xgroup_create(
                self.args.stream, self.args.group, "0", mkstream=True
            )

    async def take_over(self) -> int:
        """XAUTOCLAIM the group's entries idle for ``--claim-idle-ms`` (a dead consumer's)
        and handle them; how many were claimed."""
        start, claimed = "0-0", 0
        while True:
            reply = await self.client.xautoclaim(
                self.args.stream, self.args.group, self.args.consumer,
                self.args.claim_idle_ms, start, count=BATCH,
            )
            start, entries = reply[0], reply[1]
            await self.handle_all([e for e in entries if isinstance(e, StreamEntry)])
            claimed += len(entries)
            if start == "0-0":
                return claimed

    async def read_new(self) -> None:
        """XREADGROUP the entries no consumer of the group has read yet (waits a while)."""
        reply = await self.client.xreadgroup(
            self.args.group, self.args.consumer, {self.args.stream: ">"},
            count=BATCH, block=self.args.block_ms,
        )
        for entries in (reply or {}).values():
            await self.handle_all(list(entries))

    async def handle_all(self, entries: Sequence[StreamEntry]) -> None:
        for entry in entries:
            fields = {str(key): str(value) for key, value in entry.field_values.items()}
            self.handle(str(entry.identifier), fields)
            await self.client.xack(self.args.stream, self.args.group, [entry.identifier])

    def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """Handle one entry (here: print it), or skip it as a duplicate or an unknown schema."""
        order_id = fields.get("order_id", "")
        if fields.get("schema") != SCHEMA:
            print(f"skipped entry={entry_id} schema={fields.get('schema')!r}: unknown layout",
                  flush=True)
        elif order_id in self.seen:
            print(f"duplicate order_id={order_id} entry={entry_id} skipped", flush=True)
        else:
            order = json.loads(fields["order"])
            print(
                f"handled order_id={order_id} user_id={fields['user_id']} "
                f"items={len(order['items'])} total={order['total']} entry={entry_id}",
                flush=True,
            )
            self.seen.add(order_id)


async def consume(args: argparse.Namespace) -> str | None:
    """Handle orders until ``--count`` were handled (or forever); what went wrong, if
    Redis failed (caught here: leaving the client's block it would come as a group)."""
    client: coredis.Redis[str] = coredis.Redis.from_url(args.redis, decode_responses=True)
    async with client:
        consumer = Consumer(client, args)
        try:
            await consumer.join()
            while args.count is None or len(consumer.seen) < args.count:
                await consumer.take_over()
                await consumer.read_new()
        except (RedisError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--stream", default="trioshop.orders")
    parser.add_argument("--group", required=True, help="consumer group, e.g. warehouse")
    parser.add_argument("--consumer", required=True, help="this consumer's name in the group")
    parser.add_argument("--claim-idle-ms", type=int, default=60_000,
                        help="take over another consumer's entries idle this long (60 s)")
    parser.add_argument("--block-ms", type=int, default=5_000,
                        help="how long one read waits for new entries (5 s)")
    parser.add_argument("--count", type=int, default=None,
                        help="exit after handling this many orders (default: run until ^C)")
    args = parser.parse_args(argv)
    try:
        error = trio.run(consume, args)
    except KeyboardInterrupt:
        return 0
    if error is not None:
        print(f"consume_orders: {args.redis}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
