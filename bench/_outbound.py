"""Parts 4 and 5 of bench/throughput.py: what the orders relay and tracing cost a server.

4. Two SQLite servers (fsync per commit), one publishing every order to a Redis stream
   (``--events-redis``), one not; rounds of checkouts alternate between them. A checkout
   needs a filled cart, so each connection loops add-then-checkout on a user of its own
   (the Python generator: wrk cannot keep a request pair on one connection in order); the
   figure is checkouts per second, its p99, and server CPU per add+checkout pair. At the
   end every order placed on the relay server must be in the stream (XLEN), or the run fails.
5. Three ``--memory`` servers: tracing off, on at 1 % and at 100 % sampling (exporting to an
   OTLP JSON file in the bench's scratch folder); cart reads (one actor hop: server span,
   actor span) and adds (a store batch too) alternate between them; the figure is server CPU
   per request against tracing off.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trio

from bench._http import Connection, HttpError, tally, timed_workers
from bench.load import percentile
from trioshop.testing.redis import delete_stream, stream_length

RELAY_TARGET = 0.9  # checkouts/s with the relay on over off
# How long the relay server may take, after the last round, to publish its backlog.
DRAIN_SECONDS = 60.0

Result = dict[str, Any]
_users = itertools.count(1)


async def _checkout_load(base_url: str, seconds: float, connections: int) -> Result:
    """Each connection: add one item to a fresh user's cart, check it out, again."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = time.perf_counter() + seconds

    async def worker(_: int) -> None:
        connection = Connection(base_url)
        try:
            while time.perf_counter() < deadline:
                user = f"co{next(_users)}"
                try:
                    status, _ = await connection.request(
                        "POST", f"/api/cart/{user}/items", {"sku": "KB-002", "quantity": 1}
                    )
                    if status != 200:
                        statuses[status] += 1
                        continue
                    started = time.perf_counter()
                    status, _ = await connection.request("POST", f"/api/cart/{user}/checkout")
                except HttpError:
                    status = 0
                else:
                    latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            await connection.aclose()

    wall = await timed_workers(worker, connections)
    placed = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return tally(statuses, 0, {
        "rps": placed / wall,
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else 0.0,
        "requests": max(1, placed),
        "wall": wall,
        "socket_errors": "",
        "placed": placed,
    })


def run_checkouts(base_url: str, endpoint: str, seconds: float, connections: int) -> Result:
    """A runner for ``alternate``: *endpoint* must be ``checkout``."""
    assert endpoint == "checkout", endpoint
    return trio.run(_checkout_load, base_url, seconds, connections)


def wait_published(url: str, stream: str, placed: int) -> tuple[int, float]:
    """Poll the stream's length until it holds *placed* entries or DRAIN_SECONDS pass;
    (entries, seconds waited)."""
    started = time.perf_counter()
    while True:
        length = trio.run(stream_length, url, stream)
        waited = time.perf_counter() - started
        if length >= placed or waited > DRAIN_SECONDS:
            return length, waited
        time.sleep(0.2)


def measure_relay(
    server_args: list[str], scratch: Path, args: argparse.Namespace, logs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Part 4: checkouts with the relay on against off, and every order in the stream."""
    from bench.throughput import Target, alternate, stopped_at_exit, summarize_pair
    from trioshop.testing.server import running_server

    stream = f"bench.orders.{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        stack.callback(lambda: trio.run(delete_stream, args.redis, stream))
        off = stack.enter_context(
            running_server(*server_args, "--data-dir", str(scratch / "relay-off"))
        )
        stack.enter_context(stopped_at_exit(off, "relay-off", logs))
        on = stack.enter_context(running_server(
            *server_args, "--data-dir", str(scratch / "relay-on"),
            "--events-redis", args.redis, "--events-stream", stream,
        ))
        stack.enter_context(stopped_at_exit(on, "relay-on", logs))
        print(f"4. checkout: orders relay to Redis ({stream}) on against off", file=sys.stderr)
        run_checkouts(off.base_url, "checkout", 1.0, args.connections)  # warm up
        placed = run_checkouts(on.base_url, "checkout", 1.0, args.connections)["placed"]
        results = alternate(run_checkouts, [Target("relay-off", off), Target("relay-on", on)],
                            ["checkout"], args.seconds, args.rounds, args.connections)
        placed += sum(r["placed"] for r in results["relay-on"]["checkout"])
        published, waited = wait_published(args.redis, stream, placed)
    summary = summarize_pair(results, "relay-on", "relay-off", {"checkout": RELAY_TARGET})
    return {"stream": stream, "summary": summary, "placed": placed,
            "published": published, "drain_seconds": round(waited, 1)}


def measure_tracing(
    server_args: list[str], scratch: Path, args: argparse.Namespace, logs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Part 5: CPU per request with tracing off, at 1 % and at 100 % sampling."""
    from bench.throughput import (
        Target,
        alternate,
        choose_generator,
        prepare,
        stopped_at_exit,
        summarize_pair,
    )
    from trioshop.testing.server import running_server

    _, run = choose_generator(args.generator)
    ratios = {"off": None, "1%": "0.01", "100%": "1.0"}
    targets = []
    with ExitStack() as stack:
        for name, ratio in ratios.items():
            extra = [] if ratio is None else [
                "--otel-exporter", f"otlp-file:{scratch / f'traces-{ratio}.jsonl'}",
                "--otel-sample-ratio", ratio,
            ]
            server = stack.enter_context(running_server(*server_args, "--memory", *extra))
            stack.enter_context(stopped_at_exit(server, f"trace-{name}", logs))
            prepare(run, server.base_url, args.connections)
            targets.append(Target(name, server))
        print("5. tracing off, at 1 % and at 100 % sampling (--memory)", file=sys.stderr)
        results = alternate(run, targets, ["cart_read", "add"], args.seconds, args.rounds,
                            args.connections)
    return {
        name: summarize_pair(results, name, "off", {}) for name in ("1%", "100%")
    }


def print_relay(part: dict[str, Any]) -> None:
    from bench.throughput import print_pair

    print_pair(part["summary"], "4. checkout (add + checkout per user, Python generator): "
               "relay on vs off, SQLite", "relay-on", "relay-off")
    verdict = "ok" if part["published"] >= part["placed"] else "MISSING ORDERS"
    print(f"  stream {part['stream']}: {part['published']} entries for {part['placed']} orders "
          f"placed with the relay on, {part['drain_seconds']} s after the last round: {verdict}")


def print_tracing(part: dict[str, dict[str, Any]]) -> None:
    print("\n5. tracing: server CPU per request against tracing off (--memory, OTLP JSON file)")
    print(f"  {'endpoint':10s} {'sampling':8s} {'req/s':>7s} {'CPU us/req':>10s} "
          f"{'+CPU us':>8s} {'x off req/s':>11s}")
    for name, summary in part.items():
        for endpoint, pair in summary.items():
            on, off = pair[name], pair["off"]
            extra = on["cpu_us_per_request"] - off["cpu_us_per_request"]
            ratio = "refused" if pair["refused"] else f"{pair['ratio']:.3f}"
            print(f"  {endpoint:10s} {name:8s} {on['rps']:7.0f} {on['cpu_us_per_request']:10.0f}"
                  f" {extra:8.0f} {ratio:>11s}   (off: {off['rps']:.0f} req/s, "
                  f"{off['cpu_us_per_request']:.0f} us)")
