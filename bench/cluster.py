"""Through HAProxy: add and cart read on one and on two trioshop nodes, and on the peer, in one run.

    python bench/cluster.py                         # 3 rounds x 5 s, 32 connections, wrk
    python bench/cluster.py --rounds 5 --seconds 10
    python bench/cluster.py --skip-peer             # only the two clusters
    python bench/cluster.py --peer-workers 4
    python bench/cluster.py --database postgresql://user@host:5432/db

Three targets run side by side on this machine, each on a fresh schema of one PostgreSQL
database (default ``postgresql://postgres@127.0.0.1:5432/test``) and on the shipped catalog
with every stock raised to the most the registry accepts (no round sells out):

- ``1 node``:  ``trioshop cluster --nodes 1`` (HAProxy in front of one node);
- ``2 nodes``: ``trioshop cluster --nodes 2``;
- ``peer``:    FastAPI + uvicorn with ``--peer-workers`` workers (default: the number of
  cores) and the carts in PostgreSQL (``bench/peers/``; its virtualenv
  ``bench/peers/.venv`` is created on first use).

Each round runs wrk (one thread, ``--connections``) against each target in turn, for add
(``POST /api/cart/{user}/items``, 100 users) and cart read (``GET /api/cart/{user}``); the
order of targets and endpoints rotates every round so that drift on a shared machine hits
all alike. Every round counts non-2xx answers; a target with any gets no ratio and the run
exits with status 1. CPU per request is measured for every process that serves, from /proc:
the nodes, HAProxy (and the cluster's supervisor process), the uvicorn workers, each
target's PostgreSQL backends (found by ``application_name``), and the generator (wrk).

Reported: per target and endpoint the medians of req/s, p99 and CPU µs per request by
process; the ratios 2 nodes / 1 node (goals: >= 1.5 on reads, >= 1.3 on adds) and 2 nodes /
peer (goals: >= 1 on reads; p99 <= the peer's on both); and, from the CPU per request, what
N cores would serve with the generator on other machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import ample_stock_registry, log
from bench.throughput import (
    PostgresBackends,
    Result,
    choose_generator,
    cpu_seconds,
    is_local,
    prepare,
    ratio,
    refusal,
    schema_url,
)
from trioshop.registry import load_registry
from trioshop.testing.postgres import DEFAULT_URL, scratch_schema
from trioshop.testing.server import ClusterProcess, free_port, running_cluster

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
PEER_VENV = PEERS / ".venv"
ENDPOINTS = ["cart_read", "add"]
GOALS_SCALE = {"cart_read": 1.5, "add": 1.3}  # 2 nodes / 1 node, req/s
GOAL_PEER_READS = 1.0  # 2 nodes / peer, req/s on cart reads
PEER_START_TIMEOUT = 60.0
PROJECTED_CORES = (2, 4, 8, 16)
GROUPS = ("server", "proxy", "postgres", "generator")


def children(pid: int) -> list[int]:
    """The child processes of *pid* (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


class Target:
    """One system under test: its URL, how to find the pids of each process group, and its
    PostgreSQL backends."""

    def __init__(
        self, name: str, url: str, pids: Callable[[], dict[str, list[int]]],
        backends: PostgresBackends | None,
    ) -> None:
        self.name = name
        self.url = url
        self.pids = pids
        self.backends = backends

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process group (PostgreSQL apart)."""
        used: dict[str, float] = {}
        for group, pids in self.pids().items():
            total = 0.0
            for pid in pids:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    total += cpu_seconds(pid)
            used[group] = total
        return used


def generator_cpu() -> float:
    """CPU seconds of every waited-for child so far: the generator runs are those."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_once(run: Callable[..., Result], target: Target, endpoint: str,
                 seconds: float, connections: int) -> Result:
    pg_before = target.backends.snapshot() if target.backends else {}
    before, generator_before = target.cpu(), generator_cpu()
    result = run(target.url, endpoint, seconds, connections)
    after, generator_after = target.cpu(), generator_cpu()
    requests = max(1, result["requests"])
    cpu = {group: (after[group] - before.get(group, 0.0)) / requests * 1e6 for group in after}
    if target.backends is not None:
        used, _ = target.backends.used_since(pg_before)
        cpu["postgres"] = used / requests * 1e6
    cpu["generator"] = (generator_after - generator_before) / requests * 1e6
    result["cpu_us"] = cpu
    return result


