"""Throughput of the actor paths against the stack's floor, and of the stores, in one run.

    python bench/throughput.py                      # wrk if installed, else the Python generator
    python bench/throughput.py --seconds 5 --rounds 3 --connections 32
    python bench/throughput.py --generator python   # force the Python generator
    python bench/throughput.py --skip-postgres      # no PostgreSQL on this machine
    python bench/throughput.py --database postgresql://user@host:5432/db
    python bench/throughput.py --json

Every server runs on a copy of the repository's registry with every stock raised to the
most the registry accepts, so that no round sells out and measures refusals. Every round
counts the answers that are not 2xx (and requests with no answer at all); an endpoint with
any gets no ratio ("refused: N non-2xx answers") and the run exits with status 1, so that a
bench cannot silently compare errors with work.

1. One ``trioshop run --memory`` (extra server flags with --server-arg), measured in
   alternating rounds so that drift on a shared machine hits every endpoint alike:

   - ``floor``     GET /healthz                 (the HTTP stack, no actor)
   - ``products``  GET /api/products            (registry read, no actor)
   - ``cart_read`` GET /api/cart/{user}         (actor request/reply)
   - ``add``       POST /api/cart/{user}/items  (actor request/reply, state change)

   Each endpoint's requests/s, p99, server CPU per request, and its throughput as a ratio
   to the floor (medians over the rounds). Targets: cart_read >= 0.85 x floor,
   add >= 0.75 x floor.

2. A second server with the SQLite store (a temporary --data-dir, fsync on every commit);
   add-to-cart rounds alternate between the two: durable add throughput as a ratio to
   --memory (target >= 0.6).

3. A fresh SQLite server and a PostgreSQL server on a fresh schema ``bench_<random>`` of
   --database (dropped at the end); add and cart_read rounds alternate between them.
   Besides the trioshop process's CPU, the CPU of the PostgreSQL backends serving that
   server (its connections, found in pg_stat_activity by their application_name) is read
   from /proc. Ratios: PostgreSQL / SQLite for add (target >= 0.7) and cart_read.

4. The orders relay to Redis Streams: checkouts/s with it on over off (target >= 0.9), and
   every order placed in the stream at the end (bench/_outbound.py).

5. Tracing: server CPU per request at 1 % and 100 % sampling against tracing off.

    python bench/throughput.py --only relay --only tracing   # parts 4 and 5 alone
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _outbound
from bench._http import Connection, HttpError, tally, timed_workers
from bench.load import ample_stock_registry, percentile
from trioshop.testing.postgres import DEFAULT_URL, scratch_schema, with_schema
from trioshop.testing.redis import DEFAULT_URL as DEFAULT_REDIS
from trioshop.testing.server import ServerProcess, running_server

USERS = 100
TARGETS = {"cart_read": 0.85, "add": 0.75}
DURABLE_TARGET = 0.6
POSTGRES_TARGET = 0.7  # PostgreSQL add / SQLite add
PARTS = ["memory", "postgres", "relay", "tracing"]

# Appended to every endpoint's script: counts the answers by status in each wrk thread and
# prints them (and the exact request count) after wrk's own summary.
LUA_STATUSES = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("bench-status %d %d\n", status, count))
    end
  end
  io.write(string.format("bench-requests %d %d\n", summary.requests, summary.duration))
end
"""

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

Result = dict[str, Any]
Runner = Callable[[str, str, float, int], Result]


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(base_url: str, endpoint: str, seconds: float, connections: int) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA[endpoint] + "\n" + LUA_STATUSES)
    try:
        output = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", script.name, base_url],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    distribution = output.partition("Latency Distribution")[2]
    p99 = _seconds(re.search(r"99%\s+(\S+)", distribution).group(1))  # type: ignore[union-attr]
    statuses: Counter[int] = Counter()
    for status, count in re.findall(r"^bench-status (\d+) (\d+)$", output, re.MULTILINE):
        statuses[int(status)] += int(count)
    counted = re.search(r"^bench-requests (\d+) (\d+)$", output, re.MULTILINE)
    if counted is None:
        raise RuntimeError(f"wrk printed no request count (the Lua hook failed?):\n{output}")
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0
    # wrk's own count (status > 399) can only be lower than ours (anything but 2xx).
    wrk_errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result = tally(statuses, errors, {
        "rps": rps,
        "p99_ms": p99 * 1000,
        "requests": int(counted.group(1)),
        "wall": int(counted.group(2)) / 1e6,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    })
    result["non_2xx"] = max(result["non_2xx"], int(wrk_errors.group(1)) if wrk_errors else 0)
    return result


