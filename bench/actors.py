"""The actor runtime alone, in process, next to a bare Trio task + memory channel.

    python bench/actors.py                  # 100 000 carts, 200 000 round trips
    python bench/actors.py --actors 20000 --round-trips 50000 --json

Three figures, each measured for trioshop's runtime and for the bare equivalent in the same
run, and given as a ratio:

- spawn rate: actors started per second (until every one is waiting on its mailbox);
- memory per idle actor: RSS growth over N live carts each holding one item, divided by N
  (each side is measured in a fresh subprocess so freed memory of one cannot hide the other's;
  the carts run as in a --memory server, with their idle timeout and store entries);
- request/reply round trips per second to one actor.

Targets: memory <= 1.5 x bare, round trips >= 0.5 x bare; N = 100 000 carts must work.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trioshop.domain import CartLine
from trioshop.runtime import EventBus, open_actor_host
from trioshop.shop.cart_actor import AddItem, CartDeps, new_cart
from trioshop.store import MemoryStore

ITEM = AddItem(CartLine("KB-002", "Mechanical Keyboard", 14999, 1))
CART_IDLE = 1800.0  # as the server spawns carts: with passivation on


async def cart_deps() -> CartDeps:
    """What a cart gets in a --memory server: a bus and the in-memory store."""
    store = MemoryStore()
    await store.add_stock({"KB-002": 10**12})
    return CartDeps(EventBus(), store)


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


# -- the bare equivalent: a task holding a dict, reached through a memory channel --------


async def bare_actor(receive: trio.MemoryReceiveChannel[Any]) -> None:
    lines: dict[str, Any] = {}
    async for message, reply in receive:
        lines[message.line.sku] = message
        if reply is not None:
            reply.send_nowait(message)


async def bare_request(send: trio.MemorySendChannel[Any], message: Any) -> Any:
    reply_send, reply_receive = trio.open_memory_channel[Any](1)
    send.send_nowait((message, reply_send))
    with trio.move_on_after(5):
        return await reply_receive.receive()
    raise TimeoutError


# -- measurements --------------------------------------------------------------------


async def fill_bare(count: int) -> tuple[float, float]:
    """Start *count* bare tasks holding one item each; returns (spawn seconds, bytes each)."""
    gc.collect()
    before = rss_bytes()
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        channels = []
        for _ in range(count):
            send, receive = trio.open_memory_channel[Any](256)
            nursery.start_soon(bare_actor, receive)
            channels.append(send)
        await trio.testing.wait_all_tasks_blocked()
        spawn_seconds = time.perf_counter() - started
        for send in channels:
            await bare_request(send, ITEM)
        gc.collect()
        per_actor = (rss_bytes() - before) / count
        nursery.cancel_scope.cancel()
    return spawn_seconds, per_actor


async def fill_actors(count: int) -> tuple[float, float]:
    """Start *count* cart actors holding one item each; returns (spawn seconds, bytes each)."""
    deps = await cart_deps()
    gc.collect()
    before = rss_bytes()
    async with open_actor_host(max_actors=count) as host:
        started = time.perf_counter()
        actors = [
            host.spawn(new_cart(f"user{n}", deps), name=f"cart:user{n}", idle_timeout=CART_IDLE)
            for n in range(count)
        ]
        await trio.testing.wait_all_tasks_blocked()
        spawn_seconds = time.perf_counter() - started
        for actor in actors:
            await host.request(actor, ITEM, timeout=5)
        assert len(host) == count, f"only {len(host)} of {count} carts are live"
        gc.collect()
        per_actor = (rss_bytes() - before) / count
    return spawn_seconds, per_actor


async def round_trips(kind: str, count: int) -> float:
    """Request/reply round trips per second to one actor."""
    async with trio.open_nursery() as nursery:
        if kind == "bare":
            send, receive = trio.open_memory_channel[Any](256)
            nursery.start_soon(bare_actor, receive)
            started = time.perf_counter()
            for _ in range(count):
                await bare_request(send, ITEM)
        else:
            async with open_actor_host() as host:
                actor = host.spawn(new_cart("u", await cart_deps()), idle_timeout=CART_IDLE)
                started = time.perf_counter()
                for _ in range(count):
                    await host.request(actor, ITEM, timeout=5)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return count / elapsed


def child(kind: str, actors: int) -> None:
    """Run one memory/spawn measurement in this (fresh) process and print it as JSON."""
    import logging

    logging.disable(logging.INFO)  # 100 000 'cart created' lines would measure the logger
    spawn_seconds, per_actor = trio.run(fill_bare if kind == "bare" else fill_actors, actors)
    print(json.dumps({"spawn_per_s": actors / spawn_seconds, "bytes_per_actor": per_actor}))


def measure_in_subprocess(kind: str, actors: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--actors", str(actors)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--actors", type=int, default=100_000)
    parser.add_argument("--round-trips", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["bare", "actor"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.actors)
        return 0

    import logging

    logging.disable(logging.INFO)
    results: dict[str, dict[str, float]] = {"bare": {}, "actor": {}}
    for kind in ("bare", "actor"):
        print(f"  {kind}: {args.actors} live actors ...", file=sys.stderr)
        results[kind].update(measure_in_subprocess(kind, args.actors))
    # Alternate the round-trip runs so drift on a shared machine hits both alike.
    rates: dict[str, list[float]] = {"bare": [], "actor": []}
    for _ in range(3):
        for kind in ("bare", "actor"):
            rates[kind].append(trio.run(round_trips, kind, args.round_trips // 3))
    for kind in rates:
        results[kind]["round_trips_per_s"] = sorted(rates[kind])[1]

    bare, actor = results["bare"], results["actor"]
    summary = {
        "actors": args.actors,
        "bare": {k: round(v, 1) for k, v in bare.items()},
        "actor": {k: round(v, 1) for k, v in actor.items()},
        "ratios": {
            "spawn_rate": round(actor["spawn_per_s"] / bare["spawn_per_s"], 3),
            "memory_per_actor": round(actor["bytes_per_actor"] / bare["bytes_per_actor"], 3),
            "round_trips": round(actor["round_trips_per_s"] / bare["round_trips_per_s"], 3),
        },
        "targets": {"memory_per_actor": "<= 1.5", "round_trips": ">= 0.5"},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"\nactor runtime vs bare trio task + memory channel ({args.actors} live carts)")
    print(f"  {'figure':22s} {'trioshop':>12s} {'bare':>12s} {'ratio':>7s} {'target':>8s}")
    rows = [
        ("spawn rate (/s)", "spawn_per_s", "spawn_rate", ""),
        ("memory per actor (B)", "bytes_per_actor", "memory_per_actor", "<= 1.5"),
        ("round trips (/s)", "round_trips_per_s", "round_trips", ">= 0.5"),
    ]
    for label, key, ratio, target in rows:
        print(f"  {label:22s} {actor[key]:12.0f} {bare[key]:12.0f} "
              f"{summary['ratios'][ratio]:7.3f} {target:>8s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
