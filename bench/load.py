"""The seed's k6 shopping scenario, in Python: ramping virtual users browse, add, view, check out.

    python bench/load.py --spawn                       # default stages: 10s→5 VUs, 30s hold, 10s→0
    python bench/load.py --spawn --vus 50 --think-scale 0 --duration 20s
    python bench/load.py --base-url http://127.0.0.1:8080 --stages 5s:20,20s:20,5s:0 --json
    python bench/load.py --spawn --find-capacity

Each virtual user (VU) loops: browse products (think 0.5 s); add 1-3 random SKUs with quantity
1-2 (0.3 s after each); view the cart (0.5 s); check out (0.5 s); pause 1 s. User ids are
``user_{vu}_{iteration}``. Thresholds, as in the seed: p95 latency < 500 ms and failed
requests < 5 %; the exit status is 1 when one is broken.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._http import Connection, HttpError
from trioshop.domain.limits import MAX_STOCK
from trioshop.testing.registry import registry_with_stock
from trioshop.testing.server import running_server

SKUS = ["LAPTOP-001", "KB-002", "MOUSE-003", "MON-004", "HP-005"]
GROUPS = ["browse", "add", "view", "checkout"]
P95_LIMIT_MS = 500.0
FAILED_LIMIT = 0.05
GRACEFUL_RAMP_DOWN = 30.0
REGISTRY = Path(__file__).resolve().parents[1] / "registry"


def log(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 500ms, 10s, 2m)")
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


def parse_stages(text: str) -> list[tuple[float, int]]:
    """``10s:5,30s:5,10s:0`` -> [(10.0, 5), (30.0, 5), (10.0, 0)], like k6's stages."""
    stages = []
    for part in text.split(","):
        duration, _, target = part.partition(":")
        stages.append((parse_duration(duration), int(target)))
    return stages


def target_at(stages: list[tuple[float, int]], elapsed: float) -> int | None:
    """VUs wanted *elapsed* seconds in (linear ramps, like ramping-vus); None once past the end."""
    start_vus, t0 = 0, 0.0
    for duration, target in stages:
        if elapsed < t0 + duration:
            fraction = (elapsed - t0) / duration if duration else 1.0
            return round(start_vus + (target - start_vus) * fraction)
        start_vus, t0 = target, t0 + duration
    return None