async def _python_load(base_url: str, endpoint: str, seconds: float, connections: int) -> Result:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()  # 0: no answer
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
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
                statuses[status] += 1
        finally:
            await connection.aclose()

    wall = await timed_workers(worker, connections)
    return tally(statuses, 0, {
        "rps": len(latencies) / wall,
        "p99_ms": percentile(latencies, 99) * 1000,
        "requests": len(latencies),
        "wall": wall,
        "socket_errors": "",
    })


def run_python(base_url: str, endpoint: str, seconds: float, connections: int) -> Result:
    return trio.run(_python_load, base_url, endpoint, seconds, connections)


def choose_generator(choice: str) -> tuple[str, Runner]:
    """The generator --generator names (``auto``: wrk if installed, else Python) and its runner."""
    generator = ("wrk" if shutil.which("wrk") else "python") if choice == "auto" else choice
    return generator, run_wrk if generator == "wrk" else run_python


async def seed_carts(base_url: str) -> None:
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


def prepare(run: Runner, url: str, connections: int, warm_up: str = "cart_read") -> None:
    """Seed the bench users' carts on the server at *url*, then warm it up (pools, caches)
    with one second of *warm_up*."""
    trio.run(seed_carts, url)
    run(url, warm_up, 1.0, connections)


# -- CPU ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process *pid* has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_local(url: str) -> bool:
    """Whether the database of *url* runs on this machine (its backends are in our /proc)."""
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(url).get("host") or "")
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


class PostgresBackends:
    """The PostgreSQL backends of one trioshop server, found by their ``application_name``.

    Their CPU is read from /proc, so PostgreSQL must run on this machine (see
    :func:`is_local`); a pid whose /proc entry is not a ``postgres`` process is skipped.
    /proc/<pid>/stat is world-readable unless /proc is mounted with ``hidepid``; root reads it
    anyway. A backend that appears during a round counts from zero; one that ends during a
    round is reported as lost.
    """

    def __init__(self, admin_url: str, application_name: str) -> None:
        import psycopg

        self.application_name = application_name
        self._conn = psycopg.connect(admin_url, autocommit=True)
        self.lost = 0

    def pids(self) -> list[int]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (self.application_name,),
        ).fetchall()
        return [row[0] for row in rows]

    def snapshot(self) -> dict[int, float]:
        found = {}
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it just ended
                if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                    found[pid] = cpu_seconds(pid)
        return found

    def used_since(self, before: dict[int, float]) -> tuple[float, int]:
        """CPU seconds used since *before*, and how many backends served (at the end)."""
        after = self.snapshot()
        self.lost += len(set(before) - set(after))
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()), len(after)

    def close(self) -> None:
        self._conn.close()


# -- rounds -------------------------------------------------------------------------------


def _line(label: str, result: Result) -> str:
    refused = ""
    if result["non_2xx"] or result["no_answer"]:
        refused = f"  NON-2XX {result['non_2xx']} {result['statuses']}"
        if result["no_answer"]:
            refused += f" no answer {result['no_answer']} {result['socket_errors']}"
    pg = f" + {result['pg_cpu_us']:5.0f} PG" if "pg_cpu_us" in result else ""
    return (f"  {label:22s} {result['rps']:7.0f} req/s  p99 {result['p99_ms']:7.2f} ms  "
            f"{result['cpu_us']:5.0f}{pg} us CPU/req{refused}")


