"""Throughput of the actor paths against the stack's floor, on one server, in one run.

    python bench/throughput.py                      # wrk if installed, else the Python generator
    python bench/throughput.py --seconds 5 --rounds 3 --connections 32
    python bench/throughput.py --generator python   # force the Python generator
    python bench/throughput.py --json

It starts one ``trioshop run`` (extra server flags with --server-arg) and measures, in
alternating rounds so that drift on a shared machine hits every endpoint alike:

- ``floor``     GET /healthz                 (the HTTP stack, no actor)
- ``products``  GET /api/products            (registry read, no actor)
- ``cart_read`` GET /api/cart/{user}         (actor request/reply)
- ``add``       POST /api/cart/{user}/items  (actor request/reply, state change)

and prints each endpoint's requests/s and p99, and its throughput as a ratio to the floor
(medians over the rounds). Targets: cart_read >= 0.85 x floor, add >= 0.75 x floor. That
server runs with --memory, so the figures are the actor path's, not the disk's.

Then it starts a second server with the SQLite store (a temporary --data-dir, fsync on every
commit) and alternates add-to-cart rounds between the two: durable add throughput as a
ratio to --memory (target >= 0.6).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._http import Connection, HttpError
from bench.load import percentile
from trioshop.testing.server import running_server

REGISTRY = Path(__file__).resolve().parents[1] / "registry"
USERS = 100
TARGETS = {"cart_read": 0.85, "add": 0.75}

LUA = {
    "floor": 'request = function() return wrk.format("GET", "/healthz") end',
    "products": 'request = function() return wrk.format("GET", "/api/products") end',
    "cart_read": f"""
request = function()
  return wrk.format("GET", "/api/cart/bench" .. math.random(1, {USERS}))
end""",
    "add": f"""
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format("POST", "/api/cart/bench" .. math.random(1, {USERS}) .. "/items", nil,
                    '{{"sku": "KB-002", "quantity": 1}}')