@attrs.define
class Stats:
    latencies: dict[str, list[float]] = attrs.field(factory=lambda: {g: [] for g in GROUPS})
    failures: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(GROUPS, 0))
    checkouts: int = 0
    iterations: int = 0
    statuses: Counter[int] = attrs.field(factory=Counter)  # 0: no answer

    def record(self, group: str, started: float, status: int) -> None:
        self.latencies[group].append(time.perf_counter() - started)
        self.statuses[status] += 1
        if not 200 <= status < 300:
            self.failures[group] += 1

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarize(stats: Stats, wall: float) -> dict[str, Any]:
    def block(latencies: list[float], failures: int) -> dict[str, Any]:
        return {
            "requests": len(latencies),
            "failed": failures,
            "rate_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p95_ms": round(percentile(latencies, 95) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        }

    every = [x for v in stats.latencies.values() for x in v]
    overall = block(every, stats.failed)
    failed_rate = stats.failed / len(every) if every else 0.0
    return {
        "groups": {g: block(stats.latencies[g], stats.failures[g]) for g in GROUPS},
        "overall": overall,
        "checkouts_completed": stats.checkouts,
        "iterations": stats.iterations,
        "duration_s": round(wall, 2),
        "thresholds": {
            "p95_below_500ms": overall["p95_ms"] < P95_LIMIT_MS,
            "failed_below_5pct": failed_rate < FAILED_LIMIT,
        },
        "failed_rate": round(failed_rate, 4),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
    }


class VirtualUser:
    """One shopper with its own keep-alive connection, looping until told to stop."""

    def __init__(self, number: int, base_url: str, stats: Stats, think_scale: float) -> None:
        self.number = number
        self.connection = Connection(base_url)
        self.stats = stats
        self.think_scale = think_scale
        self.stopping = False
        self.rng = random.Random(number)

    async def think(self, seconds: float) -> None:
        if self.think_scale > 0:
            await trio.sleep(seconds * self.think_scale)

    async def call(self, group: str, method: str, path: str, body: Any = None) -> int:
        started = time.perf_counter()
        try:
            status, _ = await self.connection.request(method, path, body)
        except HttpError:
            status = 0
        self.stats.record(group, started, status)
        return status

    async def run(self) -> None:
        iteration = 0
        try:
            while not self.stopping:
                user = f"user_{self.number}_{iteration}"
                await self.call("browse", "GET", "/api/products")
                await self.think(0.5)
                for _ in range(self.rng.randint(1, 3)):
                    sku = self.rng.choice(SKUS)
                    await self.call(
                        "add", "POST", f"/api/cart/{user}/items",
                        {"sku": sku, "quantity": self.rng.randint(1, 2)},
                    )
                    await self.think(0.3)
                await self.call("view", "GET", f"/api/cart/{user}")
                await self.think(0.5)
                if await self.call("checkout", "POST", f"/api/cart/{user}/checkout") == 200:
                    self.stats.checkouts += 1
                await self.think(0.5)
                await self.think(1.0)
                iteration += 1
                self.stats.iterations += 1
        finally:
            await self.connection.aclose()


async def run_scenario(
    base_url: str, stages: list[tuple[float, int]], think_scale: float, progress: bool
) -> dict[str, Any]:
    """Run the ramping-VUs scenario against *base_url* and return its summary."""
    stats = Stats()
    active: list[VirtualUser] = []
    next_number = 1
    started = time.perf_counter()
    cpu_started = time.process_time()
    last_progress = 0.0
    tty = sys.stderr.isatty()  # a live line on a terminal, a line every 5 s in a log
    async with trio.open_nursery() as nursery:
        while True:
            elapsed = time.perf_counter() - started
            target = target_at(stages, elapsed)
            if target is None:
                break
            while len(active) < target:
                vu = VirtualUser(next_number, base_url, stats, think_scale)
                next_number += 1
                active.append(vu)
                nursery.start_soon(vu.run)
            while len(active) > target:
                active.pop().stopping = True  # finishes its iteration, like k6's graceful ramp-down
            if progress and elapsed - last_progress >= (1.0 if tty else 5.0):
                last_progress = elapsed
                print(
                    f"{chr(13) if tty else ''}  t={elapsed:5.1f}s vus={len(active):4d} "
                    f"requests={stats.requests:7d} failed={stats.failed:5d} "
                    f"checkouts={stats.checkouts:6d}",
                    end="" if tty else "\n", file=sys.stderr, flush=True,
                )
            await trio.sleep(0.1)
        for vu in active:
            vu.stopping = True
        nursery.cancel_scope.deadline = trio.current_time() + GRACEFUL_RAMP_DOWN
    if progress and tty:
        print(file=sys.stderr)
    wall = time.perf_counter() - started
    summary = summarize(stats, wall)
    summary["generator_cpu_share"] = round((time.process_time() - cpu_started) / wall, 3)
    return summary


def print_report(summary: dict[str, Any], label: str) -> None:
    print(f"\n{label}")
    print(f"  {'group':10s} {'requests':>9s} {'failed':>7s} {'rate/s':>8s} "
          f"{'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    rows = [*summary["groups"].items(), ("overall", summary["overall"])]
    for name, row in rows:
        print(f"  {name:10s} {row['requests']:9d} {row['failed']:7d} {row['rate_per_s']:8.1f} "
              f"{row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['p99_ms']:8.2f}")
    thresholds = summary["thresholds"]
    print(f"  checkouts completed: {summary['checkouts_completed']}, "
          f"iterations: {summary['iterations']}, duration: {summary['duration_s']} s")
    print(f"  thresholds: p95 < 500 ms: {'ok' if thresholds['p95_below_500ms'] else 'BROKEN'}, "
          f"failed < 5 %: {'ok' if thresholds['failed_below_5pct'] else 'BROKEN'} "
          f"({summary['failed_rate'] * 100:.2f} %)")
    print(f"  answers by status: {summary['statuses']}")
    print(f"  load generator CPU share: {summary['generator_cpu_share']:.2f} of one core"
          + ("  (near 1.0: the generator limits the load)"
             if summary["generator_cpu_share"] > 0.9 else ""))


def passed(summary: dict[str, Any]) -> bool:
    return all(summary["thresholds"].values())


async def find_capacity(
    base_url: str, think_scale: float, step_seconds: float, max_vus: int, progress: bool
) -> dict[str, Any]:
    """Double the VUs until a threshold breaks, then bisect; report the largest that held."""
    steps: list[dict[str, Any]] = []

    async def step(vus: int) -> bool:
        ramp = min(5.0, step_seconds / 2)
        summary = await run_scenario(
            base_url, [(ramp, vus), (step_seconds, vus)], think_scale, progress
        )
        ok = passed(summary)
        steps.append({"vus": vus, "passed": ok, **summary["overall"]})
        print(f"  step {vus:5d} VUs: p95 {summary['overall']['p95_ms']:.1f} ms, "
              f"failed {summary['failed_rate'] * 100:.2f} %, "
              f"{summary['overall']['rate_per_s']:.0f} req/s -> {'held' if ok else 'broke'}")
        return ok

    held, broke = 0, None
    vus = 8
    while vus <= max_vus:
        if not await step(vus):
            broke = vus
            break
        held, vus = vus, vus * 2
    # Narrow the bracket to within ~10 % (at most 3 more steps).
    for _ in range(3):
        if broke is None or broke - held <= max(4, held // 10):
            break
        middle = (held + broke) // 2
        if await step(middle):
            held = middle
        else:
            broke = middle
    return {"max_vus_held": held, "first_broken": broke, "steps": steps}


def ample_stock_registry(folder: Path) -> Path:
    """Copy the repository's registry to *folder* with every stock at the most it accepts.

    A benchmark that runs the carts into the seed's stock (50 laptops, 200 keyboards)
    measures 409 answers, not the path it means to measure.
    """
    return registry_with_stock(REGISTRY, folder, MAX_STOCK)


@contextmanager
def server_for(args: argparse.Namespace) -> Iterator[str]:
    if not args.spawn:
        yield args.base_url
        return
    with tempfile.TemporaryDirectory() as scratch:
        # A long run would sell out the seed's stock (50 laptops) and measure 409s; the
        # spawned server gets the same catalog with stock to spare.
        registry = ample_stock_registry(Path(scratch) / "registry")
        data_dir = str(Path(scratch) / "data")
        extra = ["--registry", str(registry), "--data-dir", data_dir, *args.server_arg]
        with running_server(*extra) as server:
            print(f"spawned trioshop at {server.base_url}", file=sys.stderr)
            try:
                yield server.base_url
            finally:
                server.terminate()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--spawn", action="store_true", help="start a trioshop on a free port")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for the spawned server (repeatable)")
    parser.add_argument("--stages", type=parse_stages, default=parse_stages("10s:5,30s:5,10s:0"),
                        help="k6-style ramping stages, e.g. 10s:5,30s:5,10s:0")
    parser.add_argument("--vus", type=int, help="constant VUs instead of stages (see --duration)")
    parser.add_argument("--duration", type=parse_duration, default=30.0,
                        help="with --vus: how long to hold them (default 30s)")
    parser.add_argument("--think-scale", type=float, default=1.0,
                        help="multiply every think time (0 = no think time)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--find-capacity", action="store_true",
                        help="double VUs until a threshold breaks")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="find-capacity hold")
    parser.add_argument("--max-vus", type=int, default=4096, help="find-capacity upper bound")
    args = parser.parse_args()
    stages = [(0.0, args.vus), (args.duration, args.vus)] if args.vus else args.stages
    progress = sys.stderr.isatty() or not args.json

    with server_for(args) as base_url:
        if args.find_capacity:
            result = trio.run(
                find_capacity, base_url, args.think_scale, args.step_seconds, args.max_vus,
                progress,
            )
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                print(f"\nlargest number of concurrent shoppers held: {result['max_vus_held']} "
                      f"(think scale {args.think_scale})")
            return 0
        summary = trio.run(run_scenario, base_url, stages, args.think_scale, progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_report(summary, f"load test against {base_url}")
    return 0 if passed(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