def measure_once(
    run: Runner, url: str, endpoint: str, seconds: float, connections: int, pid: int,
    backends: PostgresBackends | None = None,
) -> Result:
    """One round against one server, with its CPU (and its PostgreSQL backends') per request."""
    pg_before = backends.snapshot() if backends else {}
    cpu_before = cpu_seconds(pid)
    result = run(url, endpoint, seconds, connections)
    requests = max(1, result["requests"])
    # Server CPU per request: less sensitive than req/s to other load on a shared machine.
    result["cpu_us"] = (cpu_seconds(pid) - cpu_before) / requests * 1e6
    if backends is not None:
        used, count = backends.used_since(pg_before)
        result["pg_cpu_us"] = used / requests * 1e6
        result["pg_backends"] = count
    return result


def measure(
    run: Runner, base_url: str, seconds: float, rounds: int, connections: int,
    endpoints: list[str], server_pid: int,
) -> dict[str, list[Result]]:
    prepare(run, base_url, connections, warm_up="floor")
    results: dict[str, list[Result]] = {e: [] for e in endpoints}
    for round_number in range(rounds):
        # Rotate the order every round so no endpoint always runs first or last.
        shift = round_number % len(endpoints)
        for endpoint in endpoints[shift:] + endpoints[:shift]:
            result = measure_once(run, base_url, endpoint, seconds, connections, server_pid)
            results[endpoint].append(result)
            print(_line(f"round {round_number + 1} {endpoint}", result), file=sys.stderr)
    return results


class Target:
    """A running server one A/B comparison measures: its name, URL, process, PG backends."""

    def __init__(
        self, name: str, server: ServerProcess, backends: PostgresBackends | None = None
    ) -> None:
        assert server.process is not None
        self.name = name
        self.url = server.base_url
        self.pid = server.process.pid
        self.backends = backends


def alternate(
    run: Runner, targets: list[Target], endpoints: list[str], seconds: float, rounds: int,
    connections: int,
) -> dict[str, dict[str, list[Result]]]:
    """Rounds of each endpoint on each target, the order of both alternating every round."""
    results: dict[str, dict[str, list[Result]]] = {
        t.name: {e: [] for e in endpoints} for t in targets
    }
    for round_number in range(rounds):
        shift = round_number % len(endpoints)
        order = targets if round_number % 2 == 0 else targets[::-1]
        for endpoint in endpoints[shift:] + endpoints[:shift]:
            for target in order:
                result = measure_once(run, target.url, endpoint, seconds, connections,
                                      target.pid, target.backends)
                results[target.name][endpoint].append(result)
                print(_line(f"round {round_number + 1} {target.name} {endpoint}", result),
                      file=sys.stderr)
    return results


# -- summaries ----------------------------------------------------------------------------


def _row(runs: list[Result]) -> dict[str, Any]:
    """Medians of one endpoint's rounds on one server, and every refusal summed."""
    statuses: Counter[str] = Counter()
    for r in runs:
        statuses.update(r["statuses"])
    row = {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
        "cpu_us_per_request": round(statistics.median(r["cpu_us"] for r in runs), 1),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "no_answer": sum(r["no_answer"] for r in runs),
        "statuses": dict(sorted(statuses.items())),
    }
    if all("pg_cpu_us" in r for r in runs):
        row["pg_cpu_us_per_request"] = round(statistics.median(r["pg_cpu_us"] for r in runs), 1)
        row["total_cpu_us_per_request"] = round(
            statistics.median(r["cpu_us"] + r["pg_cpu_us"] for r in runs), 1
        )
        row["pg_backends"] = max(r["pg_backends"] for r in runs)
    return row


def refusal(*rows: dict[str, Any]) -> str | None:
    """``refused: N non-2xx answers`` when any of *rows* had one (or a request unanswered)."""
    non_2xx = sum(r["non_2xx"] for r in rows)
    no_answer = sum(r["no_answer"] for r in rows)
    if not non_2xx and not no_answer:
        return None
    return f"refused: {non_2xx} non-2xx answers" + (
        f", {no_answer} requests without an answer" if no_answer else ""
    )


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float | None:
    """req/s of *numerator* over *denominator*; ``None`` when either counted a refusal."""
    if refusal(numerator, denominator):
        return None
    return round(numerator["rps"] / denominator["rps"], 3)


