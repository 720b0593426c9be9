"""The example consumer (examples/consume_orders.py) against a real Redis: each order once."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import coredis
import trio

from tests.redis import fresh_stream
from trioshop.domain import CartLine, Order
from trioshop.shop.relay import stream_entry

EXAMPLE = Path(__file__).parents[2] / "examples" / "consume_orders.py"
HANDLED = re.compile(r"^handled order_id=(\S+) user_id=(\S+)", re.MULTILINE)
DUPLICATE = re.compile(r"^duplicate order_id=(\S+)", re.MULTILINE)


def order(order_id: str, user_id: str) -> Order:
    line = CartLine("KB-002", "Keyboard", 14999, 2)
    return Order(order_id, user_id, (line,), 29998, 1_700_000_000)


def test_the_example_takes_over_a_dead_consumer_and_skips_a_duplicate() -> None:
    """Two entries a dead consumer read, a duplicate and a new one: three orders handled once
    each, the duplicate skipped, nothing left pending."""
    with fresh_stream() as (url, stream):
        client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)

        async def publish(*orders: Order) -> None:
            async with client:
                for each in orders:
                    await client.xadd(stream, stream_entry(each))

        async def dead_consumer_reads() -> None:
            async with client:
                await client.xgroup_create(stream, "warehouse", "0", mkstream=True)
                await client.xreadgroup("warehouse", "c0", {stream: ">"}, count=10)

        async def pending() -> int:
            async with client:
                return (await client.xpending(stream, "warehouse")).pending

        trio.run(publish, order("o1", "ann"), order("o2", "ben"))
        trio.run(dead_consumer_reads)  # c0 read both and died before its XACKs
        trio.run(publish, order("o1", "ann"), order("o3", "ann"))  # at least once: o1 again
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--redis", url, "--stream", stream,
             "--group", "warehouse", "--consumer", "c1", "--claim-idle-ms", "0",
             "--block-ms", "1000", "--count", "3"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stderr
        handled = Counter(m.group(1) for m in HANDLED.finditer(result.stdout))
        assert handled == {"o1": 1, "o2": 1, "o3": 1}, result.stdout
        assert DUPLICATE.findall(result.stdout) == ["o1"]
        assert trio.run(pending) == 0