end""",
}
ENDPOINTS = list(LUA)

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(base_url: str, endpoint: str, seconds: float, connections: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA[endpoint])
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", script.name, base_url],
        check=True, capture_output=True, text=True,
    ).stdout
    Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    distribution = output.partition("Latency Distribution")[2]
    p99 = _seconds(re.search(r"99%\s+(\S+)", distribution).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": rps,
        "p99_ms": p99 * 1000,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


async def _python_load(
    base_url: str, endpoint: str, seconds: float, connections: int
) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal failures
        connection = Connection(base_url)
        i = n
        try:
            while time.perf_counter() < deadline:
                i += connections
                user = f"bench{i % USERS + 1}"
                method, path, body = {
                    "floor": ("GET", "/healthz", None),
                    "products": ("GET", "/api/products", None),
                    "cart_read": ("GET", f"/api/cart/{user}", None),
                    "add": ("POST", f"/api/cart/{user}/items", {"sku": "KB-002", "quantity": 1}),
                }[endpoint]
                started = time.perf_counter()
                try:
                    status, _ = await connection.request(method, path, body)
                except HttpError:
                    status = 0
                latencies.append(time.perf_counter() - started)
                failures += not 200 <= status < 300
        finally:
            await connection.aclose()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(connections):
            nursery.start_soon(worker, n)
    wall = time.perf_counter() - started
    return {
        "rps": len(latencies) / wall,
        "p99_ms": percentile(latencies, 99) * 1000,
        "non_2xx": failures,
        "socket_errors": "",
    }


def run_python(base_url: str, endpoint: str, seconds: float, connections: int) -> dict[str, Any]:
    return trio.run(_python_load, base_url, endpoint, seconds, connections)


async def _seed_carts(base_url: str) -> None:
    connection = Connection(base_url)
    try:
        for n in range(1, USERS + 1):
            status, body = await connection.request(
                "POST", f"/api/cart/bench{n}/items", {"sku": "MOUSE-003", "quantity": 1}
            )
            if status != 200:
                raise RuntimeError(f"seeding cart {n} failed: {status} {body!r}")
    finally:
        await connection.aclose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process *pid* has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    base_url: str, generator: str, seconds: float, rounds: int, connections: int,
    endpoints: list[str], server_pid: int,
) -> dict[str, list[dict[str, Any]]]:
    run = run_wrk if generator == "wrk" else run_python
    trio.run(_seed_carts, base_url)
    run(base_url, "floor", 1.0, connections)  # warm-up
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in endpoints}
    for round_number in range(rounds):
        # Rotate the order every round so no endpoint always runs first or last.
        shift = round_number % len(endpoints)
        order = endpoints[shift:] + endpoints[:shift]
        for endpoint in order:
            cpu_before, wall_before = cpu_seconds(server_pid), time.perf_counter()
            result = run(base_url, endpoint, seconds, connections)
            requests = result["rps"] * (time.perf_counter() - wall_before)
            # Server CPU per request: robust to other load on a shared machine, unlike req/s.
            result["cpu_us"] = (cpu_seconds(server_pid) - cpu_before) / requests * 1e6
            results[endpoint].append(result)
            print(f"  round {round_number + 1} {endpoint:10s} {result['rps']:9.0f} req/s  "
                  f"p99 {result['p99_ms']:7.2f} ms  {result['cpu_us']:6.0f} us CPU/req",
                  file=sys.stderr)
    return results


def measure_durability(
    memory_url: str, durable_url: str, generator: str, seconds: float, rounds: int,
    connections: int,
) -> dict[str, list[dict[str, Any]]]:
    """Alternate add-to-cart rounds between the in-memory and the SQLite server."""
    run = run_wrk if generator == "wrk" else run_python
    trio.run(_seed_carts, durable_url)
    results: dict[str, list[dict[str, Any]]] = {"add_memory": [], "add_durable": []}
    for round_number in range(rounds):
        pair = [("add_memory", memory_url), ("add_durable", durable_url)]
        for name, url in pair if round_number % 2 == 0 else pair[::-1]:
            result = run(url, "add", seconds, connections)
            result["cpu_us"] = 0.0
            results[name].append(result)
            print(f"  round {round_number + 1} {name:12s} {result['rps']:9.0f} req/s  "
                  f"p99 {result['p99_ms']:7.2f} ms", file=sys.stderr)
    return results


def summarize(results: dict[str, list[dict[str, Any]]], floor: str = "floor") -> dict[str, Any]:
    floor_rps = statistics.median(r["rps"] for r in results[floor])
    floor_cpu = statistics.median(r["cpu_us"] for r in results[floor])
    summary = {}
    for endpoint, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        summary[endpoint] = {
            "rps": round(rps, 1),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
            "ratio_to_floor": round(rps / floor_rps, 3),
            "cpu_us_per_request": round(cpu, 1),
            "cpu_ratio_to_floor": round(floor_cpu / cpu, 3),
            "target": TARGETS.get(endpoint),
            "non_2xx": sum(r["non_2xx"] for r in runs),
        }
    return summary


def print_table(summary: dict[str, Any], title: str) -> None:
    print(f"\n{title}")
    print(f"  {'endpoint':10s} {'req/s':>9s} {'p99 ms':>8s} {'x floor':>8s} "
          f"{'CPU us/req':>10s} {'x floor':>8s} {'target':>7s} {'non-2xx':>8s}")
    for endpoint, row in summary.items():
        target = row["target"]
        verdict = "" if target is None else ("ok" if row["ratio_to_floor"] >= target else "MISS")
        print(f"  {endpoint:10s} {row['rps']:9.0f} {row['p99_ms']:8.2f} "
              f"{row['ratio_to_floor']:8.3f} {row['cpu_us_per_request']:10.0f} "
              f"{row['cpu_ratio_to_floor']:8.3f} {'' if target is None else f'>={target}':>7s} "
              f"{row['non_2xx']:8d} {verdict}")
    print("  x floor: req/s relative to the floor; the CPU column's x floor is floor CPU/request "
          "divided by this endpoint's (the same ratio, measured without the machine's noise)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (medians reported)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for the server (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    print(f"generator: {generator}"
          + ("" if generator == "wrk" else " (install Debian's wrk for a lighter generator)"),
          file=sys.stderr)
    server_args = ["--registry", str(REGISTRY), *args.server_arg]
    with tempfile.TemporaryDirectory() as data_dir, \
            running_server(*server_args, "--memory") as memory, \
            running_server(*server_args, "--data-dir", data_dir) as durable:
        assert memory.process is not None
        results = measure(memory.base_url, generator, args.seconds, args.rounds,
                          args.connections, ENDPOINTS, memory.process.pid)
        durability = measure_durability(memory.base_url, durable.base_url, generator,
                                        args.seconds, args.rounds, args.connections)
        memory.terminate()
        durable.terminate()
    summary = summarize(results)
    adds = {name: statistics.median(r["rps"] for r in runs) for name, runs in durability.items()}
    durable_ratio = round(adds["add_durable"] / adds["add_memory"], 3)
    if args.json:
        print(json.dumps({
            "generator": generator, "endpoints": summary,
            "durability": {**{k: round(v, 1) for k, v in adds.items()},
                           "ratio": durable_ratio, "target": 0.6},
        }, indent=2))
    else:
        print_table(summary, f"throughput ({generator}, {args.connections} connections, "
                             f"{args.rounds} rounds x {args.seconds:g} s, medians, --memory)")
        verdict = "ok" if durable_ratio >= 0.6 else "MISS"
        print(f"\ndurability: add to cart with SQLite (fsync per commit) vs --memory\n"
              f"  memory {adds['add_memory']:.0f} req/s, durable {adds['add_durable']:.0f} req/s,"
              f" ratio {durable_ratio:.3f} (target >= 0.6) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