def summarize(results: dict[str, list[Result]], floor: str = "floor") -> dict[str, Any]:
    rows = {endpoint: _row(runs) for endpoint, runs in results.items()}
    base = rows[floor]
    for endpoint, row in rows.items():
        row["target"] = TARGETS.get(endpoint)
        row["refused"] = refusal(row, base)
        row["ratio_to_floor"] = ratio(row, base)
        row["cpu_ratio_to_floor"] = (
            None if row["refused"]
            else round(base["cpu_us_per_request"] / row["cpu_us_per_request"], 3)
        )
    return rows


def summarize_pair(
    results: dict[str, dict[str, list[Result]]], numerator: str, denominator: str,
    targets: dict[str, float],
) -> dict[str, Any]:
    """Per endpoint: each server's row and *numerator* / *denominator* in req/s."""
    summary: dict[str, Any] = {}
    for endpoint in results[numerator]:
        top = _row(results[numerator][endpoint])
        bottom = _row(results[denominator][endpoint])
        summary[endpoint] = {
            numerator: top, denominator: bottom,
            "ratio": ratio(top, bottom), "refused": refusal(top, bottom),
            "target": targets.get(endpoint),
        }
    return summary


def _verdict(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return ""
    return "ok" if value >= target else "MISS"


def print_table(summary: dict[str, Any], title: str) -> None:
    print(f"\n{title}")
    print(f"  {'endpoint':10s} {'req/s':>7s} {'p99 ms':>7s} {'CPU us/req':>10s} {'non-2xx':>7s}"
          f"  {'x floor':>7s} {'x floor CPU':>11s} {'target':>6s}")
    for endpoint, row in summary.items():
        target = row["target"]
        if row["refused"]:
            compared = f"{row['refused']} {row['statuses']}"
        else:
            compared = (f"{row['ratio_to_floor']:7.3f} {row['cpu_ratio_to_floor']:11.3f} "
                        f"{'' if target is None else f'>={target}':>6s} "
                        f"{_verdict(row['ratio_to_floor'], target)}")
        print(f"  {endpoint:10s} {row['rps']:7.0f} {row['p99_ms']:7.2f} "
              f"{row['cpu_us_per_request']:10.0f} {row['non_2xx'] + row['no_answer']:7d}  "
              f"{compared}")
    print("  x floor: req/s relative to the floor; x floor CPU: floor CPU/request divided by "
          "this endpoint's (the same ratio, less sensitive to the machine's noise)")


def print_pair(summary: dict[str, Any], title: str, numerator: str, denominator: str) -> None:
    print(f"\n{title}")
    print(f"  {'endpoint':10s} {'server':9s} {'req/s':>7s} {'p99 ms':>7s} {'non-2xx':>7s} "
          f"{'CPU us/req':>10s} {'PG CPU':>7s} {'total':>7s}")
    for endpoint, pair in summary.items():
        for name in (denominator, numerator):
            row = pair[name]
            pg = row.get("pg_cpu_us_per_request")
            total = row.get("total_cpu_us_per_request", row["cpu_us_per_request"])
            print(f"  {endpoint:10s} {name:9s} {row['rps']:7.0f} {row['p99_ms']:7.2f} "
                  f"{row['non_2xx'] + row['no_answer']:7d} {row['cpu_us_per_request']:10.0f} "
                  f"{'' if pg is None else f'{pg:.0f}':>7s} {total:7.0f}")
        target = pair["target"]
        if pair["refused"]:
            statuses = {n: pair[n]["statuses"] for n in (numerator, denominator)}
            print(f"  {endpoint:10s} {numerator} / {denominator}: {pair['refused']} {statuses}")
        else:
            goal = "" if target is None else f" (target >= {target})"
            goal += f" {_verdict(pair['ratio'], target)}"
            print(f"  {endpoint:10s} {numerator} / {denominator}: {pair['ratio']:.3f}{goal}")


# -- servers ------------------------------------------------------------------------------

_PROBLEM = re.compile(r"level=(warning|error|critical)|Traceback|status=5\d\d ")
_ACCESS_STATUS = re.compile(r"event=request .*?status=(\d+)")


def server_log_report(name: str, server: ServerProcess) -> dict[str, Any]:
    """Answers by status from the server's access log, and its warnings, errors, 5xx."""
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    for line in server.output().splitlines():
        if match := _ACCESS_STATUS.search(line):
            statuses[match.group(1)] += 1
        if _PROBLEM.search(line):
            problems.append(line)
    exit_code = server.process.returncode if server.process else None
    return {"server": name, "access_statuses": dict(sorted(statuses.items())),
            "problems": len(problems), "first_problems": problems[:5], "exit_code": exit_code}


def print_logs(reports: list[dict[str, Any]]) -> None:
    print("\nserver logs (answers by status from each access log; warnings, errors, 5xx)")
    for report in reports:
        print(f"  {report['server']:9s} exit {report['exit_code']}  "
              f"statuses {report['access_statuses']}  problems {report['problems']}")
        for line in report["first_problems"]:
            print(f"    {line[:300]}")


@contextmanager
def stopped_at_exit(server: ServerProcess, name: str, logs: list[dict[str, Any]]) -> Iterator[None]:
    """Stop *server* (SIGTERM) on leaving, and keep the report on its log."""
    try:
        yield
    finally:
        if server.process is not None and server.process.poll() is None:
            code = server.stop()
            if code != 0:
                print(f"  {name} server did not stop cleanly: exit {code}", file=sys.stderr)
        logs.append(server_log_report(name, server))


def schema_url(url: str, schema: str) -> str:
    """*url* with the search_path set to *schema* and its connections named after it."""
    return f"{with_schema(url, schema)}&application_name={schema}"


def measure_memory_and_sqlite(
    run: Runner, server_args: list[str], scratch: Path, args: argparse.Namespace,
    logs: list[dict[str, Any]],
) -> tuple[dict[str, list[Result]], dict[str, dict[str, list[Result]]]]:
    """Parts 1 and 2: every endpoint against the floor, then --memory against SQLite adds."""
    with ExitStack() as stack:
        memory = stack.enter_context(running_server(*server_args, "--memory"))
        stack.enter_context(stopped_at_exit(memory, "memory", logs))
        durable = stack.enter_context(
            running_server(*server_args, "--data-dir", str(scratch / "durable"))
        )
        stack.enter_context(stopped_at_exit(durable, "sqlite", logs))
        assert memory.process is not None
        print("1. endpoints against the floor (--memory)", file=sys.stderr)
        results = measure(run, memory.base_url, args.seconds, args.rounds,
                          args.connections, ENDPOINTS, memory.process.pid)
        print("2. add: --memory against SQLite", file=sys.stderr)
        trio.run(seed_carts, durable.base_url)
        durability = alternate(run, [Target("memory", memory), Target("sqlite", durable)],
                               ["add"], args.seconds, args.rounds, args.connections)
    return results, durability


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (medians reported)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for every server (repeatable)")
    parser.add_argument("--database", default=DEFAULT_URL, metavar="URL",
                        help="PostgreSQL to compare with SQLite; the bench creates a schema "
                        "there and drops it (default: %(default)s)")
    parser.add_argument("--skip-postgres", action="store_true",
                        help="leave out the PostgreSQL against SQLite comparison")
    parser.add_argument("--only-postgres", action="store_true",
                        help="run only the PostgreSQL against SQLite comparison (part 3)")
    parser.add_argument("--only", action="append", default=[], choices=PARTS,
                        help="run only this part (repeatable): memory (1 and 2), postgres (3), "
                        "relay (4), tracing (5)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, metavar="URL",
                        help="Redis for the relay's part; the bench adds a stream and deletes "
                        "it (default: %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.only_postgres:
        args.only.append("postgres")
    parts = set(args.only or PARTS) - ({"postgres"} if args.skip_postgres else set())
    if not parts:
        parser.error("--only postgres and --skip-postgres leave nothing to run")
    generator, run = choose_generator(args.generator)
    print(f"generator: {generator}"
          + ("" if generator == "wrk" else " (install Debian's wrk for a lighter generator)"),
          file=sys.stderr)
    logs: list[dict[str, Any]] = []
    postgres: dict[str, Any] | None = None
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        registry = ample_stock_registry(scratch / "registry")
        server_args = ["--registry", str(registry), *args.server_arg]
        schema = None
        if "postgres" in parts:
            try:  # before any measurement: no PostgreSQL should fail at once, not at the end
                schema = stack.enter_context(scratch_schema(args.database, "bench"))
            except Exception as exc:
                print(f"cannot create a schema on {args.database}: {exc}\n"
                      "pass --database URL, or --skip-postgres", file=sys.stderr)
                return 2

        results: dict[str, list[Result]] = {}
        durability: dict[str, dict[str, list[Result]]] = {}
        if "memory" in parts:
            results, durability = measure_memory_and_sqlite(
                run, server_args, scratch, args, logs
            )

        if schema is not None:
            url = schema_url(args.database, schema)
            sqlite = stack.enter_context(
                running_server(*server_args, "--data-dir", str(scratch / "sqlite"))
            )
            stack.enter_context(stopped_at_exit(sqlite, "sqlite-2", logs))
            pg = stack.enter_context(running_server(*server_args, "--database", url))
            stack.enter_context(stopped_at_exit(pg, "postgres", logs))
            backends = None
            if is_local(args.database):
                backends = PostgresBackends(args.database, schema)
                stack.callback(backends.close)
            else:
                print("PG CPU not measured: the database is not on this machine", file=sys.stderr)
            print(f"3. SQLite against PostgreSQL (schema {schema})", file=sys.stderr)
            for server in (sqlite, pg):
                prepare(run, server.base_url, args.connections)
            targets = [Target("sqlite", sqlite), Target("postgres", pg, backends)]
            postgres = {
                "schema": schema,
                "results": alternate(run, targets, ["add", "cart_read"], args.seconds,
                                     args.rounds, args.connections),
                "lost_backends": backends.lost if backends else 0,
            }
        relay = (_outbound.measure_relay(server_args, scratch, args, logs)
                 if "relay" in parts else None)
        tracing = (_outbound.measure_tracing(server_args, scratch, args, logs)
                   if "tracing" in parts else None)

    summary = summarize(results) if results else {}
    durable_summary = (
        summarize_pair(durability, "sqlite", "memory", {"add": DURABLE_TARGET})
        if durability else {}
    )
    pg_summary = (
        summarize_pair(postgres["results"], "postgres", "sqlite", {"add": POSTGRES_TARGET})
        if postgres else None
    )
    pairs = [durable_summary, pg_summary or {}, relay["summary"] if relay else {},
             *(tracing or {}).values()]
    refused = [row["refused"] for row in summary.values()] + [
        pair["refused"] for part in pairs for pair in part.values()
    ]
    clean = not any(refused) and (relay is None or relay["published"] >= relay["placed"])
    if args.json:
        print(json.dumps({
            "generator": generator, "connections": args.connections, "rounds": args.rounds,
            "seconds": args.seconds, "endpoints": summary, "durability": durable_summary,
            "postgres": pg_summary, "relay": relay, "tracing": tracing,
            "server_logs": logs, "clean": clean,
        }, indent=2))
    else:
        if "memory" in parts:
            print_table(summary, f"1. throughput ({generator}, {args.connections} connections, "
                        f"{args.rounds} rounds x {args.seconds:g} s, medians, --memory)")
            print_pair(durable_summary, "2. add to cart: SQLite (fsync per commit) vs --memory",
                       "sqlite", "memory")
        if pg_summary is not None and postgres is not None:
            print_pair(pg_summary, "3. PostgreSQL vs SQLite (PG CPU: the server's own "
                       "backends in pg_stat_activity, from /proc)", "postgres", "sqlite")
            if postgres["lost_backends"]:
                print(f"  {postgres['lost_backends']} backends ended during a round: "
                      "their CPU is missing from PG CPU")
        elif "memory" in parts:
            print("\n3. PostgreSQL vs SQLite: skipped (--skip-postgres)")
        if relay is not None:
            _outbound.print_relay(relay)
        if tracing is not None:
            _outbound.print_tracing(tracing)
        print_logs(logs)
        if any(refused):
            print("\nsome answers were not 2xx: no ratio was reported for those endpoints")
        if relay is not None and relay["published"] < relay["placed"]:
            print("\nthe stream misses orders the relay server placed: the relay lost some")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