def summarize(runs: list[Result]) -> dict[str, Any]:
    """Medians of one target's rounds of one endpoint; refusals summed."""
    statuses: Counter[str] = Counter()
    for r in runs:
        statuses.update(r["statuses"])
    cpu = {
        group: round(statistics.median(r["cpu_us"].get(group, 0.0) for r in runs), 1)
        for group in GROUPS
    }
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
        "cpu_us_per_request": cpu,
        # What serving one request costs on the machine, the generator left out.
        "serving_cpu_us": round(cpu["server"] + cpu["proxy"] + cpu["postgres"], 1),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "no_answer": sum(r["no_answer"] for r in runs),
        "statuses": dict(sorted(statuses.items())),
    }


# -- the targets ---------------------------------------------------------------------------


def cluster_pids(cluster: ClusterProcess, nodes: int) -> Callable[[], dict[str, list[int]]]:
    proxy_pid = cluster.proxy_pid()
    assert cluster.process is not None
    supervisor = cluster.process.pid

    def pids() -> dict[str, list[int]]:
        return {
            "server": [cluster.node_pid(f"n{n}") for n in range(1, nodes + 1)],
            "proxy": [proxy_pid, supervisor],
        }

    return pids


@contextmanager
def running_trioshop(
    nodes: int, admin_url: str, registry: Path, name: str
) -> Iterator[Target]:
    with scratch_schema(admin_url, "bench") as schema:
        bind = f"127.0.0.1:{free_port()}"
        with running_cluster(
            "--nodes", str(nodes), "--database", schema_url(admin_url, schema),
            "--bind", bind, "--registry", str(registry),
        ) as cluster:
            backends = PostgresBackends(admin_url, schema) if is_local(admin_url) else None
            try:
                yield Target(name, cluster.base_url, cluster_pids(cluster, nodes), backends)
            finally:
                if backends is not None:
                    backends.close()
                cluster.stop()  # cleanly: its PostgreSQL sessions end before the DROP


def peer_python() -> Path:
    """The peer's virtualenv, created and filled from its requirements on first use."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    requirements = PEERS / "requirements.txt"
    if not stamp.exists() or stamp.stat().st_mtime < requirements.stat().st_mtime:
        log(f"installing the peer's requirements into {PEER_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                        str(requirements)], check=True)
        stamp.touch()
    return python


def write_catalog(registry: Path, path: Path) -> None:
    """The peer's catalog: the same products as trioshop's registry, as JSON."""
    products = [
        {"id": p.id, "title": p.title, "sku": p.sku, "price_cents": p.price_cents,
         "stock": p.stock}
        for p in load_registry(registry).products
    ]
    path.write_text(json.dumps(products))


def wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll the peer's /healthz until it answers 200 (it prints nothing at warning level)."""
    deadline = time.monotonic() + PEER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the peer exited with status {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the peer did not answer /healthz within {PEER_START_TIMEOUT:g} s")


@contextmanager
def running_peer(workers: int, admin_url: str, registry: Path, scratch: Path) -> Iterator[Target]:
    python = peer_python()
    catalog = scratch / "catalog.json"
    write_catalog(registry, catalog)
    with scratch_schema(admin_url, "bench") as schema:
        port = free_port()
        env = {
            **os.environ, "PEER_DATABASE_URL": admin_url, "PEER_SCHEMA": schema,
            "PEER_APPLICATION_NAME": schema, "PEER_CATALOG": str(catalog),
        }
        process = subprocess.Popen(
            [str(python), "-m", "uvicorn", "fastapi_carts:app", "--app-dir", str(PEERS),
             "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
             "--no-access-log", "--log-level", "warning"],
            env=env,
        )
        backends = None
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, process)
            backends = PostgresBackends(admin_url, schema) if is_local(admin_url) else None

            def pids() -> dict[str, list[int]]:
                return {"server": [process.pid, *children(process.pid)], "proxy": []}

            yield Target("peer", url, pids, backends)
        finally:
            if backends is not None:
                backends.close()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the run -------------------------------------------------------------------------------


def _line(label: str, result: Result) -> str:
    cpu = result["cpu_us"]
    refused = f"  NON-2XX {result['non_2xx']} {result['statuses']}" if result["non_2xx"] else ""
    if result["no_answer"]:
        refused += f"  no answer {result['no_answer']}"
    return (f"  {label:26s} {result['rps']:7.0f} req/s  p99 {result['p99_ms']:7.2f} ms  CPU us/req"
            + "".join(f" {g} {cpu.get(g, 0.0):5.0f}" for g in GROUPS) + refused)


def rounds(run: Callable[..., Result], targets: list[Target], seconds: float, count: int,
           connections: int) -> dict[str, dict[str, list[Result]]]:
    results: dict[str, dict[str, list[Result]]] = {
        t.name: {e: [] for e in ENDPOINTS} for t in targets
    }
    for number in range(count):
        shift = number % len(targets)
        order = targets[shift:] + targets[:shift]
        endpoints = ENDPOINTS if number % 2 == 0 else ENDPOINTS[::-1]
        for endpoint in endpoints:
            for target in order:
                result = measure_once(run, target, endpoint, seconds, connections)
                results[target.name][endpoint].append(result)
                log(_line(f"round {number + 1} {target.name} {endpoint}", result))
    return results


def verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "no ratio (non-2xx answers)"
    return f"{value:.3f} (goal >= {goal:g}) {'ok' if value >= goal else 'MISS'}"


def report(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Print the tables."""
    print("\nthrough HAProxy (peer: uvicorn directly), medians; CPU us per request by process")
    print(f"  {'endpoint':10s} {'target':8s} {'req/s':>7s} {'p99 ms':>7s} {'non-2xx':>7s} "
          + " ".join(f"{g:>9s}" for g in GROUPS) + f" {'serving':>8s}")
    for endpoint in ENDPOINTS:
        for name, rows in summary.items():
            row = rows[endpoint]
            cpu = row["cpu_us_per_request"]
            print(f"  {endpoint:10s} {name:8s} {row['rps']:7.0f} {row['p99_ms']:7.1f} "
                  f"{row['non_2xx'] + row['no_answer']:7d} "
                  + " ".join(f"{cpu[g]:9.0f}" for g in GROUPS) + f" {row['serving_cpu_us']:8.0f}")
    one, two = summary["1 node"], summary["2 nodes"]
    print("\n2 nodes / 1 node (req/s)")
    for endpoint in ENDPOINTS:
        scale = ratio(two[endpoint], one[endpoint])
        print(f"  {endpoint:10s} {verdict(scale, GOALS_SCALE[endpoint])}")
    if "peer" in summary:
        peer = summary["peer"]
        print("\n2 nodes / peer")
        for endpoint in ENDPOINTS:
            value = ratio(two[endpoint], peer[endpoint])
            shown = "no ratio" if value is None else f"{value:.3f}"
            goal = f" (goal >= {GOAL_PEER_READS:g}) " + (
                "ok" if value is not None and value >= GOAL_PEER_READS else "MISS"
            ) if endpoint == "cart_read" else ""
            p99 = two[endpoint]["p99_ms"] <= peer[endpoint]["p99_ms"]
            print(f"  {endpoint:10s} req/s {shown}{goal}; p99 {two[endpoint]['p99_ms']:.1f} "
                  f"vs {peer[endpoint]['p99_ms']:.1f} ms (goal <=) {'ok' if p99 else 'MISS'}")
    print("\nprojected req/s with N cores for serving (generator elsewhere; 1e6 / serving CPU us "
          "x N, if nothing but CPU limits)")
    for name, rows in summary.items():
        for endpoint in ENDPOINTS:
            serving = rows[endpoint]["serving_cpu_us"]
            if serving:
                print(f"  {name:8s} {endpoint:10s} "
                      + "  ".join(f"{n} cores {n * 1e6 / serving:7.0f}" for n in PROJECTED_CORES))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--database", default=DEFAULT_URL, metavar="URL",
                        help="PostgreSQL the targets share; the bench creates a schema per "
                        "target there and drops it (default: %(default)s)")
    parser.add_argument("--peer-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-peer", action="store_true", help="leave the peer out")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        log("haproxy is not installed: apt-get install haproxy")
        return 2
    generator, run = choose_generator(args.generator)
    log(f"generator: {generator}")
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        registry = ample_stock_registry(scratch / "registry")
        targets = [
            stack.enter_context(running_trioshop(1, args.database, registry, "1 node")),
            stack.enter_context(running_trioshop(2, args.database, registry, "2 nodes")),
        ]
        if not args.skip_peer:
            targets.append(stack.enter_context(
                running_peer(args.peer_workers, args.database, registry, scratch)
            ))
        for target in targets:
            prepare(run, target.url, args.connections)
        log(f"{args.rounds} rounds x {args.seconds:g} s, {args.connections} connections")
        results = rounds(run, targets, args.seconds, args.rounds, args.connections)
    summary = {
        name: {endpoint: summarize(runs) for endpoint, runs in per_endpoint.items()}
        for name, per_endpoint in results.items()
    }
    clean = not any(refusal(r[e]) for r in summary.values() for e in ENDPOINTS)
    if args.json:
        print(json.dumps({"generator": generator, "summary": summary}, indent=2))
    else:
        report(summary)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
